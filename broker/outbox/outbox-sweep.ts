// The backstop behind the NOTIFY wake-ups. A NOTIFY sent while a broker's LISTEN session is down (a database
// restart, a cut connection) is lost, and nothing else would send that work until the agent reconnects. So
// each broker also looks for queued deliveries on a timer, and after its LISTEN session comes back.
import { eq } from 'drizzle-orm';
import type { Db } from '../../db/client.ts';
import { deliveries } from '../../db/schema.ts';

/**
 * Endpoints that have deliveries nobody has sent yet. Cheap enough to run every few seconds: it reads the
 * partial index of pending deliveries (`deliveries_endpoint_pending`), which holds only open work.
 */
export async function endpointsWithQueued(db: Db): Promise<string[]> {
  const rows = await db
    .selectDistinct({ endpointId: deliveries.endpointId })
    .from(deliveries)
    .where(eq(deliveries.state, 'queued'));
  return rows.map((r) => r.endpointId);
}
