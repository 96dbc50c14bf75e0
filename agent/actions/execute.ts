// Runs one delivery's action and turns it into the result the broker records. Every failure becomes a
// result with a readable error; nothing here throws past the caller.
import { lookup } from 'node:dns/promises';
import type { AgentState } from '../agent-state.ts';
import type { ActionOutcome } from '../journal.ts';
import type { Link } from '../link.ts';
import { downloadFile, uploadFile } from '../transfers.ts';
import { type Allow, IsolationUnsupported, setIsolation } from './isolation.ts';
import { checkReadable, checkWritable } from './path-checks.ts';
import { killProcesses, listProcesses } from './processes.ts';
import { runScript } from './run-script.ts';

export interface AgentOptions {
  os: 'windows' | 'linux' | 'macos';
  dryRun: boolean;
  allowedRoot?: string;
  maxFileBytes: number;
  uploadBytesPerSecond?: number;
  runTimeoutMs: number;
  maxOutputBytes: number;
}

export interface ExecContext {
  deliveryId: string;
  link: () => Link | undefined;
  options: AgentOptions;
  state: AgentState;
  brokerUrl: string;
  log: (msg: string, extra?: object) => void;
}

const str = (v: unknown) => (typeof v === 'string' && v.length > 0 ? v : undefined);

function liveLink(ctx: ExecContext): Link {
  const l = ctx.link();
  if (!l?.isOpen()) throw new Error('not connected to the broker');
  return l;
}

/** The broker's addresses that must stay reachable while isolated: the one we are connected to, and DNS. */
async function brokerAllowList(ctx: ExecContext): Promise<Allow[]> {
  const url = new URL(ctx.brokerUrl);
  const port = Number(url.port || 443);
  const out = new Map<string, Allow>();
  const remote = ctx.link()?.remote.address.replace(/^::ffff:/, '');
  if (remote) out.set(remote, { address: remote, port });
  const host = url.hostname.replace(/^\[|\]$/g, '');
  for (const a of await lookup(host, { all: true }).catch(() => []))
    out.set(a.address, { address: a.address, port });
  return [...out.values()];
}

/** `keep` adds addresses remembered from before a restart, when there is no live connection to ask. */
export async function applyIsolation(ctx: ExecContext, isolate: boolean, keep: Allow[] = []) {
  const found = isolate ? await brokerAllowList(ctx) : [];
  const allow = [...new Map([...keep, ...found].map((a) => [`${a.address}|${a.port}`, a])).values()];
  if (isolate && !allow.length)
    throw new Error('cannot work out the broker address; refusing to isolate and lose it');
  const done = setIsolation(isolate, allow, {
    os: ctx.options.os,
    dryRun: ctx.options.dryRun,
    stateDir: ctx.state.dir,
    log: ctx.log,
  });
  ctx.state.saveIsolation({ isolated: isolate, allow, changedAt: new Date().toISOString() });
  return { isolated: isolate, ...done };
}

export async function helperCall(ctx: ExecContext, op: string, args: Record<string, unknown>) {
  switch (op) {
    case 'upload': {
      const { real, size } = await checkReadable(String(args.path ?? ''), ctx.options.allowedRoot);
      if (size > ctx.options.maxFileBytes)
        throw new Error(`the file is ${size} bytes; the limit is ${ctx.options.maxFileBytes}`);
      return {
        ...(await uploadFile(liveLink(ctx), {
          deliveryId: ctx.deliveryId,
          path: real,
          size,
          name: str(args.name),
          bytesPerSecond: ctx.options.uploadBytesPerSecond,
        })),
      };
    }
    case 'download': {
      const dest = await checkWritable(String(args.dest ?? ''), ctx.options.allowedRoot);
      return downloadFile(liveLink(ctx), {
        deliveryId: ctx.deliveryId,
        ref: String(args.ref ?? ''),
        dest,
        maxBytes: ctx.options.maxFileBytes,
      });
    }
    case 'isolate':
      return applyIsolation(ctx, true);
    case 'unisolate':
      return applyIsolation(ctx, false);
    case 'progress':
      ctx
        .link()
        ?.send({ type: 'progress', id: ctx.deliveryId, message: String(args.message ?? '').slice(0, 4000) });
      return {};
    default:
      throw new Error(`unknown helper operation "${op}"`);
  }
}

