// The real entry points as child processes: `npm start` (main.ts) and the admin CLI (bin/ar-admin.mjs, which
// works from any directory), for tests of what an operator sees.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.ts';

export { freePort };

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CLI = fileURLToPath(new URL('../../bin/ar-admin.mjs', import.meta.url));

export interface ServerProcess {
  child: ChildProcess;
  httpUrl: string;
  /** Everything it printed so far. */
  output(): string;
  /** Polls /healthz until it answers 200; fails if the process exits first. */
  ready(ms?: number): Promise<void>;
  /** SIGTERM and wait; resolves to the exit code. */
  stop(): Promise<number | null>;
}

export async function startServer(env: Record<string, string>): Promise<ServerProcess> {
  const [http, broker] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, ['--import', 'tsx', 'main.ts'], {
    cwd: REPO,
    // Its own ports, the metrics listener's included: tests run side by side.
    env: {
      ...process.env,
      HTTP_PORT: String(http),
      BROKER_PORT: String(broker),
      METRICS_PORT: String(await freePort()),
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const httpUrl = `http://127.0.0.1:${http}`;
  return {
    child,
    httpUrl,
    output: () => output,
    async ready(ms = 90_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}:\n${output}`);
        try {
          if ((await fetch(`${httpUrl}/healthz`)).ok) return;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error(`no answer from ${httpUrl} within ${ms} ms:\n${output}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the admin CLI to completion, optionally from another directory and with standard input. */
export function runCli(
  args: string[],
  env: Record<string, string>,
  opts: { cwd?: string; stdin?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: opts.cwd ?? REPO, env: { ...process.env, LOG_LEVEL: 'silent', ...env } },
      (err, stdout, stderr) => {
        const code = err ? Number((err as { code?: number }).code ?? 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin!.end(opts.stdin ?? '');
  });
}
