// The action catalogue: for every action an endpoint can be asked to do, its parameters as one zod schema,
// its result, whether it changes the endpoint, the OSes it supports and the agent version it needs. The
// command parser, the request builder, the digest, the card and page renderers, the broker and the agent all
// import this one definition, so the server and the agent cannot disagree on a parameter's name or shape:
// a mismatch fails to compile, or fails the strict parse here.
import { z } from 'zod';

export const OSES = ['windows', 'linux', 'macos'] as const;
export type Os = (typeof OSES)[number];

export const ACTION_NAMES = ['isolate', 'unisolate', 'kill', 'fetch', 'put', 'run', 'processes'] as const;
export type ActionName = (typeof ACTION_NAMES)[number];

export const LIMITS = {
  pathChars: 4096,
  processNameChars: 255,
  fileNameChars: 255,
  scriptArgs: 50,
  scriptArgBytes: 4096,
  /** A script's bytes travel inside the (signed) delivery frame, which is capped at 2 MiB. */
  scriptBytes: 1024 * 1024,
  maxTimeoutSeconds: 86_400,
  /** A script version's output cap (bytes of stdout, and of stderr) lies within these. */
  minOutputCapBytes: 1024,
  maxOutputCapBytes: 64 * 1024 * 1024,
} as const;

/** True when a string holds a control character (C0 or DEL), which no process name or filter needs. */
const hasControl = (s: string) => [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, { error: 'expected 64 lower-case hex characters' });

/** Absolute on Linux/macOS (`/x`), Windows (`C:\x`) or a UNC share (`\\host\x`); no NUL bytes. */
export const absolutePathSchema = z
  .string()
  .min(1, { error: 'must not be empty' })
  .max(LIMITS.pathChars, { error: `is too long (at most ${LIMITS.pathChars} characters)` })
  .refine((p) => !p.includes('\u0000'), { error: 'must not contain a NUL character' })
  .refine((p) => p.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p) || p.startsWith('\\\\'), {
    error: (iss) =>
      `"${String(iss.input).slice(0, 80)}" is not an absolute path (e.g. /var/log/x or C:\\Temp\\x)`,
  });

export const processNameSchema = z
  .string()
  .min(1)
  .max(LIMITS.processNameChars, { error: `is too long (at most ${LIMITS.processNameChars} characters)` })
  .refine((n) => !hasControl(n), { error: 'must not contain control characters' });

/** A library file as approved: the agent writes it only if the bytes hash to this SHA-256. */
export const libraryFileRefSchema = z.strictObject({
  id: z.uuid(),
  name: z.string().min(1).max(LIMITS.fileNameChars),
  size: z
    .number()
    .int()
    .min(0)
    .max(2 ** 53 - 1),
  sha256,
});

/** A library script as approved: its bytes travel in the delivery and must hash to `sha256`. */
export const scriptRefSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, { error: 'is not a script name' }),
  version: z.number().int().positive(),
  sha256,
});

export const scriptArgNameSchema = z.string().regex(/^[a-z_][a-z0-9_]{0,31}$/, {
  error: 'parameter names are lower-case letters, digits and _ (at most 32, not starting with a digit)',
});
export const scriptArgValueSchema = z.union([
  z.string().refine((v) => Buffer.byteLength(v) <= LIMITS.scriptArgBytes, {
    error: `a parameter value is at most ${LIMITS.scriptArgBytes} bytes`,
  }),
  z.number().finite(),
  z.boolean(),
]);

const processInfo = z.object({ pid: z.number().int(), name: z.string(), cmdline: z.string() });

/** One row of the catalogue. `describe` gives a person every parameter in words, for cards and pages. */
export interface ActionDef<P extends z.ZodType, R extends z.ZodType> {
  /** "isolate", as typed in chat. */
  name: ActionName;
  /** What it does, for help and pages: "cut the endpoint off the network (except the platform)". */
  summary: string;
  params: P;
  result: R;
  /** Changes the endpoint's state: needs approval and a requester step-up. */
  changesEndpoint: boolean;
  /** Leaves the endpoint alone but carries evidence out of it (fetch). */
  handsOutEvidence: boolean;
  oses: readonly Os[];
  minAgentVersion: string;
  describe(params: z.infer<P>): [label: string, value: string][];
}

function defineAction<P extends z.ZodType, R extends z.ZodType>(d: ActionDef<P, R>): ActionDef<P, R> {
  return d;
}

