// Append-only audit log with a keyed hash chain (audit-chain.ts). Appends are serialised with a
// transaction-scoped advisory lock so two writers can never both link to the same previous record; call
// `append` with the caller's transaction so the record commits (or rolls back) together with the change it
// describes.
//
// Appends without a transaction are group-committed: they queue, and one writer per process takes every
// record queued so far, takes the lock once, reads the head once, computes the chain for the whole batch
// and inserts it in one statement. A lock, a head read and a commit per record capped appends at about 500
// records/s whatever the number of writers; a batch pays them once. Each caller still gets its own record
// back only after the batch committed.
import { and, asc, desc, eq, gt, gte, lt, lte, or, type SQL, sql } from 'drizzle-orm';
import type { Db, DbOrTx } from '../../db/client.ts';
import { auditLog } from '../../db/schema.ts';
import { type Json, jsonbSafe } from '../canonical-json.ts';
import type { Clock } from '../ports.ts';
import { GENESIS_HASH, hashKind, hashRecord, newWalkState, verifyChunk } from './audit-chain.ts';
import { orgScope } from './audit-scope.ts';
import { type CheckpointAnchors, type VerifyResult, verifyAuditChain } from './audit-verify.ts';

/** The advisory lock every append takes (exported for tests that hold it from another session). */
export const AUDIT_LOCK_KEY = 7_261_002;

/**
 * A WHERE condition that takes the append lock before its statement reads or locks any row: PostgreSQL
 * evaluates an uncorrelated subquery in a condition once, as a one-time filter ahead of the scan, and the
 * condition is always true.
 */
const lockFirst = () => sql`(select pg_advisory_xact_lock(${AUDIT_LOCK_KEY})::text) is not null`;
/** Most records one group commit writes (bounds the statement's size and the time the lock is held). */
const MAX_BATCH = 500;

export type ActorType = 'user' | 'chat' | 'agent' | 'system' | 'anonymous';
export type Outcome = 'ok' | 'refused' | 'failed' | 'error';

export interface AuditEntry {
  actorType: ActorType;
  /** User id, endpoint id, chat identity (`slack:T1:U1`) or process name. */
  actorId?: string | null;
  /** Dotted verb such as `request.created`, `stepup.attempt`, `delivery.result`. */
  action: string;
  outcome: Outcome;
  requestId?: string | null;
  endpointId?: string | null;
  details?: Record<string, unknown>;
}

export type AuditRecord = typeof auditLog.$inferSelect;

export interface AuditQuery {
  actorId?: string;
  endpointId?: string;
  requestId?: string;
  actionPrefix?: string;
  from?: Date;
  to?: Date;
  /** Records after this seq, oldest first (keyset paging forwards). */
  afterSeq?: number;
  /** Records before this seq, newest first (keyset paging backwards). */
  beforeSeq?: number;
  /** Only records a member of this organisation may read (audit-scope.ts); unset: every record. */
  visibleToOrg?: string;
  limit?: number;
}

/** The record that marks where keyed hashing starts on a chain begun before it (see sealLegacyChain). */
export const KEYED_CHAIN_ACTION = 'audit.chain.keyed';

/**
 * `chainKey` is the HMAC key of the chain (auditChainKey(secretKey)); it is required, so no code path can
 * write an unkeyed record.
 */
