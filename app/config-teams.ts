// The Microsoft Teams part of the one configuration schema (app/config.ts spreads it in). Teams is on when
// the bot's Entra app id, secret and tenant are all set; the rest overrides Microsoft's endpoints for a
// sovereign cloud or a local stand-in. Every URL the bot's secret or token travels to must be https, or
// plain http on this machine's loopback (a test stand-in): a typo must not send the secret in clear text.
import { z } from 'zod';

export const TEAMS_CLOUDS = ['Public', 'USGov', 'USGovDoD', 'China'] as const;
export type TeamsCloudName = (typeof TEAMS_CLOUDS)[number];

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** https anywhere, http only on loopback; trailing slashes dropped. */
export function isSecureOrLoopback(url: URL): boolean {
  return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK.has(url.hostname));
}

const endpointUrl = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (v === undefined || v.trim() === '') return undefined;
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      ctx.addIssue({ code: 'custom', message: `is not a URL: "${v.slice(0, 80)}"` });
      return z.NEVER;
    }
    if (!isSecureOrLoopback(url)) {
      ctx.addIssue({
        code: 'custom',
        message: 'must be an https:// URL (plain http is accepted only for localhost or 127.0.0.1)',
      });
      return z.NEVER;
    }
    return url.toString().replace(/\/+$/, '');
  });

/** Host names (or host:port) the bot may send its token to as a conversation's service URL. */
const hostList = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (v === undefined || v.trim() === '') return undefined;
    const hosts = v
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean);
    const bad = hosts.find(
      (h) => !/^[a-z0-9.-]+(:\d{1,5})?$/.test(h) && !/^\[[0-9a-f:]+\](:\d{1,5})?$/.test(h),
    );
    if (bad) {
      ctx.addIssue({
        code: 'custom',
        message: `has "${bad}", which is not a host name; expected e.g. smba.trafficmanager.net,127.0.0.1:3979`,
      });
      return z.NEVER;
    }
    return hosts;
  });

const guid = (what: string) =>
  z.string().trim().regex(GUID, `must be the ${what}, a GUID such as 00000000-0000-0000-0000-000000000000`);

export const teamsConfigShape = {
  /** The bot's Entra application (client) id: the Azure Bot's "Microsoft App ID". */
  TEAMS_CLIENT_ID: guid('Entra application (client) id').optional(),
  TEAMS_CLIENT_SECRET: z.string().min(1).max(1024).optional(),
  /** The Entra tenant the single-tenant bot is registered in. */
  TEAMS_TENANT_ID: guid('Entra directory (tenant) id').optional(),
  TEAMS_CLOUD: z
    .string()
    .default('Public')
    .transform((v, ctx) => {
      const name = TEAMS_CLOUDS.find((c) => c.toLowerCase() === v.trim().toLowerCase());
      if (!name) {
        ctx.addIssue({ code: 'custom', message: `must be one of ${TEAMS_CLOUDS.join(', ')}, got "${v}"` });
        return z.NEVER;
      }
      return name;
    }),
  /** Entra login endpoint; the bot's client-credentials grant goes to `<this>/<tenant>/oauth2/v2.0/token`. */
  TEAMS_LOGIN_ENDPOINT: endpointUrl,
  /** Bot Framework OpenID metadata; the signing keys of inbound activities are read from its `/keys`. */
  TEAMS_OPENID_METADATA_URL: endpointUrl,
  /** The `iss` of inbound Bot Framework tokens. */
  TEAMS_TOKEN_ISSUER: z.string().min(1).max(300).optional(),
  /** Service URL for messages no inbound activity told us where to send (the audit conversation). */
  TEAMS_SERVICE_URL: endpointUrl,
  /** Extra hosts accepted as a conversation's service URL (the cloud's own are always accepted). */
  TEAMS_SERVICE_URL_HOSTS: hostList,
  /** Conversation id of a Teams channel that receives the signed audit checkpoints. */
  TEAMS_AUDIT_CONVERSATION: z
    .string()
    .trim()
    .regex(/^19:[^\s|;]{1,200}$/, 'must be a channel conversation id such as 19:abc…@thread.tacv2')
    .optional(),
};

type TeamsInput = {
  TEAMS_CLIENT_ID?: string;
  TEAMS_CLIENT_SECRET?: string;
  TEAMS_TENANT_ID?: string;
  TEAMS_CLOUD: TeamsCloudName;
  TEAMS_SERVICE_URL?: string;
  TEAMS_AUDIT_CONVERSATION?: string;
};

const TRIO = ['TEAMS_CLIENT_ID', 'TEAMS_CLIENT_SECRET', 'TEAMS_TENANT_ID'] as const;

/** Half a Teams configuration is a mistake: name what is missing rather than silently leaving Teams off. */
export function refineTeams(c: TeamsInput, ctx: z.RefinementCtx): void {
  const set = TRIO.filter((k) => c[k]);
  if (set.length > 0 && set.length < TRIO.length) {
    const missing = TRIO.filter((k) => !c[k]);
    ctx.addIssue({
      code: 'custom',
      path: [missing[0]!],
      message: `is missing: Teams needs ${TRIO.join(', ')} together (${set.join(', ')} ${set.length === 1 ? 'is' : 'are'} set)`,
    });
  }
  if (c.TEAMS_AUDIT_CONVERSATION && set.length < TRIO.length) {
    ctx.addIssue({
      code: 'custom',
      path: ['TEAMS_AUDIT_CONVERSATION'],
      message: `is set but Teams is not configured; set ${TRIO.join(', ')} too`,
    });
  }
  if (c.TEAMS_CLOUD === 'China' && set.length === TRIO.length && !c.TEAMS_SERVICE_URL) {
    ctx.addIssue({
      code: 'custom',
      path: ['TEAMS_SERVICE_URL'],
      message: 'is needed with TEAMS_CLOUD=China (there is no built-in service URL for that cloud)',
    });
  }
}

export const teamsEnabled = (c: TeamsInput) => TRIO.every((k) => Boolean(c[k]));
