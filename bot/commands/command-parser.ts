// Chat text → a typed Command. Every refusal is a BadRequest with a `command.*` code whose message says
// what was wrong, quotes what was typed and shows the usage line of the command.
import { parseDuration } from '../../app/config.ts';
import { ACTIONS } from '../../protocol/actions.ts';
import { BadRequest, describeZodIssues } from '../errors.ts';
import { stripPrefix, type Token, tokenize } from './command-tokenizer.ts';
import { type Command, type CommandKind, commandSchema, LIMITS } from './command-types.ts';

type OptionName = 'reason' | 'case' | 'note' | 'ttl' | 'match';
const OPTION_NAMES: readonly OptionName[] = ['reason', 'case', 'note', 'ttl', 'match'];

interface Spec {
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
const REASON_REQUIRED = new Set<CommandKind>(['isolate', 'unisolate', 'kill', 'put']);

const ACTION_OPTS: readonly OptionName[] = ['reason', 'case', 'note', 'ttl'];

function need(args: string[], min: number, max: number, usage: string, what: string): void {
  if (args.length < min)
    throw new BadRequest('command.missing_argument', `Missing ${what}.\nUsage: ${usage}`);
  if (args.length > max) {
    const extra = args.slice(max).join(' ');
    throw new BadRequest(
      'command.extra_argument',
      `Unexpected "${clip(extra)}" after the command.\nUsage: ${usage}`,
    );
  }
}

/** Splits target words into hostnames and `segment:<name>` selectors; host names are case-insensitive. */
function splitTargets(words: string[]): { hosts: string[]; segments: string[] } {
  const hosts: string[] = [];
  const segments: string[] = [];
  for (const w of words) {
    if (/^segment:/i.test(w)) segments.push(w.slice('segment:'.length));
    else hosts.push(w.toLowerCase());
  }
  return { hosts: [...new Set(hosts)], segments: [...new Set(segments)] };
}

const SPECS: Record<CommandKind, Spec> = {
  isolate: {
    host: 'targets',
    usage:
      'isolate <host...|segment:<name>> --reason "<why>" [--case <id>] [--note "<text>"] [--ttl <1m..30d>]',
    summary: ACTIONS.isolate.summary,
    options: ACTION_OPTS,
    args: [1, Infinity, 'the host(s) to isolate'],
    build: (a) => ({ ...splitTargets(a) }),
  },
  unisolate: {
    host: 'targets',
    usage:
      'unisolate <host...|segment:<name>> --reason "<why>" [--case <id>] [--note "<text>"] [--ttl <1m..30d>]',
    summary: ACTIONS.unisolate.summary,
    options: ACTION_OPTS,
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
    usage:
      'run <script> <host...|segment:<name>> [name=value ...] [--reason "<why>"] [--case <id>] [--note "<text>"] [--ttl <1m..30d>]',
    summary: ACTIONS.run.summary,
    options: ACTION_OPTS,
    args: [2, Infinity, 'the script name and at least one host'],
    build: (a, u) => {
      const [script, ...rest] = a as [string, ...string[]];
      const params: Record<string, string> = {};
      const targets: string[] = [];
      for (const w of rest) {
        const eq = w.indexOf('=');
        if (eq <= 0 || /^segment:/i.test(w)) {
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
    usage: 'processes <host...|segment:<name>> [--match <text>] [--case <id>] [--note "<text>"]',
    summary: ACTIONS.processes.summary,
    options: ['reason', 'case', 'note', 'ttl', 'match'],
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
    summary: 'show one request, or your recent requests',
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

export const COMMAND_KINDS = Object.keys(SPECS) as CommandKind[];

function clip(s: string, n = 60): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

/** The usage line of one command, or every usage line. */
export function usage(kind?: CommandKind): string {
  if (kind) return SPECS[kind].usage;
  return COMMAND_KINDS.map((k) => SPECS[k].usage).join('\n');
}

/** Help text: every command with a one-line summary, or one command's usage and summary. */
export function helpText(topic?: string): string {
  if (topic && Object.hasOwn(SPECS, topic)) {
    const s = SPECS[topic as CommandKind];
    return `${s.usage}\n  ${s.summary}`;
  }
  const lines = COMMAND_KINDS.map((k) => `• ${SPECS[k].usage}\n    ${SPECS[k].summary}`);
  const prefix = topic ? `There is no command "${clip(topic)}". ` : '';
  return `${prefix}Commands:\n${lines.join('\n')}\nDurations: 30m, 4h, 7d. Several hosts or segment:<name> where shown.`;
}

/** Edit distance, for "did you mean" on a mistyped command word (short words only, so it stays cheap). */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

function didYouMean(word: string): string | undefined {
  if (word.length > 20) return undefined;
  const best = COMMAND_KINDS.map((k) => ({ k, d: distance(word, k) })).sort((x, y) => x.d - y.d)[0];
  const prefix = COMMAND_KINDS.find((k) => word.length >= 3 && k.startsWith(word));
  if (prefix) return prefix;
  return best && best.d <= Math.max(1, Math.floor(best.k.length / 3)) ? best.k : undefined;
}

export interface ParseOptions {
  /** The endpoint of the session whose thread the command was typed in: used when the host is left out. */
  sessionHost?: string;
}

/**
 * Parses one chat command. Throws BadRequest (`command.*`) with a message that names the problem and
 * shows the usage line; never returns a partially valid command.
 */
export function parseCommand(text: string, opts: ParseOptions = {}): Command {
  if (typeof text !== 'string') throw new BadRequest('command.empty', `Type a command.\n${helpText()}`);
  if (Buffer.byteLength(text) > LIMITS.textBytes) {
    throw new BadRequest(
      'command.too_long',
      `That command is ${Buffer.byteLength(text)} bytes; the limit is ${LIMITS.textBytes} bytes (20 KB). ` +
        'For many endpoints use segment:<name>; keep reasons under 2,000 characters.',
    );
  }
  const tokens = tokenize(stripPrefix(text));
  const [first, ...rest] = tokens;
  if (!first) throw new BadRequest('command.empty', `Type a command.\n${helpText()}`);
  const word = first.text.toLowerCase();
  if (!Object.hasOwn(SPECS, word)) {
    const guess = didYouMean(word);
    throw new BadRequest(
      'command.unknown',
      `Unknown command "${clip(first.text)}".${guess ? ` Did you mean "${guess}"?` : ''} Commands: ${COMMAND_KINDS.join(', ')}. Type "help <command>" for usage.`,
    );
  }
  const kind = word as CommandKind;
  const spec = SPECS[kind];
  const { positional, options } = splitOptions(kind, spec, rest);
  // In a session thread the host may be left out: `kill 4242` means `kill <session host> 4242`.
  if (opts.sessionHost && spec.host === 'first' && positional.length === spec.args[0] - 1) {
    positional.unshift(opts.sessionHost);
  }
  const min = spec.host === 'targets' && opts.sessionHost ? spec.args[0] - 1 : spec.args[0];
  need(positional, min, spec.args[1], spec.usage, spec.args[2]);
  const raw: Record<string, unknown> = { kind, ...spec.build(positional, spec.usage) };
  if (opts.sessionHost && spec.host === 'targets') {
    const t = raw as { hosts?: string[]; segments?: string[] };
    if (!t.hosts?.length && !t.segments?.length) t.hosts = [opts.sessionHost];
  }
  if (REASON_REQUIRED.has(kind) && options.reason === undefined) {
    throw new BadRequest(
      'command.reason_required',
      `${kind} changes the endpoint, so it needs --reason "<why>" (it goes on the card and in the audit log).\nUsage: ${spec.usage}`,
    );
  }
  if (options.reason !== undefined) raw.reason = options.reason;
  if (options.case !== undefined) raw.caseId = options.case;
  if (options.note !== undefined) raw.note = options.note;
  if (options.ttl !== undefined) raw.ttlSeconds = ttlSeconds(options.ttl, spec.usage);
  if (options.match !== undefined) raw.match = options.match;
  const parsed = commandSchema.safeParse(raw);
  if (!parsed.success) {
    throw new BadRequest(
      'command.invalid',
      `${kind}: ${describeZodIssues(parsed.error.issues)}.\nUsage: ${spec.usage}`,
    );
  }
  return parsed.data;
}

function ttlSeconds(value: string, usageLine: string): number {
  const s = parseDuration(value);
  if (s === undefined || s < LIMITS.ttlMinSeconds || s > LIMITS.ttlMaxSeconds) {
    throw new BadRequest(
      'command.bad_ttl',
      `--ttl "${clip(value)}" is not a duration between 1m and 30d (e.g. 30m, 4h, 7d).\nUsage: ${usageLine}`,
    );
  }
  return s;
}

function splitOptions(kind: CommandKind, spec: Spec, tokens: Token[]) {
  const positional: string[] = [];
  const options: Partial<Record<OptionName, string>> = {};
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.quoted || !t.text.startsWith('--')) {
      positional.push(t.text);
      continue;
    }
    const eq = t.text.indexOf('=');
    const name = (eq > 0 ? t.text.slice(2, eq) : t.text.slice(2)).toLowerCase();
    if (!OPTION_NAMES.includes(name as OptionName)) {
      throw new BadRequest(
        'command.unknown_option',
        `Unknown option "--${clip(name)}". ${kind} takes ${spec.options.length ? spec.options.map((o) => `--${o}`).join(', ') : 'no options'}.\nUsage: ${spec.usage}`,
      );
    }
    const opt = name as OptionName;
    if (!spec.options.includes(opt)) {
      throw new BadRequest(
        'command.option_not_allowed',
        `${kind} does not take --${opt}.\nUsage: ${spec.usage}`,
      );
    }
    if (options[opt] !== undefined) {
      throw new BadRequest('command.duplicate_option', `--${opt} is given twice.\nUsage: ${spec.usage}`);
    }
    let value: string | undefined;
    if (eq > 0) value = t.text.slice(eq + 1);
    else {
      const next = tokens[i + 1];
      if (next && (next.quoted || !next.text.startsWith('--'))) {
        value = next.text;
        i++;
      }
    }
    if (value === undefined || value.trim() === '') {
      throw new BadRequest('command.missing_option_value', `--${opt} needs a value.\nUsage: ${spec.usage}`);
    }
    options[opt] = value;
  }
  return { positional, options };
}
