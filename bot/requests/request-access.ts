// Who a request belongs to, read for the access rules in policy-rules.ts (cancel, evidence downloads) and for
// keeping an external organisation's users to their own organisation's requests (status, audit, history).
import { and, eq, inArray } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionRequests, approvals, files, users } from '../../db/schema.ts';
import { Forbidden } from '../errors.ts';
import type { RequestParties } from '../policy/policy-rules.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import type { RequestRow } from './request-dal.ts';

/** The request's requester and the people who approved it; `row` is read (or locked) by the caller. */
export async function partiesOf(
  db: DbOrTx,
  row: Pick<RequestRow, 'id' | 'ref' | 'requesterId' | 'requesterExternal'>,
): Promise<RequestParties> {
  const rows = await db
    .select({ id: approvals.approverId })
    .from(approvals)
    .where(and(eq(approvals.requestId, row.id), eq(approvals.decision, 'approve')));
  return {
    ref: row.ref,
    requesterId: row.requesterId,
    requesterExternal: row.requesterExternal,
    approverIds: rows.map((r) => r.id),
  };
}

/** A fetched evidence file with the parties of the request that fetched it (null when it has none). */
export async function evidenceWithParties(db: DbOrTx, fileId: string) {
  const [file] = await db.select().from(files).where(eq(files.id, fileId)).limit(1);
  if (file?.kind !== 'fetched') return undefined;
  if (!file.requestId) return { file, parties: null };
  const [row] = await db.select().from(actionRequests).where(eq(actionRequests.id, file.requestId));
  return { file, parties: row ? await partiesOf(db, row) : null };
}

/** Request id → the organisation of its requester, for the given ids. */
export async function requestOrgs(db: DbOrTx, requestIds: string[]): Promise<Map<string, string>> {
  if (!requestIds.length) return new Map();
  const rows = await db
    .select({ id: actionRequests.id, orgId: users.orgId })
    .from(actionRequests)
    .innerJoin(users, eq(users.id, actionRequests.requesterId))
    .where(inArray(actionRequests.id, requestIds));
  return new Map(rows.map((r) => [r.id, r.orgId]));
}

/**
 * The organisation `viewer` is limited to when reading requests and the audit log: an external
 * organisation's members see their own organisation's requests only; in-house people see everything
 * (undefined).
 */
export function visibleOrgOf(viewer: Pick<ResolvedUser, 'external' | 'orgId'>): string | undefined {
  return viewer.external ? viewer.orgId : undefined;
}

/** Throws Forbidden 'request.other_org' when `viewer` may not see the request `requestId`. */
export async function requireVisibleRequest(
  db: DbOrTx,
  viewer: ResolvedUser,
  request: { id: string; ref: string },
): Promise<void> {
  const org = visibleOrgOf(viewer);
  if (!org) return;
  const owner = (await requestOrgs(db, [request.id])).get(request.id);
  if (owner !== org) {
    throw new Forbidden(
      'request.other_org',
      `${request.ref} is not one of your organisation's requests, so it is not shown to you.`,
    );
  }
}
