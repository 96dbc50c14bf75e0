// Queries for action requests, their approvals and delivery counts. Every method takes the db or an open
// transaction; state changes are guarded with `where state = <expected>` on top of the row lock.
import { randomInt } from 'node:crypto';
import { and, asc, count, desc, eq, inArray, lte } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionRequests, approvals, deliveries, type RequestState, users } from '../../db/schema.ts';

export type RequestRow = typeof actionRequests.$inferSelect;
export type NewRequestRow = typeof actionRequests.$inferInsert;
export type ApprovalRow = typeof approvals.$inferSelect;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** `R-` + 6 Crockford base32 characters from a CSPRNG: about a billion refs, checked for uniqueness on insert. */
export function newRef(): string {
  let s = 'R-';
  for (let i = 0; i < 6; i++) s += CROCKFORD[randomInt(32)];
  return s;
}

function whereIdOrRef(idOrRef: string) {
  return UUID.test(idOrRef)
    ? eq(actionRequests.id, idOrRef.toLowerCase())
    : eq(actionRequests.ref, idOrRef.toUpperCase());
}

export function isUuid(s: string): boolean {
  return UUID.test(s);
}

export async function findRequest(db: DbOrTx, idOrRef: string): Promise<RequestRow | null> {
  const [row] = await db.select().from(actionRequests).where(whereIdOrRef(idOrRef));
  return row ?? null;
}

/** Locks the request row until the transaction ends, so concurrent decisions queue behind each other. */
export async function lockRequest(tx: DbOrTx, idOrRef: string): Promise<RequestRow | null> {
  const [row] = await tx.select().from(actionRequests).where(whereIdOrRef(idOrRef)).for('update');
  return row ?? null;
}

/** Inserts with a fresh ref, retrying on the (rare) ref collision rather than failing the request. */
export async function insertRequest(tx: DbOrTx, values: Omit<NewRequestRow, 'ref'>): Promise<RequestRow> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const [row] = await tx
      .insert(actionRequests)
      .values({ ...values, ref: newRef() })
      .onConflictDoNothing({ target: actionRequests.ref })
      .returning();
    if (row) return row;
  }
  throw new Error('could not allocate a unique request ref');
}

/** Moves a request from `from` to `to`; returns null (and changes nothing) when it is no longer in `from`. */
export async function updateState(
  tx: DbOrTx,
  id: string,
  from: RequestState,
  to: RequestState,
  now: Date,
  extra: Partial<NewRequestRow> = {},
): Promise<RequestRow | null> {
  const [row] = await tx
    .update(actionRequests)
    .set({ ...extra, state: to, updatedAt: now })
    .where(and(eq(actionRequests.id, id), eq(actionRequests.state, from)))
    .returning();
  return row ?? null;
}

export interface ApprovalWithName extends ApprovalRow {
  approverName: string;
}

export async function approvalsFor(db: DbOrTx, requestIds: string[]): Promise<ApprovalWithName[]> {
  if (!requestIds.length) return [];
  const rows = await db
    .select({ a: approvals, approverName: users.displayName })
    .from(approvals)
    .innerJoin(users, eq(users.id, approvals.approverId))
    .where(inArray(approvals.requestId, requestIds))
    .orderBy(asc(approvals.createdAt), asc(approvals.id));
  return rows.map((r) => ({ ...r.a, approverName: r.approverName }));
}

/** Inserts one decision; returns null when this approver already decided (unique per approver per request). */
export async function insertApproval(
  tx: DbOrTx,
  values: typeof approvals.$inferInsert,
): Promise<ApprovalRow | null> {
  const [row] = await tx
    .insert(approvals)
    .values(values)
    .onConflictDoNothing({ target: [approvals.requestId, approvals.approverId] })
    .returning();
  return row ?? null;
}

export async function deliveryCounts(
  db: DbOrTx,
  requestIds: string[],
): Promise<Map<string, Record<string, number>>> {
  const out = new Map<string, Record<string, number>>();
  if (!requestIds.length) return out;
  const rows = await db
    .select({ requestId: deliveries.requestId, state: deliveries.state, n: count() })
    .from(deliveries)
    .where(inArray(deliveries.requestId, requestIds))
    .groupBy(deliveries.requestId, deliveries.state);
  for (const r of rows) {
    const m = out.get(r.requestId) ?? {};
    m[r.state] = Number(r.n);
    out.set(r.requestId, m);
  }
  return out;
}

export async function userNames(db: DbOrTx, ids: string[]): Promise<Map<string, string>> {
  if (!ids.length) return new Map();
  const rows = await db
    .select({ id: users.id, name: users.displayName })
    .from(users)
    .where(inArray(users.id, [...new Set(ids)]));
  return new Map(rows.map((r) => [r.id, r.name]));
}

export async function requestsForUser(db: DbOrTx, userId: string, limit: number): Promise<RequestRow[]> {
  return db
    .select()
    .from(actionRequests)
    .where(eq(actionRequests.requesterId, userId))
    .orderBy(desc(actionRequests.createdAt), desc(actionRequests.ref))
    .limit(limit);
}

/** Ids of undecided requests whose approval TTL has run out. */
export async function staleRequestIds(db: DbOrTx, now: Date, limit = 500): Promise<string[]> {
  const rows = await db
    .select({ id: actionRequests.id })
    .from(actionRequests)
    .where(
      and(
        inArray(actionRequests.state, ['requested', 'pending_approval']),
        lte(actionRequests.approvalExpiresAt, now),
      ),
    )
    .orderBy(asc(actionRequests.approvalExpiresAt))
    .limit(limit);
  return rows.map((r) => r.id);
}

export async function setChatMessage(
  db: DbOrTx,
  id: string,
  ref: { platform: RequestRow['chatPlatform']; channelId: string; messageId: string; threadId: string },
): Promise<void> {
  await db
    .update(actionRequests)
    .set({
      chatPlatform: ref.platform,
      chatChannelId: ref.channelId,
      chatMessageId: ref.messageId,
      chatThreadId: ref.threadId,
    })
    .where(eq(actionRequests.id, id));
}
