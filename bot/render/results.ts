// What an endpoint's result says, in words for the request's thread. The result's shape comes from the
// catalogue (protocol/actions.ts), so a person reads what the agent really did: the processes it killed,
// the file it wrote and its hash, a script's exit code and the first lines of its output.
import type { z } from 'zod';
import { ACTIONS, type ActionName, type ActionResult, isActionName } from '../../protocol/actions.ts';
import { plural } from './summary.ts';

/** Chat messages stay readable (and under every platform's limits): this many output lines at most. */
export const OUTPUT_LINES = 40;
const OUTPUT_CHARS = 3000;

export interface ResultInput {
  host: string;
  action: string;
  state: string;
  result: unknown;
  error: string | null;
  /** For fetch: the stored evidence file. */
  file?: { id: string; name: string; sourcePath: string | null; size: number; sha256: string };
}

/** The first lines of a text, with a note of what was left out. */
export function firstLines(text: string, lines = OUTPUT_LINES, chars = OUTPUT_CHARS): string {
  const all = text.replace(/\s+$/, '').split('\n');
  let shown = all.slice(0, lines).join('\n');
  if (shown.length > chars) shown = `${shown.slice(0, chars)}…`;
  const cut = all.length - Math.min(all.length, lines);
  return cut > 0 ? `${shown}\n… ${plural(cut, 'more line')}` : shown;
}

function parsed<A extends ActionName>(action: A, result: unknown): ActionResult<A> | undefined {
  const r = (ACTIONS[action].result as unknown as z.ZodType<ActionResult<A>>).safeParse(result);
  return r.success ? r.data : undefined;
}

function runLines(host: string, state: string, result: unknown, error: string | null): string {
  const r = parsed('run', result);
  if (!r) return `${host}: run ${state}${error ? ` — ${error}` : ''}`;
  const out: string[] = [];
  if (r.outcome === 'unknown') {
    const why = r.adopted
      ? 'the agent restarted while the script ran and found no trace of how it ended'
      : "the script's runner stopped without recording how the script ended";
    out.push(`${host}: outcome unknown — ${why}; it was not run again.`);
  } else {
    const how = r.timedOut
      ? `was stopped after ${Math.round(r.durationMs / 1000)} s (time limit)`
      : r.exitCode !== null
        ? `exited with code ${r.exitCode}`
        : `was killed by ${r.signal}`;
    const restarted = r.adopted ? 'the agent restarted while the script ran; the ' : '';
    out.push(`${host}: ${restarted}script ${how} after ${(r.durationMs / 1000).toFixed(1)} s.`);
  }
  const partial = r.outcome === 'unknown' ? ' (what it wrote before the agent lost track of it)' : '';
  if (r.stdout.trim()) {
    out.push(
      `stdout${partial}${r.stdoutTruncated ? ' (cut at the output limit)' : ''}:\n\`\`\`\n${firstLines(r.stdout)}\n\`\`\``,
    );
  } else out.push('No output on stdout.');
  if (r.stderr.trim()) {
    out.push(
      `stderr${partial}${r.stderrTruncated ? ' (cut at the output limit)' : ''}:\n\`\`\`\n${firstLines(r.stderr, 15)}\n\`\`\``,
    );
  }
  if (r.outputLost) out.push("Part of the output is missing: the agent's disk was full.");
  return out.join('\n');
}

/** One thread message per final delivery. */
export function describeResult(d: ResultInput): string {
  const { host, action, state, result, error } = d;
  if (action === 'run') return runLines(host, state, result, error);
  if (state !== 'succeeded' || !isActionName(action)) {
    return `${host}: ${action} ${state}${error ? ` — ${error}` : ''}`;
  }
  switch (action) {
    case 'isolate':
    case 'unisolate': {
      const r = (result ?? {}) as { isolated?: boolean; dryRun?: boolean; mechanism?: string };
      const done = action === 'isolate' ? 'isolated from the network' : 'isolation lifted';
      const how = r.dryRun
        ? ' (dry run: simulated, nothing changed)'
        : r.mechanism
          ? ` (${r.mechanism})`
          : '';
      return `${host}: ${done}${how}.`;
    }
    case 'kill': {
      const r = parsed('kill', result);
      if (!r) return `${host}: kill succeeded.`;
      const names = r.killed.map((p) => `${p.pid} ${p.name}`).join(', ');
      const failed = r.failed.length ? `; could not kill ${r.failed.map((f) => f.pid).join(', ')}` : '';
      return `${host}: killed ${plural(r.killed.length, 'process', 'processes')} (${names})${failed}.`;
    }
    case 'fetch': {
      const f = d.file;
      if (!f) return `${host}: fetch succeeded.`;
      return `${host}: fetched ${f.sourcePath ?? f.name} — ${f.size} bytes, sha256 ${f.sha256}\nFile id ${f.id}. Get a personal download link (zip, password "infected") with: download ${f.id}`;
    }
    case 'put': {
      const r = parsed('put', result);
      if (!r) return `${host}: put succeeded.`;
      return `${host}: wrote ${r.path} — ${r.size} bytes, sha256 ${r.sha256} (the approved file).`;
    }
    case 'processes': {
      const r = parsed('processes', result);
      if (!r) return `${host}: processes succeeded.`;
      const rows = r.processes.map((p) => `${String(p.pid).padStart(7)}  ${p.name.padEnd(16)} ${p.cmdline}`);
      return `${host}: ${plural(r.total, 'process', 'processes')}:\n\`\`\`\n${firstLines(`    PID  NAME             COMMAND\n${rows.join('\n')}`)}\n\`\`\``;
    }
  }
  return `${host}: ${action} succeeded.`;
}
