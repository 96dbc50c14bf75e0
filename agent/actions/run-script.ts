// `run`: a library script executed with python3 at the agent's privilege. The script talks back to the agent
// through the `active_response` helper module over a Unix socket (JSON lines) that exists only while that
// script runs, so a helper call is always tied to the delivery that started it.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PYTHON_DIR = fileURLToPath(new URL('../python', import.meta.url));

export interface RunLimits {
  timeoutMs: number;
  maxOutputBytes: number;
  /** The script's working directory (a sandboxed agent's sandbox); default a fresh temporary directory. */
  workDir?: string;
}

export type HelperCall = (op: string, args: Record<string, unknown>) => Promise<Record<string, unknown>>;

function capture(max: number) {
  const parts: Buffer[] = [];
  let size = 0;
  let truncated = false;
  return {
    push(b: Buffer) {
      if (size >= max) {
        truncated = true;
        return;
      }
      const take = b.subarray(0, max - size);
      if (take.length < b.length) truncated = true;
      parts.push(take);
      size += take.length;
    },
    text: () => Buffer.concat(parts).toString('utf8'),
    get truncated() {
      return truncated;
    },
  };
}

export async function runScript(
  script: { name: string; sha256: string; body: string },
  params: Record<string, unknown>,
  limits: RunLimits,
  helper: HelperCall,
) {
  const actual = createHash('sha256').update(script.body, 'utf8').digest('hex');
  if (actual !== script.sha256) {
    throw new Error(
      `the script bytes do not match the approved SHA-256 (${script.sha256.slice(0, 12)}…); not run`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'ar-run-'));
  const sockPath = join(dir, `h-${randomBytes(4).toString('hex')}.sock`);
  const file = join(dir, 'script.py');
  writeFileSync(file, script.body, { mode: 0o600 });

  const server = createServer((sock: Socket) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.length > 1024 * 1024) return sock.destroy();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        let req: { id?: unknown; op?: unknown; args?: unknown };
        try {
          req = JSON.parse(line);
        } catch {
          sock.write(`${JSON.stringify({ ok: false, error: 'not JSON' })}\n`);
          continue;
        }
        const args = req.args && typeof req.args === 'object' ? (req.args as Record<string, unknown>) : {};
        helper(String(req.op), args).then(
          (r) => sock.write(`${JSON.stringify({ id: req.id, ok: true, result: r })}\n`),
          (e) => sock.write(`${JSON.stringify({ id: req.id, ok: false, error: (e as Error).message })}\n`),
        );
      }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(sockPath, r));

  const started = Date.now();
  const stdout = capture(limits.maxOutputBytes);
  const stderr = capture(limits.maxOutputBytes);
  try {
    const outcome = await new Promise<{ code: number | null; signal: string | null; timedOut: boolean }>(
      (resolve, reject) => {
        const child = spawn('python3', [file], {
          cwd: limits.workDir ?? dir,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
          env: {
            ...process.env,
            PYTHONPATH: [PYTHON_DIR, process.env.PYTHONPATH].filter(Boolean).join(':'),
            PYTHONUNBUFFERED: '1',
            AR_HELPER_SOCKET: sockPath,
            AR_PARAMS: JSON.stringify(params),
            AR_SCRIPT_NAME: script.name,
          },
        });
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          // The whole process group, so children the script started die with it.
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            child.kill('SIGKILL');
          }
        }, limits.timeoutMs);
        child.stdout.on('data', (b: Buffer) => stdout.push(b));
        child.stderr.on('data', (b: Buffer) => stderr.push(b));
        child.on('error', (e) => {
          clearTimeout(timer);
          reject(new Error(`python3 could not start: ${e.message}`));
        });
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, timedOut });
        });
      },
    );
    return {
      ok: outcome.code === 0 && !outcome.timedOut,
      result: {
        exitCode: outcome.code,
        signal: outcome.signal,
        timedOut: outcome.timedOut,
        durationMs: Date.now() - started,
        stdout: stdout.text(),
        stderr: stderr.text(),
        stdoutTruncated: stdout.truncated,
        stderrTruncated: stderr.truncated,
      },
      error: outcome.timedOut
        ? `the script ran longer than ${Math.round(limits.timeoutMs / 1000)} s and was killed`
        : outcome.code !== 0
          ? `the script exited with ${outcome.code ?? outcome.signal}`
          : undefined,
    };
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
