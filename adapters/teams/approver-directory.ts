// Who gets the Approve/Deny view of a card: the people holding the approver role whose Teams identity is
// linked, minus the requester and anyone who already decided. Their `29:` ids go into the card's
// `refresh.userIds` (Teams asks for their view automatically), and a refresh is answered with buttons only
// for them. This only decides what a card shows; a click is re-checked in full by the core.
import type { RequestView } from '../../bot/ports.ts';
import { MAX_REFRESH_USERS } from './cards.ts';
import type { ConversationTarget } from './connector.ts';
import type { TimerPort } from './outbound-gate.ts';
import type { TeamsIdentity } from './teams-identity.ts';

export interface LinkedApprover {
  userId: string;
  tenantId: string;
  /** Entra object id. */
  chatUserId: string;
}

/** How many member lookups run at once when a card's approvers are not known yet. */
const LOOKUPS_AT_ONCE = 4;

export function createApproverDirectory(deps: {
  /** Linked Teams identities of users holding the approver role. */
  list: () => Promise<LinkedApprover[]>;
  identity: TeamsIdentity;
  timers: TimerPort;
  /** How long the list is reused; role grants are rare and a click is checked anyway. Default 60 s. */
  ttlMs?: number;
}) {
  const ttl = deps.ttlMs ?? 60_000;
  let cached: { at: number; byAad: Map<string, string> } | undefined;
  let loading: Promise<Map<string, string>> | undefined;

  async function approvers(): Promise<Map<string, string>> {
    if (cached && deps.timers.now() - cached.at < ttl) return cached.byAad;
    loading ??= deps
      .list()
      .then((rows) => {
        const byAad = new Map(rows.map((r) => [r.chatUserId.toLowerCase(), r.userId]));
        cached = { at: deps.timers.now(), byAad };
        return byAad;
      })
      .finally(() => {
        loading = undefined;
      });
    return loading;
  }

  /** Approvers (platform user ids, by Entra object id) who may still decide `view`. */
  async function deciders(view: RequestView): Promise<Map<string, string>> {
    if (view.state !== 'pending_approval') return new Map();
    const decided = new Set(view.approvals.map((a) => a.approverId).filter(Boolean));
    const out = new Map<string, string>();
    for (const [aad, userId] of await approvers()) {
      if (userId !== view.requester.id && !decided.has(userId)) out.set(aad, userId);
    }
    return out;
  }

  return {
    /** The `29:` ids for `refresh.userIds` of `view`'s card in `target` (members of it only, at most 60). */
    async refreshUserIds(target: ConversationTarget, hostTenant: string | undefined, view: RequestView) {
      const aads = [...(await deciders(view)).keys()];
      const ids: string[] = [];
      for (let i = 0; i < aads.length && ids.length < MAX_REFRESH_USERS; i += LOOKUPS_AT_ONCE) {
        const batch = aads.slice(i, i + LOOKUPS_AT_ONCE);
        const found = await Promise.all(
          batch.map((aad) => deps.identity.mriOf(target, hostTenant, aad).catch(() => null)),
        );
        for (const mri of found) if (mri) ids.push(mri);
      }
      return ids.slice(0, MAX_REFRESH_USERS);
    },

    /** Whether the person with Entra object id `aad` is offered Approve and Deny on `view`. */
    async mayDecide(aad: string | undefined, view: RequestView): Promise<boolean> {
      return Boolean(aad && (await deciders(view)).has(aad.toLowerCase()));
    },
  };
}

export type ApproverDirectory = ReturnType<typeof createApproverDirectory>;
