// Queries for action groups: the group row beside its request, and where its progress message lives.
import { and, eq, isNull, ne } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionGroups, type GroupState } from '../../db/schema.ts';
import type { ChatMessageRef } from '../ports.ts';

export type GroupRow = typeof actionGroups.$inferSelect;
export type NewGroupRow = typeof actionGroups.$inferInsert;

export async function findGroup(db: DbOrTx, requestId: string): Promise<GroupRow | null> {
  const [row] = await db.select().from(actionGroups).where(eq(actionGroups.requestId, requestId));
  return row ?? null;
}

export async function lockGroup(tx: DbOrTx, requestId: string): Promise<GroupRow | null> {
  const [row] = await tx
    .select()
    .from(actionGroups)
    .where(eq(actionGroups.requestId, requestId))
    .for('update');
  return row ?? null;
}

/** The group row, created with `values` when the request has none yet. */
export async function ensureGroup(tx: DbOrTx, values: NewGroupRow): Promise<GroupRow> {
  await tx.insert(actionGroups).values(values).onConflictDoNothing({ target: actionGroups.requestId });
  return (await findGroup(tx, values.requestId))!;
}

export function progressRefOf(g: GroupRow): ChatMessageRef | null {
  if (!g.progressPlatform || !g.progressChannelId || !g.progressMessageId) return null;
  return {
    platform: g.progressPlatform,
    channelId: g.progressChannelId,
    messageId: g.progressMessageId,
    threadId: g.progressThreadId ?? g.progressMessageId,
  };
}

/** Moves a group to `state` (a cancel); a request without a group changes nothing. */
export async function setGroupState(db: DbOrTx, requestId: string, state: GroupState, at: Date) {
  await db.update(actionGroups).set({ state, updatedAt: at }).where(eq(actionGroups.requestId, requestId));
}

/** Every delivery of the group is final: it is finished, unless someone cancelled it. */
export async function finishGroup(db: DbOrTx, requestId: string, at: Date) {
  await db
    .update(actionGroups)
    .set({ state: 'finished', updatedAt: at })
    .where(and(eq(actionGroups.requestId, requestId), ne(actionGroups.state, 'cancelled')));
}

/** Records the progress message once; false when another process posted one first. */
export async function setProgressMessage(
  db: DbOrTx,
  requestId: string,
  ref: ChatMessageRef,
  at: Date,
): Promise<boolean> {
  const rows = await db
    .update(actionGroups)
    .set({
      progressPlatform: ref.platform,
      progressChannelId: ref.channelId,
      progressMessageId: ref.messageId,
      progressThreadId: ref.threadId,
      progressEditedAt: at,
    })
    .where(and(eq(actionGroups.requestId, requestId), isNull(actionGroups.progressMessageId)))
    .returning({ id: actionGroups.requestId });
  return rows.length > 0;
}
