// Device segments and their Active Response switch. Turning the switch on or off is a security-relevant
// change, so each change is audited with who made it.
import { asc, eq } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.ts';
import { segments } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { BadRequest, Conflict, NotFound } from '../errors.ts';
import type { Clock } from '../ports.ts';

const segmentName = z
  .string()
  .trim()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'use 1 to 63 letters, digits, dot, underscore or hyphen');

export type SegmentRow = typeof segments.$inferSelect;

export function createSegmentService(deps: { db: Db; audit: AuditService; clock: Clock }) {
  const { db, audit, clock } = deps;

  function parseName(name: string): string {
    const res = segmentName.safeParse(name);
    if (!res.success)
      throw new BadRequest(
        'segment.bad_name',
        `Segment name "${name.slice(0, 80)}": ${res.error.issues[0]?.message}.`,
      );
    return res.data;
  }

  async function setEnabled(name: string, enabled: boolean, actorId?: string | null): Promise<SegmentRow> {
    const n = parseName(name);
    return db.transaction(async (tx) => {
      const [row] = await tx.select().from(segments).where(eq(segments.name, n)).for('update');
      if (!row)
        throw new NotFound('segment.not_found', `No segment called "${n}". Create it with: segment add ${n}`);
      const [updated] = await tx
        .update(segments)
        .set({ activeResponseEnabled: enabled, updatedAt: clock.now() })
        .where(eq(segments.id, row.id))
        .returning();
      await audit.append(
        {
          actorType: actorId ? 'user' : 'system',
          actorId: actorId ?? 'cli',
          action: enabled ? 'segment.enabled' : 'segment.disabled',
          outcome: 'ok',
          details: { segment: n, was: row.activeResponseEnabled },
        },
        tx,
      );
      return updated!;
    });
  }

  return {
    async create(input: { name: string; enabled?: boolean; actorId?: string | null }): Promise<SegmentRow> {
      const name = parseName(input.name);
      return db.transaction(async (tx) => {
        const [row] = await tx
          .insert(segments)
          .values({ name, activeResponseEnabled: Boolean(input.enabled) })
          .onConflictDoNothing()
          .returning();
        if (!row) throw new Conflict('segment.exists', `A segment called "${name}" already exists.`);
        await audit.append(
          {
            actorType: input.actorId ? 'user' : 'system',
            actorId: input.actorId ?? 'cli',
            action: 'segment.created',
            outcome: 'ok',
            details: { segment: name, activeResponseEnabled: row.activeResponseEnabled },
          },
          tx,
        );
        return row;
      });
    },
    enable: (name: string, actorId?: string | null) => setEnabled(name, true, actorId),
    disable: (name: string, actorId?: string | null) => setEnabled(name, false, actorId),
    list: (): Promise<SegmentRow[]> => db.select().from(segments).orderBy(asc(segments.name)),
    async get(name: string): Promise<SegmentRow> {
      const [row] = await db
        .select()
        .from(segments)
        .where(eq(segments.name, parseName(name)));
      if (!row) throw new NotFound('segment.not_found', `No segment called "${name}".`);
      return row;
    },
  };
}

export type SegmentService = ReturnType<typeof createSegmentService>;
