// The broker's own metrics: agents connected to this process, and how long deliveries take from the first
// send to the agent's result. Both are known only here (connections live in this process; the result time
// is recorded here), so the broker feeds them rather than the database gauges in app/metrics.ts.
import { Gauge, Histogram, type Registry } from 'prom-client';
import type { DeliveryRow } from './outbox/outbox-repo.ts';

export interface BrokerMetrics {
  /** Observes a delivery that just reached `succeeded` or `failed`. */
  deliveryFinished(row: DeliveryRow): void;
}

export function createBrokerMetrics(registry: Registry, connected: () => number): BrokerMetrics {
  new Gauge({
    name: 'ar_agents_connected',
    help: 'Agents with a live, ready connection to this broker',
    registers: [registry],
    collect() {
      this.set(connected());
    },
  });
  const latency = new Histogram({
    name: 'ar_delivery_duration_seconds',
    help: 'Time from a delivery first being sent to its result, by action and final state',
    labelNames: ['action', 'state'] as const,
    // From a dry run (well under a second) to a script or file fetch that runs for many minutes.
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registers: [registry],
  });
  return {
    deliveryFinished(row) {
      if (!row.sentAt || !row.finishedAt) return;
      const seconds = Math.max(0, (row.finishedAt.getTime() - row.sentAt.getTime()) / 1000);
      latency.observe({ action: row.action, state: row.state }, seconds);
    },
  };
}