const noParams = z.strictObject({});
/** Windows and Linux: the product's supported platforms. macOS agents enrol and are listed, but act on nothing. */
const WINDOWS_LINUX = ['windows', 'linux'] as const;

export const ACTIONS = {
  isolate: defineAction({
    name: 'isolate',
    summary: 'cut endpoints off the network, except their connection to the platform',
    params: noParams,
    // The agent reports the mechanism and what it verified; the fields differ by OS.
    result: z.looseObject({ isolated: z.boolean() }),
    changesEndpoint: true,
    handsOutEvidence: false,
    oses: WINDOWS_LINUX,
    minAgentVersion: '1.0.0',
    describe: () => [],
  }),
  unisolate: defineAction({
    name: 'unisolate',
    summary: 'lift the network isolation of endpoints',
    params: noParams,
    result: z.looseObject({ isolated: z.boolean() }),
    changesEndpoint: true,
    handsOutEvidence: false,
    oses: WINDOWS_LINUX,
    minAgentVersion: '1.0.0',
    describe: () => [],
  }),
  kill: defineAction({
    name: 'kill',
    summary: 'kill a process by pid, or every process with a name',
    params: z.union([
      z.strictObject({
        pid: z
          .number()
          .int()
          .positive()
          .max(2 ** 32),
      }),
      z.strictObject({ processName: processNameSchema }),
    ]),
    result: z.object({
      killed: z.array(processInfo),
      failed: z.array(z.object({ pid: z.number(), error: z.string() })),
      skipped: z.array(z.number()),
      matched: z.number().int(),
    }),
    changesEndpoint: true,
    handsOutEvidence: false,
    oses: WINDOWS_LINUX,
    minAgentVersion: '1.0.0',
    describe: (p) => ('pid' in p ? [['Process id', String(p.pid)]] : [['Process name', p.processName]]),
  }),
  fetch: defineAction({
    name: 'fetch',
    summary: 'collect a file from an endpoint (kept by SHA-256, downloaded through a link)',
    params: z.strictObject({ path: absolutePathSchema }),
    result: z.object({
      fileId: z.uuid(),
      size: z.number(),
      sha256,
      path: z.string(),
      name: z.string(),
    }),
    changesEndpoint: false,
    handsOutEvidence: true,
    oses: WINDOWS_LINUX,
    minAgentVersion: '1.0.0',
    describe: (p) => [['Path', p.path]],
  }),
  put: defineAction({
    name: 'put',
    summary: 'write a library file to a path on an endpoint',
    params: z.strictObject({ file: libraryFileRefSchema, destPath: absolutePathSchema }),
    result: z.object({ path: z.string(), size: z.number(), sha256, name: z.string() }),
    changesEndpoint: true,
    handsOutEvidence: false,
    oses: WINDOWS_LINUX,
    minAgentVersion: '1.1.0',
    describe: (p) => [
      ['Library file', `${p.file.name} (${p.file.size} bytes)`],
      ['File SHA-256', p.file.sha256],
      ['Destination', p.destPath],
    ],
  }),
  run: defineAction({
    name: 'run',
    summary: 'run a library Python script (read-only investigation scripts need no approval)',
    params: z.strictObject({
      script: scriptRefSchema,
      args: z
        .record(scriptArgNameSchema, scriptArgValueSchema)
        .refine((a) => Object.keys(a).length <= LIMITS.scriptArgs, {
          error: `at most ${LIMITS.scriptArgs} parameters`,
        }),
      timeoutSeconds: z.number().int().positive().max(LIMITS.maxTimeoutSeconds),
      /**
       * The script version's output cap: the agent keeps at most this many bytes of stdout and of stderr
       * (or its own cap, when that is lower) and marks the rest as cut. Agents before 1.5.0 do not know it.
       */
      outputCapBytes: z.number().int().min(LIMITS.minOutputCapBytes).max(LIMITS.maxOutputCapBytes).optional(),
    }),
    result: z.object({
      exitCode: z.number().int().nullable(),
      signal: z.string().nullable(),
      timedOut: z.boolean(),
      durationMs: z.number(),
      stdout: z.string(),
      stderr: z.string(),
      stdoutTruncated: z.boolean(),
      stderrTruncated: z.boolean(),
      /**
       * The agent restarted while the script ran (a crash, a kill, an upgrade) and collected its end
       * afterwards: the script ran once, to its end, and this is how it ended.
       */
      adopted: z.boolean().optional(),
      /**
       * `unknown`: the agent restarted and found no trace of how the script ended (its runner was gone and
       * recorded no exit); exitCode and signal are null, the output is what it wrote before, and durationMs
       * runs until the agent found it gone. The delivery is failed with an error starting "outcome unknown".
       */
      outcome: z.literal('unknown').optional(),
      /** Part of the output could not be written to the agent's disk (it was full) and is missing. */
      outputLost: z.boolean().optional(),
    }),
    changesEndpoint: true,
    handsOutEvidence: false,
    oses: WINDOWS_LINUX,
    // 1.5.0: the output cap travels with the delivery (older agents refuse the field).
    minAgentVersion: '1.5.0',
    describe: (p) => [
      ['Script', `${p.script.name} v${p.script.version}`],
      ['Script SHA-256', p.script.sha256],
      ...Object.entries(p.args)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]): [string, string] => [`Parameter ${k}`, JSON.stringify(v)]),
      ['Time limit', `${p.timeoutSeconds} s`],
      ...(p.outputCapBytes !== undefined
        ? [['Output limit', `${p.outputCapBytes} bytes`] as [string, string]]
        : []),
    ],
  }),
  processes: defineAction({
    name: 'processes',
    summary: 'list the processes running on endpoints (read-only)',
    params: z.strictObject({
      match: z
        .string()
        .min(1)
        .max(LIMITS.processNameChars)
        .refine((n) => !hasControl(n), { error: 'must not contain control characters' })
        .optional(),
    }),
    result: z.object({ processes: z.array(processInfo), total: z.number().int() }),
    changesEndpoint: false,
    handsOutEvidence: false,
    oses: WINDOWS_LINUX,
    minAgentVersion: '1.0.0',
    describe: (p) => (p.match ? [['Only names containing', p.match]] : []),
  }),
} as const;

