// Presence: which broker holds which agent, and what the agent said about itself on hello.
import { eq, inArray, sql } from 'drizzle-orm';
import type { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import { endpoints } from '../../db/schema.ts';
import type { helloFrame } from '../../protocol/frames.ts';

/** Sets endpoints' isolation flags (endpoint id → isolated) in one statement, in the caller's transaction. */
export async function setIsolationFlags(tx: DbOrTx, flags: Map<string, boolean>, now: Date) {
  if (!flags.size) return;
  const rows = [...flags].map(([id, isolated]) => ({ id, isolated }));
  await tx
    .update(endpoints)
    .set({ isolated: sql`f.isolated`, isolationChangedAt: now })
    .from(sql`jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as f(id uuid, isolated boolean)`)
    .where(sql`${endpoints.id} = f.id`);
}

export function createEndpointPresence(deps: { db: Db; brokerId: string }) {
  const { db, brokerId } = deps;
  return {
    /** Looks up many fingerprints in one query (handshakes arrive in bursts after a broker restart). */
    async byFingerprints(fingerprints: string[]) {
      const rows = await db
        .select({
          id: endpoints.id,
          hostname: endpoints.hostname,
          revokedAt: endpoints.revokedAt,
          certNotAfter: endpoints.certNotAfter,
          isolated: endpoints.isolated,
          certFingerprint: endpoints.certFingerprint,
        })
        .from(endpoints)
        .where(inArray(endpoints.certFingerprint, fingerprints));
      const byFp = new Map(rows.map((r) => [r.certFingerprint, r]));
      return fingerprints.map((f) => byFp.get(f));
    },

    /**
     * Records many hellos in one statement. Each connection's own time goes in `connected_at`: `offline`
     * clears presence only when it still matches, so a batch time here would leave a gone agent "online".
     */
    async onlineMany(items: { endpointId: string; hello: z.infer<typeof helloFrame>; at: Date }[]) {
      const values = sql.join(
        items.map(
          (i) =>
            sql`(${i.endpointId}::uuid, ${i.hello.os}, ${i.hello.osVersion}, ${i.hello.agentVersion}, ${JSON.stringify(i.hello.capabilities)}::jsonb, ${i.hello.isolated}::boolean, ${i.at.toISOString()}::timestamptz)`,
        ),
        sql`, `,
      );
      await db.execute(sql`
        update ${endpoints} set
          broker_id = ${brokerId}, connected_at = v.at, last_seen_at = v.at,
          os = v.os, os_version = v.os_version, agent_version = v.agent_version,
          capabilities = array(select jsonb_array_elements_text(v.caps)), isolated = v.isolated
        from (values ${values}) as v(id, os, os_version, agent_version, caps, isolated, at)
        where ${endpoints.id} = v.id`);
    },

    /**
     * Records many ends of connections in one statement (after a network blip every agent goes at once). Only
     * clears presence this broker set on that connection, never a newer connection here or elsewhere.
     */
    async offlineMany(items: { endpointId: string; connectedAt: Date; at: Date }[]) {
      const values = sql.join(
        items.map(
          (i) =>
            sql`(${i.endpointId}::uuid, ${i.connectedAt.toISOString()}::timestamptz, ${i.at.toISOString()}::timestamptz)`,
        ),
        sql`, `,
      );
      await db.execute(sql`
        update ${endpoints} set broker_id = null, last_seen_at = v.at
        from (values ${values}) as v(id, connected_at, at)
        where ${endpoints.id} = v.id and ${endpoints.brokerId} = ${brokerId} and ${endpoints.connectedAt} = v.connected_at`);
    },

    /** Clears presence left behind by a crashed run of this broker id. */
    async clearMine() {
      await db.update(endpoints).set({ brokerId: null }).where(eq(endpoints.brokerId, brokerId));
    },
  };
}

export type EndpointPresence = ReturnType<typeof createEndpointPresence>;