export function createAuditService(deps: { db: Db; clock: Clock; chainKey: Buffer }) {
  const { db, clock, chainKey } = deps;
  if (!Buffer.isBuffer(chainKey) || chainKey.length < 32)
    throw new Error('the audit chain key must be 32 bytes (auditChainKey(secretKey))');

  const readPage = (q: DbOrTx) => (fromSeq: number, limit: number) =>
    q.select().from(auditLog).where(gte(auditLog.seq, fromSeq)).orderBy(asc(auditLog.seq)).limit(limit);

  async function lastRecord(q: DbOrTx): Promise<AuditRecord | undefined> {
    const [last] = await q.select().from(auditLog).orderBy(desc(auditLog.seq)).limit(1);
    return last;
  }

  /** The stored fields of an entry, fixed when it is appended (its time is the time of the event). */
  function fieldsOf(entry: AuditEntry) {
    return {
      at: clock.now(),
      actorType: entry.actorType,
      actorId: entry.actorId ?? null,
      action: entry.action,
      outcome: entry.outcome,
      requestId: entry.requestId ?? null,
      endpointId: entry.endpointId ?? null,
      details: jsonbSafe(entry.details ?? {}),
    };
  }
  type Fields = ReturnType<typeof fieldsOf>;

  /** `batch` as records linked after `head`, each hashed with the chain key. */
  function link(batch: Fields[], head: { seq: number; hash: string }): AuditRecord[] {
    let seq = head.seq;
    let prevHash = head.hash;
    return batch.map((f) => {
      const record = { ...f, seq: ++seq, prevHash };
      prevHash = hashRecord(record, chainKey);
      return { ...record, hash: prevHash };
    });
  }

  async function readHead(q: DbOrTx): Promise<{ seq: number; hash: string }> {
    const [last] = await q
      .select({ seq: auditLog.seq, hash: auditLog.hash })
      .from(auditLog)
      .orderBy(desc(auditLog.seq))
      .limit(1);
    return { seq: last?.seq ?? 0, hash: last?.hash ?? GENESIS_HASH };
  }

  // Appends inside a caller's transaction. The first append reads the head in the statement that takes the
  // append lock, which the transaction then holds until it ends; each later one links to the record it wrote
  // last. Every insert is guarded by the head still being the record it links to, so a head that was stale
  // (the locking statement waited for the lock, and its snapshot predates the commit it waited for) writes
  // nothing: the head is then read again, under the lock, and the records linked anew. The chain never forks,
  // and an uncontended append costs two round trips, later ones in the transaction one.
  const txHeads = new WeakMap<object, { seq: number; hash: string }>();

  /** Takes the append lock (before the head is read: a one-time filter) and reads the head. */
  async function lockAndReadHead(tx: DbOrTx): Promise<{ seq: number; hash: string }> {
    const [last] = await tx
      .select({ seq: auditLog.seq, hash: auditLog.hash })
      .from(auditLog)
      .where(lockFirst())
      .orderBy(desc(auditLog.seq))
      .limit(1);
    return { seq: last?.seq ?? 0, hash: last?.hash ?? GENESIS_HASH };
  }

  /** Inserts `records` (linked after seq `after`) only if the chain's head is still `after`; false when not. */
  async function insertAfter(tx: DbOrTx, records: AuditRecord[], after: number): Promise<boolean> {
    const rows = JSON.stringify(records.map((r) => ({ ...r, at: r.at.toISOString() })));
    // The lock again (held already, so it costs nothing) keeps the statement safe on its own.
    const out = await tx.execute(sql`with l as materialized (select pg_advisory_xact_lock(${AUDIT_LOCK_KEY}))
      insert into ${auditLog} (seq, at, actor_type, actor_id, action, outcome, request_id, endpoint_id,
        details, prev_hash, hash)
      select r."seq", r."at", r."actorType", r."actorId", r."action", r."outcome", r."requestId",
        r."endpointId", r."details", r."prevHash", r."hash"
      from l, jsonb_to_recordset(${rows}::jsonb) as r("seq" bigint, "at" timestamptz, "actorType" text,
        "actorId" text, "action" text, "outcome" text, "requestId" uuid, "endpointId" uuid, "details" jsonb,
        "prevHash" text, "hash" text)
      where (select coalesce(max(seq), 0) from ${auditLog}) = ${after}
      returning seq`);
    const inserted = Array.isArray(out) ? out : (out as unknown as { rows: unknown[] }).rows;
    return inserted.length === records.length;
  }

  /** The head as `headSeen()` returned it: `seq:hash`, null for an empty chain, undefined when not read. */
  function parseSeen(seen: string | null | undefined): { seq: number; hash: string } | undefined {
    if (seen === undefined) return undefined;
    if (seen === null) return { seq: 0, hash: GENESIS_HASH };
    const [seq, hash] = seen.split(':');
    return { seq: Number(seq), hash: hash ?? '' };
  }

  async function appendAllIn(
    tx: DbOrTx,
    entries: AuditEntry[],
    seen?: string | null,
  ): Promise<AuditRecord[]> {
    if (!entries.length) return [];
    const fields = entries.map(fieldsOf);
    const head = txHeads.get(tx) ?? parseSeen(seen) ?? (await lockAndReadHead(tx));
    let records = link(fields, head);
    if (!(await insertAfter(tx, records, head.seq))) {
      // The lock is held now: this read is current, and nothing else can move the head before the insert.
      const current = await readHead(tx);
      records = link(fields, current);
      if (!(await insertAfter(tx, records, current.seq)))
        throw new Error('the audit chain head moved while the append lock was held');
    }
    const last = records[records.length - 1]!;
    txHeads.set(tx, { seq: last.seq, hash: last.hash });
    return records;
  }

  async function appendIn(tx: DbOrTx, entry: AuditEntry): Promise<AuditRecord> {
    const [record] = await appendAllIn(tx, [entry]);
    return record!;
  }

  // The group commit: callers queue, one writer drains the queue batch by batch. The writer remembers the
  // head it wrote last, so a batch is one statement (one round trip, one commit): it takes the append lock,
  // then inserts the linked records. The lock is what keeps the appends made inside callers' transactions
  // from reading a head this batch is about to move. When someone else appended meanwhile (another process,
  // or a transaction of this one), the remembered head is stale and the insert collides on the primary key
  // `seq`, which no two records can share: nothing is written, the head is read again and the batch is
  // linked anew. So the chain never forks, whatever the remembered head says.
  type Pending = { fields: Fields; resolve: (r: AuditRecord) => void; reject: (e: unknown) => void };
  let queue: Pending[] = [];
  let writing = false;
  let knownHead: { seq: number; hash: string } | undefined;

  const isSeqCollision = (e: unknown) => {
    const err = e as { code?: string; cause?: { code?: string } };
    return err?.code === '23505' || err?.cause?.code === '23505';
  };

  async function insertBatch(batch: Fields[]): Promise<AuditRecord[]> {
    for (let attempt = 1; ; attempt++) {
      knownHead ??= await readHead(db);
      const records = link(batch, knownHead);
      const rows = records.map((r) => ({ ...r, at: r.at.toISOString() }));
      try {
        // The lock comes from a CTE the insert's rows are joined with, so it is held before any row is
        // written, and released by the statement's own commit.
        await db.execute(sql`with l as materialized (select pg_advisory_xact_lock(${AUDIT_LOCK_KEY}))
          insert into ${auditLog} (seq, at, actor_type, actor_id, action, outcome, request_id, endpoint_id,
            details, prev_hash, hash)
          select r."seq", r."at", r."actorType", r."actorId", r."action", r."outcome", r."requestId",
            r."endpointId", r."details", r."prevHash", r."hash"
          from l, jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as r("seq" bigint, "at" timestamptz,
            "actorType" text, "actorId" text, "action" text, "outcome" text, "requestId" uuid,
            "endpointId" uuid, "details" jsonb, "prevHash" text, "hash" text)`);
        const last = records[records.length - 1]!;
        knownHead = { seq: last.seq, hash: last.hash };
        return records;
      } catch (err) {
        knownHead = undefined;
        if (!isSeqCollision(err) || attempt >= 50) throw err;
      }
    }
  }

  async function writeBatch(batch: Pending[]): Promise<void> {
    try {
      const rows = await insertBatch(batch.map((p) => p.fields));
      for (const [i, p] of batch.entries()) p.resolve(rows[i]!);
    } catch (err) {
      if (batch.length === 1) {
        batch[0]!.reject(err);
        return;
      }
      // One bad record must not fail the others that happened to share its batch: write each alone.
      for (const p of batch) await writeBatch([p]);
    }
  }

  async function drain(): Promise<void> {
    writing = true;
    try {
      while (queue.length) {
        const batch = queue.slice(0, MAX_BATCH);
        queue = queue.slice(batch.length);
        await writeBatch(batch);
      }
    } finally {
      writing = false;
    }
  }

  return {
    /**
     * Appends one record. Pass `tx` to commit it atomically with the change it records; without it the
     * record is written in its own transaction.
     */
    async append(entry: AuditEntry, tx?: DbOrTx): Promise<AuditRecord> {
      if (tx) return appendIn(tx, entry);
      const fields = fieldsOf(entry);
      return new Promise<AuditRecord>((resolve, reject) => {
        queue.push({ fields, resolve, reject });
        if (!writing) void drain();
      });
    },

    /**
     * Appends several records in the caller's transaction, in order, in one statement. `seen` is what
     * `headSeen()` returned in a statement of this transaction that took the lock with `lockFirst()`: the
     * append then needs no round trip to read the head.
     */
    appendAll(entries: AuditEntry[], tx: DbOrTx, seen?: string | null): Promise<AuditRecord[]> {
      return appendAllIn(tx, entries, seen);
    },

    /**
     * For the RETURNING list of a statement that takes the lock with `lockFirst()`: the chain's head as that
     * statement saw it, for `appendAll`. It is stale when the statement waited for the lock (its snapshot
     * predates the commit it waited for); the guarded insert then writes nothing and the head is read again,
     * so a stale one costs two round trips and never forks the chain.
     */
    headSeen: () =>
      sql<
        string | null
      >`(select h.seq::text || ':' || h.hash from ${auditLog} h order by h.seq desc limit 1)`,

    /**
     * A WHERE condition (always true) that takes the append lock before the statement reads or locks a
     * row. A transaction that changes rows and appends records about them puts it in its first statement:
     * one holding a row while it waits for the lock, and another holding the lock while it waits for that
     * row, would deadlock.
     */
    lockFirst,

    /**
     * Takes the append lock now, held until `tx` ends. For a transaction that changes rows the broker's outbox
     * changes after taking the lock (deliveries) and then appends: taking it first keeps the one order.
     */
    async lockNow(tx: DbOrTx): Promise<void> {
      await tx.execute(sql`select pg_advisory_xact_lock(${AUDIT_LOCK_KEY})`);
    },

    async list(q: AuditQuery = {}): Promise<AuditRecord[]> {
      const where: SQL[] = [];
      if (q.actorId) where.push(eq(auditLog.actorId, q.actorId));
      if (q.endpointId) where.push(eq(auditLog.endpointId, q.endpointId));
      if (q.requestId) where.push(eq(auditLog.requestId, q.requestId));
      // `_` and `%` in a prefix are literal characters, not LIKE wildcards.
      if (q.actionPrefix)
        where.push(sql`${auditLog.action} like ${`${q.actionPrefix.replace(/[\\%_]/g, '\\$&')}%`}`);
      if (q.from) where.push(gte(auditLog.at, q.from));
      if (q.to) where.push(lte(auditLog.at, q.to));
      if (q.afterSeq !== undefined) where.push(gt(auditLog.seq, q.afterSeq));
      if (q.beforeSeq !== undefined) where.push(lt(auditLog.seq, q.beforeSeq));
      if (q.visibleToOrg) where.push(orgScope(q.visibleToOrg));
      return db
        .select()
        .from(auditLog)
        .where(where.length ? and(...where) : undefined)
        .orderBy(q.afterSeq !== undefined ? asc(auditLog.seq) : desc(auditLog.seq))
        .limit(Math.min(q.limit ?? 100, 10_000));
    },

    /** Records touching a subject: as actor, endpoint or inside details (hostname / username). */
    async listForSubject(ids: { userId?: string; endpointId?: string }, limit = 50): Promise<AuditRecord[]> {
      const conds: SQL[] = [];
      if (ids.userId) conds.push(eq(auditLog.actorId, ids.userId));
      if (ids.endpointId) conds.push(eq(auditLog.endpointId, ids.endpointId));
      if (!conds.length) return [];
      return db
        .select()
        .from(auditLog)
        .where(or(...conds))
        .orderBy(desc(auditLog.seq))
        .limit(limit);
    },

    /**
     * Walks the whole chain in pages with the chain key and, given the signed checkpoints, checks it against
     * them. Reports OK with the count, or every problem found with the earliest affected seq first.
     */
    async verify(opts: { anchors?: CheckpointAnchors; pageSize?: number } = {}): Promise<VerifyResult> {
      return verifyAuditChain({
        chainKey,
        readPage: readPage(db),
        headSeq: async () => (await lastRecord(db))?.seq ?? 0,
        anchors: opts.anchors,
        pageSize: opts.pageSize,
      });
    },

    /** The newest record's seq and hash, and whether it carries the keyed hash (only those get signed). */
    async head(): Promise<{ seq: number; hash: string; keyed: boolean } | undefined> {
      const last = await lastRecord(db);
      if (!last) return undefined;
      const kind = hashKind({ ...last, details: last.details as Json }, chainKey);
      return { seq: last.seq, hash: last.hash, keyed: kind === 'keyed' };
    },

    /**
     * One-time upgrade of a chain written before hashes were keyed: when every stored record carries the old
     * plain SHA-256 and the chain is intact, appends an `audit.chain.keyed` record (keyed, linked to the old
     * head) and returns it; the caller then signs a checkpoint on it, which is what vouches for the old
     * records from then on. Returns `{ sealed: false }` with why when there is nothing to do (`empty`,
     * `keyed`) or the old chain is broken (`broken`, which verify reports). Runs under the append lock, so
     * only one of several starting processes seals.
     */
    async sealLegacyChain(): Promise<
      | { sealed: true; record: AuditRecord }
      | { sealed: false; why: 'empty' | 'keyed' | 'broken'; problem?: string }
    > {
      return db.transaction(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(${AUDIT_LOCK_KEY})`);
        const last = await lastRecord(tx);
        if (!last) return { sealed: false, why: 'empty' };
        const kind = hashKind({ ...last, details: last.details as Json }, chainKey);
        if (kind === 'keyed') return { sealed: false, why: 'keyed' };
        if (kind === 'neither')
          return { sealed: false, why: 'broken', problem: `the newest record ${last.seq} was altered` };
        const state = newWalkState();
        for (;;) {
          const page = await readPage(tx)(state.expectedSeq, 2000);
          // An unkeyed record after a keyed one fails here too: that is a rewrite, not an old chain.
          const res = verifyChunk(
            page.map((r) => ({ ...r, details: r.details as Json })),
            state,
            chainKey,
          );
          if (!res.ok) return { sealed: false, why: 'broken', problem: res.problem };
          if (page.length < 2000) break;
        }
        const record = await appendIn(tx, {
          actorType: 'system',
          actorId: 'audit',
          action: KEYED_CHAIN_ACTION,
          outcome: 'ok',
          details: { legacyThrough: last.seq, legacyHead: last.hash, hash: 'hmac-sha256' },
        });
        return { sealed: true, record };
      });
    },

    /** Streams every record in order, for `audit export`. */
    async *exportAll(pageSize = 2000): AsyncGenerator<AuditRecord> {
      let after = 0;
      for (;;) {
        const page = await db
          .select()
          .from(auditLog)
          .where(gt(auditLog.seq, after))
          .orderBy(asc(auditLog.seq))
          .limit(pageSize);
        yield* page;
        if (page.length < pageSize) return;
        after = page[page.length - 1]!.seq;
      }
    },
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
