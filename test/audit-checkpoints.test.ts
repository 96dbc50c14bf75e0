// Signed checkpoints of the audit chain on both drivers, with the real checkpoint file in a temporary
// DATA_DIR, a hand-moved clock and a hand-fired poll timer: when a checkpoint is due, what `verify` makes of
// the tail deleted after one, of a forged line, of a rewrite by someone holding the chain key, and the
// one-time switch of an old unkeyed chain to keyed hashing.
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFileCheckpointLog } from '../app/audit-anchoring.ts';
import { legacyHashRecord } from '../bot/audit/audit-chain.ts';
import { type AuditAnchorSink, type AuditCheckpoint, signCheckpoint } from '../bot/audit/audit-checkpoint.ts';
import { countAppendsFor, createAuditCheckpointer } from '../bot/audit/audit-checkpointer.ts';
import { checkpointKeysFromSecret } from '../bot/audit/audit-keys.ts';
import { createAuditService, KEYED_CHAIN_ACTION } from '../bot/audit/audit-service.ts';
import { canonicalJson } from '../bot/canonical-json.ts';
import type { Logger } from '../bot/ports.ts';
import { auditLog } from '../db/schema.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { TEST_SECRET_KEY, testChainKey } from './helpers/keys.ts';

const keys = checkpointKeysFromSecret(TEST_SECRET_KEY);

/** The poll timer, fired by the test instead of by time passing. */
function manualTimer() {
  let fn: (() => void) | undefined;
  return {
    every(_ms: number, f: () => void) {
      fn = f;
      return () => {
        fn = undefined;
      };
    },
    fire() {
      fn?.();
    },
  };
}

