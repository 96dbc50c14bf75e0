// Runs one delivery's action and turns it into the result the broker records. Every failure becomes a
// result with a readable error; nothing here throws past the caller.
import { lookup } from 'node:dns/promises';
import { type ParsedDelivery, parseDelivery } from '../../protocol/actions.ts';
import type { AgentState } from '../agent-state.ts';
import type { ActionOutcome, ScriptRecord } from '../journal.ts';
import type { Link } from '../link.ts';
import { downloadFile, uploadFile } from '../transfers.ts';
import { type Allow, IsolationUnsupported, setIsolation } from './isolation.ts';
import { checkReadable, checkWritable } from './path-checks.ts';
import { killProcesses, listProcesses } from './processes.ts';
import { runScript } from './run-script.ts';

export interface AgentOptions {
  os: 'windows' | 'linux' | 'macos';
  /** Isolation is simulated (logged, never applied). */
  dryRun: boolean;
  /** Paths for fetch, put and the script helper must resolve inside this directory. */
  allowedRoot?: string;
  /**
   * A directory the agent acts inside and nowhere else: paths must resolve inside it, scripts run in it, and
   * only processes whose working directory is inside it can be listed or killed. Dry-run agents always
   * have one, so a demo changes nothing outside its own directory.
   */
  sandbox?: string;
  maxFileBytes: number;
  uploadBytesPerSecond?: number;
  runTimeoutMs: number;
  maxOutputBytes: number;
}

export interface ExecContext {
  deliveryId: string;
  /** The delivery's journal entry, for actions that record more in it before they act (a script's process). */
  journal?: {
    startedAt: string;
    /** Durable, or throws: a script's runner is not told to start it unless this succeeded. */
    recordScript(rec: ScriptRecord): Promise<void>;
  };
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
      const { real, size } = await checkReadable(String(args.path ?? ''), rootOf(ctx.options));
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
      const dest = await checkWritable(String(args.dest ?? ''), rootOf(ctx.options));
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
    case 'isolation': {
      const s = ctx.state.isolation();
      return { isolated: s.isolated, changedAt: s.changedAt || null, dryRun: ctx.options.dryRun };
    }
    case 'processes':
      return listProcesses({ sandbox: ctx.options.sandbox, match: str(args.match) });
    case 'progress':
      ctx
        .link()
        ?.send({ type: 'progress', id: ctx.deliveryId, message: String(args.message ?? '').slice(0, 4000) });
      return {};
    default:
      throw new Error(`unknown helper operation "${op}"`);
  }
}

/** The directory paths must stay inside: the sandbox when there is one, else the configured root. */
const rootOf = (o: AgentOptions) => o.sandbox ?? o.allowedRoot;

/** Runs one parsed delivery. Its parameters were checked against the catalogue, so they are typed here. */
async function run(d: ParsedDelivery, ctx: ExecContext): Promise<ActionOutcome> {
  const o = ctx.options;
  switch (d.action) {
    case 'isolate':
    case 'unisolate':
      return { ok: true, result: await applyIsolation(ctx, d.action === 'isolate') };
    case 'processes':
      return { ok: true, result: listProcesses({ sandbox: o.sandbox, match: d.params.match }) };
    case 'kill': {
      const target = 'pid' in d.params ? { pid: d.params.pid } : { name: d.params.processName };
      const r = killProcesses(target, { sandbox: o.sandbox });
      const what = target.pid ?? `"${target.name}"`;
      if (!r.matched) {
        const scope = o.sandbox ? ' among the processes this sandboxed agent may touch' : '';
        return { ok: false, result: r, error: `no process matches ${what}${scope}` };
      }
      return {
        ok: r.killed.length > 0,
        result: r,
        error: r.killed.length ? undefined : 'nothing could be killed',
      };
    }
    case 'fetch': {
      const { real, size } = await checkReadable(d.params.path, rootOf(o));
      if (size > o.maxFileBytes)
        return { ok: false, error: `the file is ${size} bytes; the limit is ${o.maxFileBytes}` };
      const up = await uploadFile(liveLink(ctx), {
        deliveryId: ctx.deliveryId,
        path: real,
        size,
        bytesPerSecond: o.uploadBytesPerSecond,
      });
      return { ok: true, result: { ...up, path: d.params.path, name: real.split(/[\\/]/).pop() } };
    }
    case 'put': {
      const dest = await checkWritable(d.params.destPath, rootOf(o));
      // Asked for by id and kept only if the bytes hash to the SHA-256 the approvers saw.
      const got = await downloadFile(liveLink(ctx), {
        deliveryId: ctx.deliveryId,
        ref: d.params.file.id,
        expectSha256: d.params.file.sha256,
        dest,
        maxBytes: o.maxFileBytes,
      });
      return { ok: true, result: got };
    }
    case 'run': {
      const journal = ctx.journal;
      if (!journal) throw new Error('a script runs only for a delivery in the journal');
      return runScript(
        { name: d.params.script.name, sha256: d.params.script.sha256, body: d.payload.scriptBody ?? '' },
        d.params.args,
        {
          timeoutMs: Math.min(d.params.timeoutSeconds * 1000, o.runTimeoutMs),
          // The script version's cap, within the agent's own ceiling.
          maxOutputBytes: Math.min(d.params.outputCapBytes ?? o.maxOutputBytes, o.maxOutputBytes),
          workDir: o.sandbox,
        },
        (op, args) => helperCall(ctx, op, args),
        {
          stateDir: ctx.state.dir,
          deliveryId: ctx.deliveryId,
          startedAt: journal.startedAt,
          record: (rec) => journal.recordScript(rec),
        },
      );
    }
  }
}

export async function execute(
  action: string,
  payload: Record<string, unknown>,
  ctx: ExecContext,
): Promise<ActionOutcome> {
  const parsed = parseDelivery(action, payload);
  if (!parsed.ok) return { ok: false, error: parsed.error };
  try {
    return await run(parsed.delivery, ctx);
  } catch (e) {
    const unsupported = e instanceof IsolationUnsupported;
    return {
      ok: false,
      error: (e as Error).message,
      result: unsupported ? { unsupported: true } : undefined,
    };
  }
}
