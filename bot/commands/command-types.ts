// The typed commands the bot understands, as one zod discriminated union on `kind`. The parser builds these
// from chat text; services validate them again at their own boundary, so the caps below hold however a
// command arrives (chat, console, a test calling the service directly).
import { z } from 'zod';
import { GROUP_STATES, OSES, ROLES } from '../../db/schema.ts';
import {
  LIMITS as ACTION_LIMITS,
  absolutePathSchema,
  processNameSchema,
  scriptArgNameSchema,
} from '../../protocol/actions.ts';

export const LIMITS = {
  textBytes: 20 * 1024,
  reasonChars: 2000,
  caseIdChars: 64,
  hosts: 1000,
  hostnameChars: 253,
  labelChars: 63,
  params: ACTION_LIMITS.scriptArgs,
  paramValueBytes: ACTION_LIMITS.scriptArgBytes,
  pathChars: ACTION_LIMITS.pathChars,
  processNameChars: ACTION_LIMITS.processNameChars,
  ttlMinSeconds: 60,
  ttlMaxSeconds: 30 * 86400,
} as const;

/** RFC 1123 hostname: dot-separated labels of letters, digits and inner hyphens; 253 chars, labels 63. */
export function isHostname(s: string): boolean {
  if (s.length === 0 || s.length > LIMITS.hostnameChars) return false;
  return s
    .split('.')
    .every(
      (l) => l.length > 0 && l.length <= LIMITS.labelChars && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i.test(l),
    );
}

/** Request refs are `R-` plus 6 Crockford base32 characters (no I, L, O, U). */
export const REF_PATTERN = /^R-[0-9A-HJKMNP-TV-Z]{6}$/;
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SEGMENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const quoted = (v: unknown) => `"${String(v).slice(0, 80)}${String(v).length > 80 ? '…' : ''}"`;

/** Host names are case-insensitive: every command carries them lower-case, whoever built it. */
export const hostnameSchema = z
  .string()
  .max(LIMITS.hostnameChars, { error: `a hostname is at most ${LIMITS.hostnameChars} characters` })
  .refine(isHostname, {
    error: (iss) =>
      `${quoted(iss.input)} is not a valid hostname (letters, digits and hyphens, labels of at most 63 characters)`,
  })
  .transform((h) => h.toLowerCase());

const segmentNameSchema = z.string().refine((s) => SEGMENT_NAME.test(s), {
  error: (iss) => `${quoted(iss.input)} is not a valid segment name`,
});

export const reasonSchema = z
  .string()
  .trim()
  .min(1, { error: 'must not be empty' })
  .max(LIMITS.reasonChars, { error: `is too long (at most ${LIMITS.reasonChars} characters)` });

export const caseIdSchema = z
  .string()
  .max(LIMITS.caseIdChars, { error: `is too long (at most ${LIMITS.caseIdChars} characters)` })
  .regex(/^[A-Za-z0-9._:-]+$/, { error: 'may only contain letters, digits and . _ : -' });

export const ttlSchema = z
  .number()
  .int()
  .min(LIMITS.ttlMinSeconds, { error: 'must be at least 1m' })
  .max(LIMITS.ttlMaxSeconds, { error: 'must be at most 30d' });

export const requestRefSchema = z
  .string()
  .transform((s) => s.toUpperCase())
  .refine((s) => REF_PATTERN.test(s), {
    error: (iss) => `${quoted(iss.input)} is not a request reference such as R-7K3QXM`,
  });

const refOrUuidSchema = z
  .string()
  .refine((s) => REF_PATTERN.test(s.toUpperCase()) || UUID_PATTERN.test(s), {
    error: (iss) =>
      `${quoted(iss.input)} is neither a request reference (R-7K3QXM) nor a delivery id (a UUID)`,
  })
  .transform((s) => (REF_PATTERN.test(s.toUpperCase()) ? s.toUpperCase() : s.toLowerCase()));

export const roleSchema = z
  .string()
  .transform((r) => (r.toLowerCase() === 'ar' ? 'active_response' : r.toLowerCase()))
  .pipe(
    z.enum(ROLES, {
      error: (iss) => `${quoted(iss.input)} is not a role (active_response|ar, approver, admin)`,
    }),
  );

/**
 * Hosts and the selectors `segment:<name>`, `os:<name>` and `all`; at least one of them. Hosts and segments
 * add up; `os:` narrows what the segments (or `all`) select, and alone it means `all` of that OS.
 */
const targetFields = {
  hosts: z.array(hostnameSchema).max(LIMITS.hosts, {
    error: `at most ${LIMITS.hosts} hosts per command; use segment:<name>, os:<name> or all for larger groups`,
  }),
  segments: z.array(segmentNameSchema).max(50, { error: 'at most 50 segment selectors' }),
  oses: z
    .array(
      z.enum(OSES, {
        error: (iss) =>
          `os:${String(iss.input).slice(0, 40)} is not an OS (os:linux, os:windows or os:macos)`,
      }),
    )
    .max(OSES.length)
    .optional(),
  /** Every endpoint in a segment with Active Response enabled. */
  all: z.literal(true).optional(),
};

const commonOptions = {
  reason: reasonSchema.optional(),
  caseId: caseIdSchema.optional(),
  note: reasonSchema.optional(),
  /** Delivery time-to-live for offline endpoints, in seconds. */
  ttlSeconds: ttlSchema.optional(),
};

/** An action group's staged waves: a canary first, a pace for the rest, and where failures halt it. */
export const waveFields = {
  canary: z
    .number()
    .int()
    .min(1, { error: 'must be at least 1' })
    .max(1000, { error: 'is at most 1000' })
    .optional(),
  ratePerMinute: z
    .number()
    .int()
    .min(1, { error: 'must be at least 1/min' })
    .max(100_000, { error: 'is at most 100000/min' })
    .optional(),
  haltAtPercent: z
    .number()
    .int()
    .min(1, { error: 'must be at least 1%' })
    .max(100, { error: 'is at most 100%' })
    .optional(),
};

