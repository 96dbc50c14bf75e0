// The one configuration schema. Parsed once at start; a bad value stops the process with a message that
// names the variable and says what is expected. Services receive plain values, never process.env.

import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { FAULT_POINTS } from '../bot/ports.ts';
import { refineTeams, teamsConfigShape, teamsEnabled } from './config-teams.ts';

const port = (def: number) => z.coerce.number().int().min(0).max(65535).default(def);
const positiveInt = (def: number) => z.coerce.number().int().positive().default(def);
const bool = (def: boolean) =>
  z
    .enum(['1', '0', 'true', 'false', 'yes', 'no', ''])
    .default(def ? '1' : '0')
    .transform((v) => v === '1' || v === 'true' || v === 'yes');

/** Durations like 30s, 10m, 2h, 7d. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d{1,7})\s*(s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd'];
  return n * unit;
}

const duration = (def: string) =>
  z
    .string()
    .default(def)
    .transform((v, ctx) => {
      const s = parseDuration(v);
      if (s === undefined || s <= 0) {
        ctx.addIssue({
          code: 'custom',
          message: `expected a duration such as 30s, 10m, 2h or 7d, got "${v}"`,
        });
        return z.NEVER;
      }
      return s;
    });

const postgresUrl = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (v === undefined || v.trim() === '') return undefined;
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      ctx.addIssue({
        code: 'custom',
        message: 'is not a URL; expected postgres://user:password@host:5432/database',
      });
      return z.NEVER;
    }
    if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
      ctx.addIssue({
        code: 'custom',
        message: `has scheme "${url.protocol}"; expected postgres:// or postgresql:// (unset it to use the embedded database)`,
      });
      return z.NEVER;
    }
    if (!url.hostname || url.pathname.length <= 1) {
      ctx.addIssue({
        code: 'custom',
        message: 'needs a host and a database name, e.g. postgres://host:5432/active_response',
      });
      return z.NEVER;
    }
    return v;
  });

const secretKey = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (v === undefined || v === '') return undefined;
    const buf = /^[0-9a-fA-F]{64}$/.test(v) ? Buffer.from(v, 'hex') : Buffer.from(v, 'base64');
    if (buf.length !== 32) {
      ctx.addIssue({
        code: 'custom',
        message: 'must be 32 bytes as 64 hex characters or base64 (openssl rand -hex 32)',
      });
      return z.NEVER;
    }
    return buf;
  });

/** proxy-addr's names for address ranges, accepted in TRUST_PROXY next to addresses and CIDRs. */
const PROXY_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function isAddressOrCidr(entry: string): boolean {
  if (PROXY_RANGES.has(entry)) return true;
  const [addr, bits, extra] = entry.split('/');
  const family = isIP(addr ?? '');
  if (!family || extra !== undefined) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n <= (family === 4 ? 32 : 128);
}

/**
 * Fastify's `trustProxy`: off by default (the socket's address is the client). `true` trusts any
 * X-Forwarded-For, so anyone who reaches the port directly can claim any address; prefer the proxy's
 * addresses (`10.0.0.5,10.0.1.0/24`, `loopback`) or a hop count (`1`: the nearest proxy).
 */
const trustProxy = z
  .string()
  .default('false')
  .transform((v, ctx): boolean | number | string[] => {
    const t = v.trim();
    if (t === '' || t === 'false' || t === 'no') return false;
    if (t === 'true' || t === 'yes') return true;
    if (/^\d{1,2}$/.test(t)) return Number(t);
    const list = t.split(',').map((s) => s.trim());
    const bad = list.filter((s) => !isAddressOrCidr(s));
    if (bad.length) {
      ctx.addIssue({
        code: 'custom',
        message: `has "${bad[0]}", which is not an IP address or CIDR; expected e.g. 10.0.0.5,10.0.1.0/24, loopback, a hop count such as 1, or true`,
      });
      return z.NEVER;
    }
    return list;
  });

