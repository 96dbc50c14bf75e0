// Prometheus metrics read from the database at scrape time. The database is the one place every process
// writes to (the web process, standalone brokers, the admin CLI), so gauges that count rows and counters that
// follow the audit log show what happened anywhere, not only what passed through this process.
import { count, gt, inArray, max, sql } from 'drizzle-orm';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Db } from '../db/client.ts';
import {
  actionRequests,
  auditLog,
  CHAT_OUTBOX_STATES,
  chatOutbox,
  DELIVERY_STATES,
  deliveries,
  REQUEST_STATES,
} from '../db/schema.ts';

/** A registry with Node's default process metrics (CPU, memory, event loop lag, GC, handles). */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** States whose deliveries still wait for an agent: the outbox depth. */
const OUTBOX_STATES = ['queued', 'sent'] as const;

/** Step-up refusal reasons are code-made words; anything else is folded so a label can never explode. */
const REASON_LABEL = /^[a-z0-9_.]{1,40}$/;

/**
 * Registers the database-backed metrics on `registry`:
 * - `ar_deliveries{state}` and `ar_requests{state}`: rows by state (grouped COUNT at scrape time);
 * - `ar_outbox_depth`: deliveries queued or sent but not yet acknowledged;
 * - `ar_chat_outbox{state}`: chat messages and card edits by state (`pending` and `sending` not yet
 *   accepted by the platform, `failed` given up after their retries);
 * - `ar_audit_events_total{action,outcome}`: records in the audit log, whichever process wrote them;
 * - `ar_stepup_outcomes_total{outcome,reason}`: the `stepup.attempt` records among them.
 *
 * The two counters equal what the append-only audit log holds, so they survive restarts and include what the
 * CLI or a standalone broker wrote. They follow the log by `seq` (gap-free, assigned in commit order under
 * the audit lock): the first read counts the whole log (started here, in the background), and each scrape
 * after that reads only the records appended since the previous one.
 */
export function registerDatabaseMetrics(registry: Registry, db: Db): void {
  new Gauge({
    name: 'ar_deliveries',
    help: 'Deliveries in the outbox by state (rows in the database)',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const rows = await db
        .select({ state: deliveries.state, n: count() })
        .from(deliveries)
        .groupBy(deliveries.state);
      this.reset();
      for (const state of DELIVERY_STATES) this.set({ state }, 0);
      for (const r of rows) this.set({ state: r.state }, r.n);
    },
  });

  new Gauge({
    name: 'ar_outbox_depth',
    help: 'Deliveries waiting for an agent: queued, or sent and not yet acknowledged',
    registers: [registry],
    async collect() {
      const [row] = await db
        .select({ n: count() })
        .from(deliveries)
        .where(inArray(deliveries.state, [...OUTBOX_STATES]));
      this.set(row?.n ?? 0);
    },
  });

  new Gauge({
    name: 'ar_chat_outbox',
    help: 'Chat messages and card edits in the chat outbox by state (rows in the database)',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const rows = await db
        .select({ state: chatOutbox.state, n: count() })
        .from(chatOutbox)
        .groupBy(chatOutbox.state);
      this.reset();
      for (const state of CHAT_OUTBOX_STATES) this.set({ state }, 0);
      for (const r of rows) this.set({ state: r.state }, r.n);
    },
  });

  new Gauge({
    name: 'ar_requests',
    help: 'Action requests by state (rows in the database)',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const rows = await db
        .select({ state: actionRequests.state, n: count() })
        .from(actionRequests)
        .groupBy(actionRequests.state);
      this.reset();
      for (const state of REQUEST_STATES) this.set({ state }, 0);
      for (const r of rows) this.set({ state: r.state }, r.n);
    },
  });

  const events = new Counter({
    name: 'ar_audit_events_total',
    help: 'Records in the audit log (written by any process), by action and outcome',
    labelNames: ['action', 'outcome'] as const,
    registers: [registry],
    collect: () => tail.catchUp(),
  });
  const stepups = new Counter({
    name: 'ar_stepup_outcomes_total',
    help: 'Step-up attempts (password + TOTP) in the audit log, by outcome and reason',
    labelNames: ['outcome', 'reason'] as const,
    registers: [registry],
    collect: () => tail.catchUp(),
  });
  const tail = followAuditLog(db, (r) => {
    events.inc({ action: r.action, outcome: r.outcome }, r.n);
    if (r.action === 'stepup.attempt') {
      const reason = r.reason && REASON_LABEL.test(r.reason) ? r.reason : 'other';
      stepups.inc({ outcome: r.outcome, reason }, r.n);
    }
  });
  // The first read covers the whole log; begin it now rather than inside the first scrape.
  tail.catchUp().catch(() => {});
}

interface AuditGroup {
  action: string;
  outcome: string;
  reason: string | null;
  n: number;
}

/**
 * Reads the audit records appended since the last call, grouped, and hands each group to `onGroup`.
 * Concurrent callers share one read; a failed read is retried from the same place by the next call.
 */
function followAuditLog(db: Db, onGroup: (g: AuditGroup) => void) {
  let last = 0;
  let running: Promise<void> | undefined;

  async function step(): Promise<void> {
    const reason = sql<
      string | null
    >`case when ${auditLog.action} = 'stepup.attempt' then ${auditLog.details}->>'reason' end`;
    const rows = await db
      .select({
        action: auditLog.action,
        outcome: auditLog.outcome,
        reason,
        n: count(),
        upTo: max(auditLog.seq),
      })
      .from(auditLog)
      .where(gt(auditLog.seq, last))
      .groupBy(auditLog.action, auditLog.outcome, reason);
    for (const r of rows) {
      onGroup(r);
      last = Math.max(last, Number(r.upTo ?? 0));
    }
  }

  return {
    catchUp(): Promise<void> {
      running ??= step().finally(() => {
        running = undefined;
      });
      return running;
    },
  };
}
