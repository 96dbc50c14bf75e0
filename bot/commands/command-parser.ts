// Chat text → a typed Command. Every refusal is a BadRequest with a `command.*` code whose message says
// what was wrong, quotes what was typed and shows the usage line of the command.
import { parseDuration } from '../../app/config.ts';
import { BadRequest, describeZodIssues } from '../errors.ts';
import {
  clip,
  FLAG_OPTIONS,
  OPTION_NAMES,
  type OptionName,
  REASON_REQUIRED,
  SPECS,
  type Spec,
} from './command-specs.ts';
import { stripPrefix, type Token, tokenize } from './command-tokenizer.ts';
import { type Command, type CommandKind, commandSchema, LIMITS } from './command-types.ts';

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

export const COMMAND_KINDS = Object.keys(SPECS) as CommandKind[];

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
  return `${prefix}Commands:\n${lines.join('\n')}\nDurations: 30m, 4h, 7d. Several hosts, segment:<name>, os:<linux|windows|macos> or all where shown (os: narrows segment: and all).`;
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
    const t = raw as { hosts?: string[]; segments?: string[]; oses?: string[]; all?: true };
    if (!t.hosts?.length && !t.segments?.length && !t.oses?.length && !t.all) t.hosts = [opts.sessionHost];
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
  if (options.mine !== undefined) raw.mine = true;
  if (options.state !== undefined) raw.state = options.state.toLowerCase();
  if (options.canary !== undefined) raw.canary = count(options.canary, '--canary', /^(\d{1,7})$/, spec.usage);
  if (options.rate !== undefined)
    raw.ratePerMinute = count(options.rate, '--rate', /^(\d{1,7})\/min$/i, spec.usage);
  if (options['halt-at'] !== undefined)
    raw.haltAtPercent = count(options['halt-at'], '--halt-at', /^(\d{1,3})%?$/, spec.usage);
  const parsed = commandSchema.safeParse(raw);
  if (!parsed.success) {
    throw new BadRequest(
      'command.invalid',
      `${kind}: ${describeZodIssues(parsed.error.issues)}.\nUsage: ${spec.usage}`,
    );
  }
  return parsed.data;
}

/** The number in an option such as `--canary 5`, `--rate 100/min` or `--halt-at 10%`. */
function count(value: string, name: string, shape: RegExp, usageLine: string): number {
  const m = value.trim().match(shape);
  if (!m) {
    const like = name === '--rate' ? '100/min' : name === '--halt-at' ? '10%' : '5';
    throw new BadRequest(
      'command.bad_number',
      `${name} "${clip(value)}" is not a number like ${like}.\nUsage: ${usageLine}`,
    );
  }
  return Number(m[1]);
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
    // A flag (`--mine`) takes no value.
    if (FLAG_OPTIONS.includes(opt) && eq < 0) {
      options[opt] = 'yes';
      continue;
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
