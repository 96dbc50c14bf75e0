// Which Microsoft cloud the bot lives in: the SDK's CloudEnvironment (login endpoint, Bot Framework token
// issuer and signing keys, scopes), the service URL for messages no conversation told us where to send, and
// the hosts a conversation's service URL may name. The bot's token is sent to that URL, so a service URL
// read from an activity or from the database is used only when its host is on this list.
import {
  CHINA,
  type CloudEnvironment,
  PUBLIC,
  US_GOV,
  US_GOV_DOD,
  withOverrides,
} from '@microsoft/teams.api';

export type TeamsCloudName = 'Public' | 'USGov' | 'USGovDoD' | 'China';

export interface TeamsCloudConfig {
  name: TeamsCloudName;
  loginEndpoint?: string;
  openIdMetadataUrl?: string;
  tokenIssuer?: string;
  /** Default service URL; required for China. */
  serviceUrl?: string;
  /** Extra hosts (host or host:port) accepted in a service URL. */
  serviceUrlHosts?: string[];
}

export interface TeamsCloud {
  env: CloudEnvironment;
  /** Where a message goes when no inbound activity said (the audit conversation). No trailing slash. */
  defaultServiceUrl: string;
  /** True when the bot may send its token to this service URL. */
  allowsServiceUrl(url: string): boolean;
}

const BASES: Record<TeamsCloudName, { env: CloudEnvironment; serviceUrl?: string; hosts: string[] }> = {
  // GCC (moderate) tenants use the public cloud's identity with their own service host.
  Public: {
    env: PUBLIC,
    serviceUrl: 'https://smba.trafficmanager.net/teams',
    hosts: ['smba.trafficmanager.net', 'smba.infra.gcc.teams.microsoft.com'],
  },
  USGov: {
    env: US_GOV,
    serviceUrl: 'https://smba.infra.gov.teams.microsoft.us/teams',
    hosts: ['smba.infra.gov.teams.microsoft.us'],
  },
  USGovDoD: {
    env: US_GOV_DOD,
    serviceUrl: 'https://smba.infra.dod.teams.microsoft.us/teams',
    hosts: ['smba.infra.dod.teams.microsoft.us'],
  },
  China: { env: CHINA, hosts: [] },
};

/** `https://host/path/` → `https://host/path`; undefined when not an absolute http(s) URL. */
export function normaliseServiceUrl(raw: string): string | undefined {
  try {
    const url = new URL(raw);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
    if (url.username || url.password || url.search || url.hash) return undefined;
    return `${url.protocol}//${url.host.toLowerCase()}${url.pathname.replace(/\/+$/, '')}`;
  } catch {
    return undefined;
  }
}

export function resolveTeamsCloud(c: TeamsCloudConfig): TeamsCloud {
  const base = BASES[c.name];
  const env = withOverrides(base.env, {
    loginEndpoint: c.loginEndpoint,
    openIdMetadataUrl: c.openIdMetadataUrl,
    tokenIssuer: c.tokenIssuer,
  });
  const defaultServiceUrl = normaliseServiceUrl(c.serviceUrl ?? base.serviceUrl ?? '');
  if (!defaultServiceUrl)
    throw new Error(`no service URL is known for the ${c.name} cloud; set TEAMS_SERVICE_URL`);
  const hosts = new Set([...base.hosts, ...(c.serviceUrlHosts ?? []), new URL(defaultServiceUrl).host]);
  const plainHttpOk = (host: string) => /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/.test(host);
  return {
    env,
    defaultServiceUrl,
    allowsServiceUrl(url: string): boolean {
      const n = normaliseServiceUrl(url);
      if (!n) return false;
      const u = new URL(n);
      if (u.protocol === 'http:' && !plainHttpOk(u.host)) return false;
      return hosts.has(u.host) || hosts.has(u.hostname);
    },
  };
}
