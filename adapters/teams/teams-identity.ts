// Who is speaking, in the core's terms (platform, tenant, chat user). The Entra object id comes signed in the
// activity; the tenant does not: in a shared channel `conversation.tenantId` is the host's, whoever typed.
// So each person's own tenant and role come from the connector's member lookup, cached for a few minutes
// (it is rate-limited, and a click must answer within seconds):
// - a member from another tenant (a shared channel with an MDR provider) is identified under their home
//   tenant, so they resolve only once an admin maps that tenant to an (external) organisation;
// - a B2B guest lives in the host's directory but is not in-house: they are identified under
//   `guest:<their home domain>` (from the guest account's `…_domain#EXT#@…` name), never the host tenant.
// Refusals made here (no Entra account, lookup failed) are audited like the core's identity refusals.
import { Forbidden } from '../../bot/errors.ts';
import type { ChatIdentity, Logger } from '../../bot/ports.ts';
import type { ConversationTarget, TeamsConnector } from './connector.ts';
import type { TimerPort } from './outbound-gate.ts';

export interface MemberInfo {
  /** The `29:` id, specific to this bot; what `refresh.userIds` wants. */
  mri: string;
  aadObjectId?: string;
  tenantId?: string;
  userRole?: string;
  userPrincipalName?: string;
  email?: string;
  name?: string;
}

export type IdentityRefusalHook = (info: {
  code: string;
  tenantId?: string;
  aadObjectId?: string;
}) => Promise<void>;

const CACHE_MAX = 10_000;

/** `ana_acme-mdr.com#EXT#@contoso.onmicrosoft.com` → `acme-mdr.com`; else the e-mail's domain. */
export function guestHomeDomain(m: Pick<MemberInfo, 'userPrincipalName' | 'email'>): string | undefined {
  const upn = m.userPrincipalName ?? '';
  const ext = upn.toUpperCase().indexOf('#EXT#@');
  if (ext > 0) {
    const local = upn.slice(0, ext);
    const domain = local.slice(local.lastIndexOf('_') + 1);
    if (/^[a-z0-9.-]+\.[a-z]{2,}$/i.test(domain)) return domain.toLowerCase();
  }
  const mail = m.email?.split('@')[1];
  return mail && /^[a-z0-9.-]+\.[a-z]{2,}$/i.test(mail) ? mail.toLowerCase() : undefined;
}

/**
 * The tenant key a member is identified under, or a refusal code. `hostTenant` is the conversation's.
 */
export function tenantKeyOf(
  m: Pick<MemberInfo, 'tenantId' | 'userRole' | 'userPrincipalName' | 'email'>,
  hostTenant: string | undefined,
): { tenantId: string } | { refuse: 'teams.guest_origin_unknown' | 'teams.no_tenant' | 'teams.anonymous' } {
  const role = m.userRole?.toLowerCase();
  if (role === 'anonymous') return { refuse: 'teams.anonymous' };
  if (m.tenantId && hostTenant && m.tenantId.toLowerCase() !== hostTenant.toLowerCase()) {
    return { tenantId: m.tenantId.toLowerCase() };
  }
  if (role === 'guest') {
    const domain = guestHomeDomain(m);
    return domain ? { tenantId: `guest:${domain}` } : { refuse: 'teams.guest_origin_unknown' };
  }
  const t = hostTenant ?? m.tenantId;
  return t ? { tenantId: t.toLowerCase() } : { refuse: 'teams.no_tenant' };
}

const REFUSALS: Record<string, string> = {
  'teams.no_entra_account':
    'Active Response works with Microsoft Entra (work or school) accounts only; this account has none.',
  'teams.anonymous': 'Anonymous meeting participants cannot use Active Response.',
  'teams.guest_origin_unknown':
    'You are a guest in this tenant, and Teams did not say which organisation you come from, so Active Response cannot tell who you are. Ask a platform admin.',
  'teams.no_tenant': 'Teams did not say which tenant this conversation belongs to; nothing was done.',
  'teams.identity_unavailable':
    'Teams did not confirm who you are just now (the member lookup failed); nothing was done. Try again in a minute.',
};