export const configSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    DATABASE_URL: postgresUrl,
    /**
     * The owner's URL, for migrations only (and `db setup-roles`); DATABASE_URL then names the application
     * role, which may only INSERT and SELECT on the audit log (README: "PostgreSQL roles").
     */
    DATABASE_MIGRATION_URL: postgresUrl,
    DATA_DIR: z.string().min(1).default('./data'),
    HOST: z.string().min(1).default('127.0.0.1'),
    HTTP_PORT: port(8080),
    BROKER_HOST: z.string().min(1).default('0.0.0.0'),
    BROKER_PORT: port(8443),
    /** Hostname agents use to reach the broker; goes into the broker's certificate. */
    BROKER_PUBLIC_HOST: z.string().min(1).default('localhost'),
    BROKER_ID: z.string().min(1).max(100).default(`${hostname()}-${process.pid}`),
    /**
     * The broker pings every agent this often and drops one that missed a ping; agents take two silent
     * periods as a dead connection (docs/agent-protocol.md §1). Shorter finds cut connections sooner.
     */
    BROKER_HEARTBEAT: duration('30s').refine((s) => s <= 600, {
      message: 'must be at most 10m (agents take two silent periods as a dead connection)',
    }),
    /**
     * How often brokers look for queued deliveries no wake-up reached, and the platform for results not yet
     * in their thread: the backstop for notifications lost while the database connection was down.
     */
    OUTBOX_SWEEP: duration('5s').refine((s) => s <= 300, { message: 'must be at most 5m' }),
    PUBLIC_URL: z
      .url({ protocol: /^https?$/, message: 'must be an http(s) URL such as https://ar.example.com' })
      .optional(),
    SECRET_KEY: secretKey,
    STEPUP_WINDOW: duration('10m'),
    STEPUP_LINK_TTL: duration('15m'),
    APPROVAL_TTL: duration('1h'),
    DELIVERY_TTL: duration('7d'),
    LOCKOUT_THRESHOLD: positiveInt(5),
    LOCKOUT_DURATION: duration('15m'),
    BLAST_RADIUS_THRESHOLD: positiveInt(10),
    /** Read-only work (investigation scripts, process lists) on more endpoints than this needs one approval. */
    READ_ONLY_APPROVAL_ABOVE: positiveInt(50),
    MAX_FILE_BYTES: positiveInt(1024 * 1024 * 1024),
    MAX_SCRIPT_BYTES: positiveInt(1024 * 1024),
    SLACK_SIGNING_SECRET: z.string().min(1).optional(),
    SLACK_BOT_TOKEN: z.string().startsWith('xoxb-', 'must be a bot token starting with xoxb-').optional(),
    SLACK_APP_TOKEN: z
      .string()
      .startsWith('xapp-', 'must be an app-level token starting with xapp-')
      .optional(),
    SLACK_API_URL: z.url().optional(),
    /** Channel the signed audit checkpoints are posted to (channel ID such as C0123ABCD, or #name). */
    SLACK_AUDIT_CHANNEL: z
      .string()
      .regex(/^(#[a-z0-9._-]{1,80}|[CG][A-Z0-9]{6,})$/, 'must be a channel ID such as C0123ABCD or a #name')
      .optional(),
    /** PKCS#8 PEM file of the Ed25519 key that signs audit checkpoints; default: derived from SECRET_KEY. */
    AUDIT_SIGNING_KEY: z.string().min(1).optional(),
    SLACK_COMMAND: z
      .string()
      .regex(/^\/[a-z0-9_-]{1,31}$/, 'must look like /ar')
      .default('/ar'),
    ...teamsConfigShape,
    METRICS: bool(true),
    /** The metrics listener (no token): keep it on loopback or an internal interface. */
    METRICS_HOST: z.string().min(1).default('127.0.0.1'),
    METRICS_PORT: port(9464),
    /** When set, /metrics is also served on the public web listener to `Authorization: Bearer <token>`. */
    METRICS_TOKEN: z
      .string()
      .min(32, 'must be at least 32 characters (openssl rand -hex 32)')
      .max(512, 'must be at most 512 characters')
      .regex(/^\S+$/, 'must not contain spaces')
      .optional(),
    TRUST_PROXY: trustProxy,
    /** The whole request (headers and body) must arrive within this; slow senders are cut. */
    HTTP_REQUEST_TIMEOUT: duration('30s'),
    HTTP_HEADERS_TIMEOUT: duration('10s'),
    /** An idle keep-alive connection is closed after this (above a load balancer's idle timeout). */
    HTTP_KEEPALIVE_TIMEOUT: duration('5s'),
    /** A connection with no traffic at all is closed after this. */
    HTTP_CONNECTION_TIMEOUT: duration('60s'),
    HTTP_BODY_LIMIT: positiveInt(1024 * 1024),
    /** How long start-up waits for PostgreSQL before giving up. */
    DB_START_TIMEOUT: duration('2m'),
    /** Fault drills only: kill this process (SIGKILL) at the named point (README "Faults"). */
    FAULT_CRASH_AT: z.enum(FAULT_POINTS).optional(),
  })
  .superRefine((c, ctx) => {
    if (c.HTTP_HEADERS_TIMEOUT > c.HTTP_REQUEST_TIMEOUT) {
      ctx.addIssue({
        code: 'custom',
        path: ['HTTP_HEADERS_TIMEOUT'],
        message: 'must not be longer than HTTP_REQUEST_TIMEOUT (the headers are part of the request)',
      });
    }
  })
  .superRefine((c, ctx) => {
    if (c.DATABASE_MIGRATION_URL && !c.DATABASE_URL)
      ctx.addIssue({
        code: 'custom',
        path: ['DATABASE_MIGRATION_URL'],
        message: 'is set without DATABASE_URL; set DATABASE_URL to the application role’s URL as well',
      });
    if (c.SLACK_AUDIT_CHANNEL && !(c.SLACK_SIGNING_SECRET && c.SLACK_BOT_TOKEN))
      ctx.addIssue({
        code: 'custom',
        path: ['SLACK_AUDIT_CHANNEL'],
        message: 'is set but Slack is not configured; set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN too',
      });
  })
  .superRefine(refineTeams)
  .transform((c) => ({
    ...c,
    DATA_DIR: resolve(c.DATA_DIR),
    PUBLIC_URL: (c.PUBLIC_URL ?? `http://localhost:${c.HTTP_PORT}`).replace(/\/+$/, ''),
    /** Cookies get `Secure` only when the public URL is https. */
    secureCookies: (c.PUBLIC_URL ?? '').startsWith('https://'),
    slackEnabled: Boolean(c.SLACK_SIGNING_SECRET && c.SLACK_BOT_TOKEN),
    teamsEnabled: teamsEnabled(c),
  }));

export type Config = z.output<typeof configSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses the environment. Throws ConfigError naming every bad variable. Never echoes secret values. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const known = Object.keys(configSchema.in.shape);
  const input = Object.fromEntries(known.map((k) => [k, env[k] === '' ? undefined : env[k]]));
  const parsed = configSchema.safeParse(input);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(config)'} ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

/**
 * The platform secret key: SECRET_KEY when given, else DATA_DIR/secret.key, generated (mode 0600) on first
 * start. It encrypts TOTP secrets and keys token hashes, so losing it locks every user out of MFA.
 */
export function resolveSecretKey(config: Config): Buffer {
  if (config.SECRET_KEY) return config.SECRET_KEY;
  const file = join(config.DATA_DIR, 'secret.key');
  if (existsSync(file)) {
    const buf = Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
    if (buf.length !== 32)
      throw new ConfigError(`${file} does not hold a 32-byte hex key; restore it from backup`);
    return buf;
  }
  mkdirSync(config.DATA_DIR, { recursive: true });
  const key = randomBytes(32);
  writeFileSync(file, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return key;
}
