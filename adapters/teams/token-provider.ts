// The bot's own access tokens: the OAuth 2.0 client-credentials grant against Entra's token endpoint
// (`<login endpoint>/<tenant>/oauth2/v2.0/token`), handed to the Teams SDK through its `token` option. The
// SDK asks for a token on every outbound request and caches nothing, so this caches each scope's token until
// shortly before it expires and lets one request per scope be in flight: a burst of sends costs one grant.
// Written against plain HTTP (not MSAL, which refuses an http:// authority and needs a discovery call) so
// the same code runs against Microsoft and against a local stand-in.
import { z } from 'zod';
import type { Logger } from '../../bot/ports.ts';

export interface TokenProviderConfig {
  /** e.g. https://login.microsoftonline.com (no trailing slash). */
  loginEndpoint: string;
  tenantId: string;
  clientId: string;
  clientSecret: string;
}

export interface TokenProviderDeps {
  config: TokenProviderConfig;
  logger: Logger;
  /** Milliseconds since the epoch; injected so tests can walk a token to its expiry. */
  nowMs?: () => number;
  /** How long one grant may take before it counts as failed. */
  timeoutMs?: number;
}

/** Entra's answer to the grant; anything else is refused. */
const grantAnswer = z.object({
  token_type: z.string().max(40),
  access_token: z.string().min(1).max(20_000),
  expires_in: z.coerce
    .number()
    .int()
    .positive()
    .max(7 * 24 * 3600),
});

const grantError = z
  .object({ error: z.string().max(200), error_description: z.string().max(2000).optional() })
  .partial();

/** The grant failed; `status` is the token endpoint's HTTP status (0 when it could not be reached). */
export class TokenGrantError extends Error {
  override name = 'TokenGrantError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Refresh five minutes before expiry, or at half-life for tokens shorter than ten minutes. */
const MAX_REFRESH_MARGIN_MS = 5 * 60_000;

export function createTokenProvider(deps: TokenProviderDeps) {
  const { config, logger } = deps;
  const now = deps.nowMs ?? Date.now;
  const cache = new Map<string, { token: string; refreshAt: number }>();
  const inflight = new Map<string, Promise<string>>();
  let grants = 0;
  const url = `${config.loginEndpoint}/${encodeURIComponent(config.tenantId)}/oauth2/v2.0/token`;

  async function grant(scope: string): Promise<string> {
    grants++;
    const startedAt = now();
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_id: config.clientId,
          client_secret: config.clientSecret,
          scope,
        }).toString(),
        signal: AbortSignal.timeout(deps.timeoutMs ?? 10_000),
      });
    } catch (err) {
      throw new TokenGrantError(
        `could not reach the Entra token endpoint ${url}: ${(err as Error).message}`,
        0,
      );
    }
    const body: unknown = await res.json().catch(() => undefined);
    if (!res.ok) {
      const e = grantError.safeParse(body);
      const why =
        e.success && e.data.error
          ? `${e.data.error}: ${(e.data.error_description ?? '').split('\n')[0]}`
          : '';
      throw new TokenGrantError(
        `Entra refused the bot's client-credentials grant (HTTP ${res.status}${why ? `, ${why}` : ''}); check TEAMS_CLIENT_ID, TEAMS_CLIENT_SECRET and TEAMS_TENANT_ID`,
        res.status,
      );
    }
    const parsed = grantAnswer.safeParse(body);
    if (!parsed.success || parsed.data.token_type.toLowerCase() !== 'bearer') {
      throw new TokenGrantError(
        'the Entra token endpoint answered without a bearer access token',
        res.status,
      );
    }
    const lifetimeMs = parsed.data.expires_in * 1000;
    const margin = Math.min(MAX_REFRESH_MARGIN_MS, lifetimeMs / 2);
    cache.set(scope, { token: parsed.data.access_token, refreshAt: startedAt + lifetimeMs - margin });
    logger.debug({ scope, expiresInS: parsed.data.expires_in }, 'obtained a Teams bot token');
    return parsed.data.access_token;
  }

  return {
    /**
     * A bearer token for `scope`. Concurrent callers share one grant; a cached token is returned until its
     * refresh time. A failed grant is not cached: the next call tries again.
     */
    token(scope: string | string[]): Promise<string> {
      const s = Array.isArray(scope) ? scope.join(' ') : scope;
      const hit = cache.get(s);
      if (hit && now() < hit.refreshAt) return Promise.resolve(hit.token);
      let p = inflight.get(s);
      if (!p) {
        p = grant(s).finally(() => inflight.delete(s));
        inflight.set(s, p);
      }
      return p;
    },
    /** How many grants were requested so far (metrics and tests). */
    grants: () => grants,
  };
}

export type TokenProvider = ReturnType<typeof createTokenProvider>;