export async function execute(
  action: string,
  payload: Record<string, unknown>,
  ctx: ExecContext,
): Promise<ActionOutcome> {
  const params = (payload.params && typeof payload.params === 'object' ? payload.params : {}) as Record<
    string,
    unknown
  >;
  try {
    switch (action) {
      case 'isolate':
      case 'unisolate':
        return { ok: true, result: await applyIsolation(ctx, action === 'isolate') };
      case 'processes':
        return { ok: true, result: { processes: listProcesses() } };
      case 'kill': {
        const raw = params.pid ?? params.target ?? params.process ?? params.name;
        const pid =
          typeof raw === 'number' || (typeof raw === 'string' && /^\d+$/.test(raw)) ? Number(raw) : undefined;
        const name = pid === undefined ? str(raw) : undefined;
        if (pid === undefined && !name) return { ok: false, error: 'kill needs a pid or a process name' };
        const r = killProcesses({ pid, name });
        if (!r.matched) return { ok: false, result: r, error: `no process matches ${pid ?? `"${name}"`}` };
        return {
          ok: r.killed.length > 0,
          result: r,
          error: r.killed.length ? undefined : 'nothing could be killed',
        };
      }
      case 'fetch': {
        const path = str(params.path);
        if (!path) return { ok: false, error: 'fetch needs a path' };
        const { real, size } = await checkReadable(path, ctx.options.allowedRoot);
        if (size > ctx.options.maxFileBytes)
          return { ok: false, error: `the file is ${size} bytes; the limit is ${ctx.options.maxFileBytes}` };
        const up = await uploadFile(liveLink(ctx), {
          deliveryId: ctx.deliveryId,
          path: real,
          size,
          bytesPerSecond: ctx.options.uploadBytesPerSecond,
        });
        return { ok: true, result: { ...up, path, name: real.split(/[\\/]/).pop() } };
      }
      case 'put': {
        const ref = str(params.file) ?? str(params.fileRef) ?? str(params.ref) ?? str(params.sha256);
        const destRaw = str(params.path) ?? str(params.dest) ?? str(params.destPath);
        if (!ref || !destRaw) return { ok: false, error: 'put needs a library file and a destination path' };
        const dest = await checkWritable(destRaw, ctx.options.allowedRoot);
        const got = await downloadFile(liveLink(ctx), {
          deliveryId: ctx.deliveryId,
          ref,
          dest,
          maxBytes: ctx.options.maxFileBytes,
        });
        return { ok: true, result: got };
      }
      case 'run': {
        const s = payload.script as { name?: unknown; sha256?: unknown; body?: unknown } | undefined;
        if (!s || typeof s.body !== 'string' || typeof s.sha256 !== 'string')
          return { ok: false, error: 'run needs a script' };
        const timeoutSeconds =
          typeof payload.timeoutSeconds === 'number' ? payload.timeoutSeconds : undefined;
        return await runScript(
          { name: String(s.name ?? 'script'), sha256: s.sha256, body: s.body },
          params,
          {
            timeoutMs: timeoutSeconds
              ? Math.min(timeoutSeconds * 1000, ctx.options.runTimeoutMs)
              : ctx.options.runTimeoutMs,
            maxOutputBytes: ctx.options.maxOutputBytes,
          },
          (op, args) => helperCall(ctx, op, args),
        );
      }
      default:
        return { ok: false, error: `this agent does not support the action "${action}"` };
    }
  } catch (e) {
    const unsupported = e instanceof IsolationUnsupported;
    return {
      ok: false,
      error: (e as Error).message,
      result: unsupported ? { unsupported: true } : undefined,
    };
  }
}
