// The grammar of every chat command: its usage line, summary, options, positional words and how they become
// the raw command object that zod then checks (command-types.ts). The parser (command-parser.ts) applies it.
import { ACTIONS } from '../../protocol/actions.ts';
import { BadRequest } from '../errors.ts';
import type { CommandKind } from './command-types.ts';
import { LIMITS } from './command-types.ts';

export type OptionName =
  | 'reason'
  | 'case'
  | 'note'
  | 'ttl'
  | 'match'
  | 'canary'
  | 'rate'
  | 'halt-at'
  | 'mine'
  | 'state';
export const OPTION_NAMES: readonly OptionName[] = [
  'reason',
  'case',
  'note',
  'ttl',
  'match',
  'canary',
  'rate',
  'halt-at',
  'mine',
  'state',
];
/** Options that are flags: present or not, no value. */
export const FLAG_OPTIONS: readonly OptionName[] = ['mine'];

export interface Spec {
  usage: string;
  summary: string;
  options: readonly OptionName[];
  /** How many positional words, and what they are (for the "Missing ..." message). */
  args: [min: number, max: number, what: string];
  /**
   * Where the host goes among the positional words, for commands that name one endpoint or several. In a
   * session thread a command may leave the host out and the session's endpoint is used.
   */
  host?: 'first' | 'targets';
  /** Builds the raw command object from positional words; zod checks it afterwards. */
  build(args: string[], usage: string): Record<string, unknown>;
}

/** Actions that change an endpoint carry a reason; for `run` the script decides, so the service checks. */
export const REASON_REQUIRED = new Set<CommandKind>(['isolate', 'unisolate', 'kill', 'put']);

const ACTION_OPTS: readonly OptionName[] = ['reason', 'case', 'note', 'ttl'];
/** Commands that take many targets also take the staged waves of an action group. */
const GROUP_OPTS: readonly OptionName[] = [...ACTION_OPTS, 'canary', 'rate', 'halt-at'];
const WAVES = '[--canary <n>] [--rate <n>/min] [--halt-at <n>%]';

/**
 * Splits target words into host names and the selectors `segment:<name>`, `os:<linux|windows|macos>` and
 * `all`; host names are case-insensitive. `os:` and `all` appear only when typed, so a plain host list
 * reads the same as before.
 */
function splitTargets(words: string[]): {
  hosts: string[];
  segments: string[];
  oses?: string[];
  all?: true;
} {
  const hosts: string[] = [];
  const segments: string[] = [];
  const oses: string[] = [];
  let all = false;
  for (const w of words) {
    if (/^segment:/i.test(w)) segments.push(w.slice('segment:'.length));
    else if (/^os:/i.test(w)) oses.push(w.slice('os:'.length).toLowerCase());
    else if (w.toLowerCase() === 'all') all = true;
    else hosts.push(w.toLowerCase());
  }
  return {
    hosts: [...new Set(hosts)],
    segments: [...new Set(segments)],
    ...(oses.length ? { oses: [...new Set(oses)] } : {}),
    ...(all ? { all: true as const } : {}),
  };
}

/** The target words every multi-endpoint command takes, for usage lines. */
const TARGETS = '<host...|segment:<name>|os:<linux|windows|macos>|all>';