export function createTeamsIdentity(deps: {
  connector: TeamsConnector;
  timers: TimerPort;
  logger: Logger;
  /** How long a member lookup is trusted (their tenant and guest status). Default 10 minutes. */
  ttlMs?: number;
  onRefused?: IdentityRefusalHook;
}) {
  const ttl = deps.ttlMs ?? 10 * 60_000;
  /** aad → member info, per host tenant (the same person is a guest in one tenant, a member in another). */
  const members = new Map<string, { info: MemberInfo | null; at: number }>();
  /** aad → 29: id, learned from every activity: the id is the same in every conversation with this bot. */
  const mris = new Map<string, string>();

  function remember<K, V>(map: Map<K, V>, key: K, value: V) {
    map.delete(key);
    map.set(key, value);
    if (map.size > CACHE_MAX) map.delete(map.keys().next().value as K);
  }

  async function member(
    target: ConversationTarget,
    host: string,
    memberId: string,
    aad?: string,
    teamId?: string,
  ) {
    const key = `${host}|${(aad ?? memberId).toLowerCase()}`;
    const hit = members.get(key);
    if (hit && deps.timers.now() - hit.at < ttl) return hit.info;
    // The channel's own roster first (a shared channel's external members are there, not in the team's);
    // a channel the connector does not look members up in falls back to its team.
    let found = await deps.connector.member(target, memberId);
    if (!found && teamId && teamId !== target.conversationId) {
      found = await deps.connector.member(
        { serviceUrl: target.serviceUrl, conversationId: teamId },
        memberId,
      );
    }
    const info: MemberInfo | null = found
      ? {
          mri: found.id,
          aadObjectId: found.aadObjectId,
          tenantId: found.tenantId,
          userRole: found.userRole,
          userPrincipalName: found.userPrincipalName,
          email: found.email,
          name: found.name,
        }
      : null;
    remember(members, key, { info, at: deps.timers.now() });
    if (info?.aadObjectId) remember(mris, info.aadObjectId.toLowerCase(), info.mri);
    return info;
  }

  async function refuse(code: string, ctx: { tenantId?: string; aadObjectId?: string }): Promise<never> {
    await deps
      .onRefused?.({ code, ...ctx })
      .catch((err) => deps.logger.error({ err }, 'could not audit a refusal'));
    throw new Forbidden(code, REFUSALS[code] ?? 'Active Response cannot tell who you are.');
  }

  return {
    /** Records that `aad` is `mri` (every inbound activity says so, signed). */
    learn(aad: string | undefined, mri: string) {
      if (aad && mri.startsWith('29:')) remember(mris, aad.toLowerCase(), mri);
    },

    /**
     * The speaker as the core knows identities. Throws Forbidden (audited) when they cannot be identified;
     * the message says why in plain words.
     */
    async identify(a: {
      target: ConversationTarget;
      hostTenant?: string;
      /** The channel's team, for a roster lookup the channel itself does not answer. */
      teamId?: string;
      from: { id: string; aadObjectId?: string; name?: string };
    }): Promise<ChatIdentity> {
      const aad = a.from.aadObjectId?.toLowerCase();
      if (!aad) return refuse('teams.no_entra_account', { tenantId: a.hostTenant });
      let info: MemberInfo | null;
      try {
        info = await member(a.target, a.hostTenant ?? '-', a.from.id, aad, a.teamId);
      } catch (err) {
        deps.logger.warn({ err: (err as Error).message }, 'Teams member lookup failed');
        return refuse('teams.identity_unavailable', { tenantId: a.hostTenant, aadObjectId: aad });
      }
      if (!info) return refuse('teams.identity_unavailable', { tenantId: a.hostTenant, aadObjectId: aad });
      const key = tenantKeyOf(info, a.hostTenant);
      if ('refuse' in key) return refuse(key.refuse, { tenantId: a.hostTenant, aadObjectId: aad });
      return {
        platform: 'teams',
        tenantId: key.tenantId,
        chatUserId: aad,
        displayName: a.from.name ?? info.name,
      };
    },

    /** The `29:` id of the person with Entra object id `aad` in `target`'s conversation; null if not there. */
    async mriOf(
      target: ConversationTarget,
      hostTenant: string | undefined,
      aad: string,
    ): Promise<string | null> {
      const known = mris.get(aad.toLowerCase());
      if (known) return known;
      const info = await member(target, hostTenant ?? '-', aad, aad);
      return info?.mri ?? null;
    },
  };
}

export type TeamsIdentity = ReturnType<typeof createTeamsIdentity>;