export type Actions = typeof ACTIONS;
export type ActionParams<A extends ActionName> = z.infer<Actions[A]['params']>;
export type ActionResult<A extends ActionName> = z.infer<Actions[A]['result']>;

export function isActionName(s: string): s is ActionName {
  return (ACTION_NAMES as readonly string[]).includes(s);
}

/** Every parameter of an action in words: [label, value] pairs (empty when the action takes none). */
export function describeParams(action: string, params: unknown): [string, string][] {
  if (!isActionName(action)) return [];
  const def = ACTIONS[action] as ActionDef<z.ZodType, z.ZodType>;
  const p = def.params.safeParse(params);
  return p.success ? def.describe(p.data) : [['Parameters', JSON.stringify(params)]];
}

/**
 * What a delivery carries besides its id, action and expiry. `params` is the action's parameters exactly as
 * approved (the digest covers them); a script's bytes travel in `scriptBody`, which must hash to
 * `params.script.sha256`. The request fields let an agent log and report what it ran.
 */
export const deliveryPayloadSchema = z.strictObject({
  requestId: z.uuid(),
  ref: z.string().min(1).max(16),
  digest: sha256,
  hostname: z.string().min(1).max(253),
  params: z.record(z.string(), z.unknown()),
  scriptBody: z.string().max(LIMITS.scriptBytes).optional(),
});
export type DeliveryPayload = z.infer<typeof deliveryPayloadSchema>;

export type ParsedDelivery = {
  [A in ActionName]: { action: A; params: ActionParams<A>; payload: DeliveryPayload };
}[ActionName];

/**
 * Checks a delivery's payload against the catalogue: the agent runs nothing that does not parse. The error
 * says which field was wrong, so the failed result in the thread tells a person what to fix.
 */
export function parseDelivery(
  action: string,
  payload: unknown,
): { ok: true; delivery: ParsedDelivery } | { ok: false; error: string } {
  if (!isActionName(action))
    return { ok: false, error: `this agent does not support the action "${action}"` };
  const p = deliveryPayloadSchema.safeParse(payload);
  if (!p.success) return { ok: false, error: `the delivery payload is not valid: ${issues(p.error)}` };
  const params = (ACTIONS[action].params as z.ZodType).safeParse(p.data.params);
  if (!params.success)
    return { ok: false, error: `the ${action} parameters are not valid: ${issues(params.error)}` };
  if (action === 'run' && p.data.scriptBody === undefined)
    return { ok: false, error: 'a run delivery carries no script' };
  return { ok: true, delivery: { action, params: params.data, payload: p.data } as ParsedDelivery };
}

function issues(e: z.ZodError): string {
  return e.issues
    .slice(0, 3)
    .map((i) => `${i.path.join('.') || '(payload)'} ${i.message}`)
    .join('; ');
}