export const SPECS: Record<CommandKind, Spec> = {
  isolate: {
    host: 'targets',
    usage: `isolate ${TARGETS} --reason "<why>" [--case <id>] [--note "<text>"] [--ttl <1m..30d>] ${WAVES}`,
    summary: ACTIONS.isolate.summary,
    options: GROUP_OPTS,
    args: [1, Infinity, 'the host(s) to isolate'],
    build: (a) => ({ ...splitTargets(a) }),
  },
  unisolate: {
    host: 'targets',
    usage: `unisolate ${TARGETS} --reason "<why>" [--case <id>] [--note "<text>"] [--ttl <1m..30d>] ${WAVES}`,
    summary: ACTIONS.unisolate.summary,
    options: GROUP_OPTS,
    args: [1, Infinity, 'the host(s) to release'],
    build: (a) => ({ ...splitTargets(a) }),
  },
  kill: {
    host: 'first',
    usage:
      'kill <host> <pid|process-name> --reason "<why>" [--case <id>] [--note "<text>"] [--ttl <1m..30d>]',
    summary: ACTIONS.kill.summary,
    options: ACTION_OPTS,
    args: [2, 2, 'the host and the pid or process name'],
    build: (a) => {
      const [host, proc] = a as [string, string];
      return /^\d+$/.test(proc)
        ? { host: host.toLowerCase(), pid: Number(proc) }
        : { host: host.toLowerCase(), processName: proc };
    },
  },
  fetch: {
    host: 'first',
    usage:
      'fetch <host> <absolute-path> [--reason "<why>"] [--case <id>] [--note "<text>"] [--ttl <1m..30d>]',
    summary: ACTIONS.fetch.summary,
    options: ACTION_OPTS,
    args: [2, 2, 'the host and the file path'],
    build: (a) => ({ host: a[0]!.toLowerCase(), path: a[1] }),
  },
  put: {
    host: 'first',
    usage:
      'put <host> <library-file|sha256> <dest-path> --reason "<why>" [--case <id>] [--note "<text>"] [--ttl <1m..30d>]',
    summary: ACTIONS.put.summary,
    options: ACTION_OPTS,
    args: [3, 3, 'the host, the library file and the destination path'],
    build: (a) => {
      return { host: a[0]!.toLowerCase(), fileRef: a[1], destPath: a[2] };
    },
  },
  run: {
    host: 'targets',
    usage: `run <script> ${TARGETS} [name=value ...] [--reason "<why>"] [--case <id>] [--note "<text>"] [--ttl <1m..30d>] ${WAVES}`,
    summary: ACTIONS.run.summary,
    options: GROUP_OPTS,
    args: [2, Infinity, 'the script name and at least one host'],
    build: (a, u) => {
      const [script, ...rest] = a as [string, ...string[]];
      const params: Record<string, string> = {};
      const targets: string[] = [];
      for (const w of rest) {
        const eq = w.indexOf('=');
        if (eq <= 0 || /^(segment|os):/i.test(w)) {
          targets.push(w);
          continue;
        }
        const name = w.slice(0, eq);
        if (Object.hasOwn(params, name)) {
          throw new BadRequest(
            'command.duplicate_param',
            `Parameter "${clip(name)}" is given twice.\nUsage: ${u}`,
          );
        }
        params[name] = w.slice(eq + 1);
      }
      if (Object.keys(params).length > LIMITS.params) {
        throw new BadRequest('command.too_many_params', `At most ${LIMITS.params} parameters.\nUsage: ${u}`);
      }
      return { script, ...splitTargets(targets), params };
    },
  },
  processes: {
    host: 'targets',
    usage: `processes ${TARGETS} [--match <text>] [--case <id>] [--note "<text>"] ${WAVES}`,
    summary: ACTIONS.processes.summary,
    options: [...GROUP_OPTS, 'match'],
    args: [1, Infinity, 'the host(s)'],
    build: (a) => ({ ...splitTargets(a) }),
  },
  files: {
    usage: 'files',
    summary: 'list the library files that put can push',
    options: [],
    args: [0, 0, ''],
    build: () => ({}),
  },
  upload: {
    usage: 'upload',
    summary: 'get a link to the page that adds a file to the library (needs a step-up)',
    options: [],
    args: [0, 0, ''],
    build: () => ({}),
  },
  scripts: {
    usage: 'scripts',
    summary: 'list the library scripts that run can name, with their parameters',
    options: [],
    args: [0, 0, ''],
    build: () => ({}),
  },
  history: {
    usage: 'history',
    summary: 'get a link to the session history and audit log page (needs a step-up)',
    options: [],
    args: [0, 0, ''],
    build: () => ({}),
  },
  session: {
    usage: 'session start|stop <host> [--reason "<why>"] [--case <id>]',
    summary:
      'open or close an interactive session with one endpoint: in its thread, commands may leave the host out',
    options: ['reason', 'case'],
    args: [2, 2, '"start" or "stop" and the host'],
    build: (a, u) => {
      if (a[0] !== 'start' && a[0] !== 'stop') {
        throw new BadRequest(
          'command.bad_argument',
          `Expected "start" or "stop", got "${clip(a[0]!)}".\nUsage: ${u}`,
        );
      }
      return { action: a[0], host: a[1]!.toLowerCase() };
    },
  },
  status: {
    usage: 'status [request-ref]',
    summary: "show one request (an action group's live progress too), or your recent requests",
    options: [],
    args: [0, 1, ''],
    build: (a) => (a[0] ? { ref: a[0] } : {}),
  },
  queue: {
    usage: 'queue <host>',
    summary: "list an endpoint's pending deliveries",
    options: [],
    args: [1, 1, 'the host'],
    build: (a) => ({ host: a[0]!.toLowerCase() }),
  },
  groups: {
    usage: 'groups [--mine] [--state canary|running|halted|cancelled|finished]',
    summary:
      'list action groups (requests with more than one target), newest first; the web page pages them all',
    options: ['mine', 'state'],
    args: [0, 0, ''],
    build: () => ({}),
  },
  resume: {
    usage: 'resume <request-ref>',
    summary: 'let a halted action group go on (approvers; needs a step-up)',
    options: [],
    args: [1, 1, 'the request ref of the halted group'],
    build: (a) => ({ ref: a[0] }),
  },
  cancel: {
    usage: 'cancel <request-ref|delivery-id> [--reason "<why>"]',
    summary: 'withdraw a request or one queued delivery',
    options: ['reason'],
    args: [1, 1, 'the request ref or delivery id'],
    build: (a) => ({ target: a[0] }),
  },
  grant: {
    usage: 'grant <username> <active_response|ar|approver|admin> [--reason "<why>"]',
    summary: 'grant a role (admins; needs a step-up)',
    options: ['reason'],
    args: [2, 2, 'the username and the role'],
    build: (a) => ({ username: a[0], role: a[1] }),
  },
  revoke: {
    usage: 'revoke <username> <active_response|ar|approver|admin> [--reason "<why>"]',
    summary: 'revoke a role (admins)',
    options: ['reason'],
    args: [2, 2, 'the username and the role'],
    build: (a) => ({ username: a[0], role: a[1] }),
  },
  audit: {
    usage: 'audit [host|username|request-ref]',
    summary: 'recent audit records, for a host, a user or a request',
    options: [],
    args: [0, 1, ''],
    build: (a) => (a[0] ? { subject: a[0] } : {}),
  },
  help: {
    usage: 'help [command]',
    summary: 'this help, or the usage of one command',
    options: [],
    args: [0, 1, ''],
    build: (a) => (a[0] ? { topic: a[0].toLowerCase() } : {}),
  },
  approve: {
    usage: 'approve <request-ref>',
    summary: 'approve a request (the same as the Approve button)',
    options: [],
    args: [1, 1, 'the request ref'],
    build: (a) => ({ ref: a[0] }),
  },
  deny: {
    usage: 'deny <request-ref> [--reason "<why>"]',
    summary: 'deny a request (the same as the Deny button)',
    options: ['reason'],
    args: [1, 1, 'the request ref'],
    build: (a) => ({ ref: a[0] }),
  },
  download: {
    usage: 'download <file-id|sha256>',
    summary: 'get a single-use link to fetched evidence (needs a step-up)',
    options: [],
    args: [1, 1, 'the file id or SHA-256'],
    build: (a) => ({ fileRef: a[0] }),
  },
};

export function clip(s: string, n = 60): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}
