// Chat platforms deliver some events more than once (Slack retries after 3 s, two copies of an app in one
// shared channel each receive the event). The first process to claim an event key handles it; the rest
// see `false` and do nothing.
import { lt } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { processedEvents } from '../db/schema.ts';

export async function claimEvent(db: DbOrTx, key: string): Promise<boolean> {
  const rows = await db
    .insert(processedEvents)
    .values({ key: key.slice(0, 300) })
    .onConflictDoNothing()
    .returning({ key: processedEvents.key });
  return rows.length === 1;
}

/** Forget keys older than `before`; retries arrive within minutes, so a day is plenty. */
export async function pruneEvents(db: DbOrTx, before: Date): Promise<void> {
  await db.delete(processedEvents).where(lt(processedEvents.createdAt, before));
}