describe.each(drivers)('audit checkpoints on %s', (driver) => {
  let tdb: TestDatabase;
  let dir: string;
  let file: string;
  const logged: { level: string; msg?: string }[] = [];
  const logger: Logger = {
    info() {},
    debug() {},
    warn: (_o, msg) => void logged.push({ level: 'warn', msg }),
    error: (_o, msg) => void logged.push({ level: 'error', msg }),
  };

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    dir = mkdtempSync(join(tmpdir(), 'ar-checkpoints-'));
    file = join(dir, 'audit-checkpoints.jsonl');
    logged.length = 0;
  });
  afterEach(async () => {
    await tdb.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  function setup(opts: { sinks?: AuditAnchorSink[] } = {}) {
    const clock = createTestClock();
    const timer = manualTimer();
    const base = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    const log = createFileCheckpointLog(file);
    const checkpointer = createAuditCheckpointer({ audit: base, log, keys, clock, logger, timer });
    for (const s of opts.sinks ?? []) checkpointer.addSink(s);
    const audit = countAppendsFor(base, checkpointer);
    const append = (n: number) =>
      tdb.db.transaction(async (tx) => {
        for (let i = 0; i < n; i++)
          await audit.append(
            { actorType: 'system', action: 'test.event', outcome: 'ok', details: { i } },
            tx,
          );
      });
    /** One append in its own transaction: committed before the checkpointer hears of it. */
    const appendOne = () => audit.append({ actorType: 'system', action: 'test.event', outcome: 'ok' });
    const lines = (): AuditCheckpoint[] => {
      try {
        return readFileSync(file, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l));
      } catch {
        return [];
      }
    };
    const verify = async () =>
      audit.verify({ anchors: { entries: await log.readAll(), publicKey: keys.publicKey } });
    return { clock, timer, audit, checkpointer, append, appendOne, lines, verify };
  }

  /** Deletes records >= from as a superuser who disabled the trigger. */
  async function deleteFrom(from: number) {
    await tdb.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
    await tdb.db.execute(sql`delete from audit_log where seq >= ${from}`);
    await tdb.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
  }

  it('signs the head after 1,000 appended records without waiting for the minute', async () => {
    const t = setup();
    await t.checkpointer.start();
    await t.append(1);
    t.timer.fire();
    await t.checkpointer.idle();
    expect(t.lines().map((c) => c.seq)).toEqual([1]);

    await t.append(999);
    await t.checkpointer.idle();
    expect(t.lines().map((c) => c.seq)).toEqual([1]);
    await t.appendOne();
    await t.checkpointer.idle();
    expect(t.lines().map((c) => c.seq)).toEqual([1, 1001]);
    await t.checkpointer.stop();
  });

  it('signs once a minute when the head moved, and not when it stood still', async () => {
    const t = setup();
    await t.checkpointer.start();
    t.timer.fire();
    await t.checkpointer.idle();
    expect(t.lines()).toEqual([]);

    await t.append(3);
    t.timer.fire();
    await t.checkpointer.idle();
    expect(t.lines().map((c) => c.seq)).toEqual([3]);

    await t.append(2);
    t.clock.advance(59_000);
    t.timer.fire();
    await t.checkpointer.idle();
    expect(t.lines().map((c) => c.seq)).toEqual([3]);
    t.clock.advance(1_000);
    t.timer.fire();
    await t.checkpointer.idle();
    expect(t.lines().map((c) => c.seq)).toEqual([3, 5]);

    t.clock.advance(120_000);
    t.timer.fire();
    await t.checkpointer.idle();
    expect(t.lines().map((c) => c.seq)).toEqual([3, 5]);
  });

  it('writes each checkpoint as one signed JSON line in a file only its owner can read', async () => {
    const t = setup();
    await t.append(2);
    const cp = await t.checkpointer.checkpointNow();
    const [head] = await tdb.db.select().from(auditLog).where(sql`seq = 2`);
    expect(cp).toMatchObject({ seq: 2, hash: head!.hash, at: t.clock.now().toISOString() });
    expect(Object.keys(t.lines()[0]!).sort()).toEqual(['at', 'hash', 'seq', 'sig']);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    await expect(t.verify()).resolves.toMatchObject({
      ok: true,
      count: 2,
      checkpoints: 1,
      lastCheckpoint: { seq: 2 },
    });
  });

  it('posts after writing the file, retries a failed post on the next run, and a stuck sink holds up nothing', async () => {
    const posted: number[] = [];
    const waiting = new Map<number, () => void>();
    /** Resolves once the flaky sink has accepted the checkpoint for `seq`. */
    const postedSeq = (seq: number) =>
      posted.includes(seq) ? Promise.resolve() : new Promise<void>((r) => waiting.set(seq, r));
    let failNext = true;
    const flaky: AuditAnchorSink = {
      name: 'flaky',
      async postCheckpoint(cp) {
        expect(readFileSync(file, 'utf8')).toContain(cp.sig);
        if (failNext) {
          failNext = false;
          throw new Error('channel_not_found');
        }
        posted.push(cp.seq);
        waiting.get(cp.seq)?.();
      },
    };
    const stuck: AuditAnchorSink = { name: 'stuck', postCheckpoint: () => new Promise(() => {}) };
    const t = setup({ sinks: [flaky] });
    await t.append(2);
    await t.checkpointer.checkpointNow();
    await t.checkpointer.idle();
    expect(posted).toEqual([]);
    expect(logged).toContainEqual({
      level: 'warn',
      msg: expect.stringMatching(/could not post an audit checkpoint/),
    });
    await t.checkpointer.tick();
    await t.checkpointer.idle();
    expect(posted).toEqual([2]);

    // A sink that never answers holds up neither appends, nor later checkpoints, nor the other sink.
    t.checkpointer.addSink(stuck);
    await t.appendOne();
    await t.checkpointer.checkpointNow();
    await postedSeq(3);
    await t.appendOne();
    await expect(t.checkpointer.checkpointNow()).resolves.toMatchObject({ seq: 4 });
    await postedSeq(4);
    expect(t.lines().map((c) => c.seq)).toEqual([2, 3, 4]);
    expect(posted).toEqual([2, 3, 4]);
  });

  it('reports the newest records deleted after a checkpoint, with the first missing seq', async () => {
    const t = setup();
    await t.append(10);
    await t.checkpointer.checkpointNow();
    await deleteFrom(8);
    const res = await t.verify();
    expect(res).toMatchObject({ ok: false, kind: 'truncated', brokenAt: 8, count: 7 });
    expect(res.ok || res.problem).toMatch(/the newest record is 7 but the checkpoint .* covers record 10/);
  });

  it('does not sign a chain that fell behind its last checkpoint', async () => {
    const t = setup();
    await t.append(5);
    await t.checkpointer.checkpointNow();
    await deleteFrom(3);
    await t.append(1);
    await expect(t.checkpointer.checkpointNow()).resolves.toBeUndefined();
    expect(t.lines().map((c) => c.seq)).toEqual([5]);
    expect(logged.map((l) => l.msg)).toContainEqual(
      expect.stringMatching(/behind its last signed checkpoint/),
    );
  });

  it('reports a forged checkpoint line, naming the record it claims', async () => {
    const t = setup();
    await t.append(4);
    await t.checkpointer.checkpointNow();
    const other = generateKeyPairSync('ed25519').privateKey;
    const forged = signCheckpoint({ seq: 3, hash: 'f'.repeat(64) }, new Date(), other);
    appendFileSync(file, `${JSON.stringify(forged)}\n`);
    const res = await t.verify();
    expect(res).toMatchObject({ ok: false, kind: 'forged_checkpoint', brokenAt: 3 });
    expect(res.ok || res.problem).toMatch(/checkpoint for record 3 on line 2 .* bad signature/);

    // An edited genuine line fails the same way.
    const [genuine] = t.lines();
    rmSync(file);
    appendFileSync(file, `${JSON.stringify({ ...genuine, seq: 2 })}\n`);
    await expect(t.verify()).resolves.toMatchObject({ ok: false, kind: 'forged_checkpoint', brokenAt: 2 });
  });

  it('catches a rewrite by someone holding the chain key through the checkpoints, from after the last match', async () => {
    const t = setup();
    await t.append(3);
    await t.checkpointer.checkpointNow();
    await t.append(5);
    await t.checkpointer.checkpointNow();
    // Record 5 changed and 5..8 re-hashed with the real chain key: every HMAC is right again.
    await tdb.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
    const rows = await tdb.db.select().from(auditLog).orderBy(auditLog.seq);
    let prev = rows[3]!.hash;
    for (const r of rows.slice(4)) {
      const details = r.seq === 5 ? { i: 'edited' } : r.details;
      const body = canonicalJson({ ...r, at: r.at.toISOString(), details, prevHash: prev, hash: undefined });
      const hash = createHmac('sha256', testChainKey).update(body).digest('hex');
      await tdb.db.execute(
        sql`update audit_log set details = ${JSON.stringify(details)}::jsonb, prev_hash = ${prev}, hash = ${hash} where seq = ${r.seq}`,
      );
      prev = hash;
    }
    await tdb.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
    const res = await t.verify();
    expect(res).toMatchObject({ ok: false, kind: 'rewritten', brokenAt: 4, count: 3 });
    expect(res.ok || res.problem).toMatch(/record 8 does not match the checkpoint signed for it/);
  });

  describe('a chain written before hashes were keyed', () => {
    /** Rows as the previous version wrote them: plain SHA-256 over the same canonical JSON. */
    async function legacyChain(n: number) {
      let prevHash = '0'.repeat(64);
      for (let seq = 1; seq <= n; seq++) {
        const r = {
          seq,
          at: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)),
          actorType: 'system' as const,
          actorId: null,
          action: 'legacy.event',
          outcome: 'ok' as const,
          requestId: null,
          endpointId: null,
          details: { seq },
          prevHash,
        };
        const hash = legacyHashRecord(r);
        await tdb.db.insert(auditLog).values({ ...r, hash });
        prevHash = hash;
      }
    }

    it('is reported as unanchored until it is switched over', async () => {
      await legacyChain(3);
      const t = setup();
      await expect(t.verify()).resolves.toMatchObject({ ok: false, kind: 'unanchored', brokenAt: 1 });
    });

    it('is switched to keyed hashing once, with a marker record and a checkpoint that vouch for it', async () => {
      await legacyChain(3);
      const t = setup();
      await t.checkpointer.start();
      const [marker] = await tdb.db.select().from(auditLog).where(sql`seq = 4`);
      expect(marker).toMatchObject({ action: KEYED_CHAIN_ACTION, details: { legacyThrough: 3 } });
      expect(t.lines().map((c) => c.seq)).toEqual([4]);
      await t.append(2);
      await expect(t.verify()).resolves.toMatchObject({ ok: true, count: 6 });

      // A second process starting later does not switch it again.
      const again = setup();
      await again.checkpointer.start();
      expect(again.lines().map((c) => c.seq)).toEqual([4]);
      await t.checkpointer.stop();
      await again.checkpointer.stop();
    });

    it('refuses an old record edited and re-hashed after the switch', async () => {
      await legacyChain(3);
      const t = setup();
      await t.checkpointer.start();
      await tdb.db.execute(sql`alter table audit_log disable trigger audit_log_no_update_delete`);
      const [r] = await tdb.db.select().from(auditLog).where(sql`seq = 3`);
      const edited = { ...r!, details: { seq: 'edited' } };
      const hash = legacyHashRecord(edited);
      await tdb.db.execute(
        sql`update audit_log set details = '{"seq":"edited"}'::jsonb, hash = ${hash} where seq = 3`,
      );
      await tdb.db.execute(sql`alter table audit_log enable trigger audit_log_no_update_delete`);
      await expect(t.verify()).resolves.toMatchObject({ ok: false, kind: 'rewritten', brokenAt: 4 });
      await t.checkpointer.stop();
    });

    it('is not switched over when checkpoints already exist: a replaced chain stays reported', async () => {
      const t = setup();
      await t.append(3);
      await t.checkpointer.checkpointNow();
      // The whole chain replaced by plain-hash records, as an attacker without the key would.
      await deleteFrom(1);
      await legacyChain(4);
      const later = setup();
      await later.checkpointer.start();
      await expect(
        tdb.db.select().from(auditLog).where(sql`action = ${KEYED_CHAIN_ACTION}`),
      ).resolves.toEqual([]);
      const res = await later.verify();
      expect(res).toMatchObject({ ok: false, kind: 'rewritten', brokenAt: 1 });
      await later.checkpointer.stop();
    });
  });
});