const hasTargets = (c: { hosts: string[]; segments: string[]; oses?: string[]; all?: true }) =>
  c.hosts.length + c.segments.length + (c.oses?.length ?? 0) > 0 || c.all === true;
const targetsMsg = { error: 'name at least one host, segment:<name>, os:<name> or all', path: ['hosts'] };

export const isolateSchema = z
  .object({
    kind: z.literal('isolate'),
    ...targetFields,
    ...commonOptions,
    ...waveFields,
    reason: reasonSchema,
  })
  .refine(hasTargets, targetsMsg);
export const unisolateSchema = z
  .object({
    kind: z.literal('unisolate'),
    ...targetFields,
    ...commonOptions,
    ...waveFields,
    reason: reasonSchema,
  })
  .refine(hasTargets, targetsMsg);
export const killSchema = z
  .object({
    kind: z.literal('kill'),
    host: hostnameSchema,
    pid: z
      .number()
      .int()
      .positive()
      .max(2 ** 32)
      .optional(),
    processName: processNameSchema.optional(),
    ...commonOptions,
    reason: reasonSchema,
  })
  .refine((c) => (c.pid === undefined) !== (c.processName === undefined), {
    error: 'give either a pid or a process name',
    path: ['pid'],
  });
export const fetchSchema = z.object({
  kind: z.literal('fetch'),
  host: hostnameSchema,
  path: absolutePathSchema,
  ...commonOptions,
});
export const putSchema = z.object({
  kind: z.literal('put'),
  host: hostnameSchema,
  /** A library file's name, id or SHA-256 (see `files`). */
  fileRef: z.string().min(1).max(255),
  destPath: absolutePathSchema,
  ...commonOptions,
  reason: reasonSchema,
});
export const runSchema = z
  .object({
    kind: z.literal('run'),
    script: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, { error: 'is not a script name' }),
    ...targetFields,
    params: z
      .record(
        scriptArgNameSchema,
        z.string().refine((v) => Buffer.byteLength(v) <= LIMITS.paramValueBytes, {
          error: `a parameter value is at most ${LIMITS.paramValueBytes} bytes`,
        }),
      )
      .refine((p) => Object.keys(p).length <= LIMITS.params, {
        error: `at most ${LIMITS.params} parameters`,
      }),
    ...commonOptions,
    ...waveFields,
  })
  .refine(hasTargets, targetsMsg);

export const processesSchema = z
  .object({
    kind: z.literal('processes'),
    ...targetFields,
    match: processNameSchema.optional(),
    ...commonOptions,
    ...waveFields,
  })
  .refine(hasTargets, targetsMsg);

/** Chat commands that become requests for endpoint actions (the catalogue's actions, in chat form). */
export const ACTION_KINDS = ['isolate', 'unisolate', 'kill', 'fetch', 'put', 'run', 'processes'] as const;
export type ActionKind = (typeof ACTION_KINDS)[number];

export const actionCommandSchema = z.discriminatedUnion('kind', [
  isolateSchema,
  unisolateSchema,
  killSchema,
  fetchSchema,
  putSchema,
  runSchema,
  processesSchema,
]);

export const commandSchema = z.discriminatedUnion('kind', [
  isolateSchema,
  unisolateSchema,
  killSchema,
  fetchSchema,
  putSchema,
  runSchema,
  processesSchema,
  z.object({
    kind: z.literal('session'),
    action: z.enum(['start', 'stop']),
    host: hostnameSchema,
    reason: reasonSchema.optional(),
    caseId: caseIdSchema.optional(),
  }),
  z.object({ kind: z.literal('status'), ref: requestRefSchema.optional() }),
  z.object({ kind: z.literal('queue'), host: hostnameSchema }),
  z.object({ kind: z.literal('resume'), ref: requestRefSchema }),
  z.object({
    kind: z.literal('groups'),
    mine: z.boolean().optional(),
    state: z
      .enum(GROUP_STATES, { error: 'is not a group state (canary, running, halted, cancelled, finished)' })
      .optional(),
  }),
  z.object({ kind: z.literal('cancel'), target: refOrUuidSchema, reason: reasonSchema.optional() }),
  z.object({
    kind: z.literal('grant'),
    username: z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, { error: 'is not a username' }),
    role: roleSchema,
    reason: reasonSchema.optional(),
  }),
  z.object({
    kind: z.literal('revoke'),
    username: z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, { error: 'is not a username' }),
    role: roleSchema,
    reason: reasonSchema.optional(),
  }),
  z.object({ kind: z.literal('audit'), subject: z.string().min(1).max(253).optional() }),
  z.object({ kind: z.literal('help'), topic: z.string().max(32).optional() }),
  z.object({ kind: z.literal('approve'), ref: requestRefSchema }),
  z.object({ kind: z.literal('deny'), ref: requestRefSchema, reason: reasonSchema.optional() }),
  z.object({ kind: z.literal('download'), fileRef: z.string().min(1).max(128) }),
  z.object({ kind: z.literal('files') }),
  z.object({ kind: z.literal('scripts') }),
  z.object({ kind: z.literal('history') }),
  z.object({ kind: z.literal('upload') }),
]);

export type Command = z.infer<typeof commandSchema>;
export type ActionCommand = z.infer<typeof actionCommandSchema>;
export type CommandKind = Command['kind'];

export function isActionCommand(c: Command): c is ActionCommand {
  return (ACTION_KINDS as readonly string[]).includes(c.kind);
}
