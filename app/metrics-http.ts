// Metrics over HTTP: request latency of the web app, the private metrics listener (METRICS_HOST and
// METRICS_PORT, loopback by default), and /metrics on the public web listener for a scraper that presents
// METRICS_TOKEN. Without the token the public listener has no /metrics at all.
import { createHash, timingSafeEqual } from 'node:crypto';
import rateLimit from '@fastify/rate-limit';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { Histogram, type Registry } from 'prom-client';
import type { AuditService } from '../bot/audit/audit-service.ts';

const HTTP_METRIC = 'ar_http_request_duration_seconds';
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * Observes every response of `app` into `ar_http_request_duration_seconds{method,route,status_class}`.
 * The route label is Fastify's route pattern (`/stepup/:token`), never the URL: step-up and download URLs
 * carry secret tokens, and raw URLs would also make the label set unbounded. Unknown paths share one label.
 */
export function observeHttpLatency(app: FastifyInstance, registry: Registry): void {
  const histogram =
    (registry.getSingleMetric(HTTP_METRIC) as Histogram<'method' | 'route' | 'status_class'> | undefined) ??
    new Histogram({
      name: HTTP_METRIC,
      help: 'HTTP request latency of the web listener, by method, route pattern and status class',
      labelNames: ['method', 'route', 'status_class'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
  app.addHook('onResponse', async (req, reply) => {
    histogram.observe(
      {
        method: METHODS.has(req.method) ? req.method : 'OTHER',
        route: req.routeOptions.url ?? 'unmatched',
        status_class: `${Math.floor(reply.statusCode / 100)}xx`,
      },
      reply.elapsedTime / 1000,
    );
  });
}

async function sendMetrics(registry: Registry, reply: FastifyReply) {
  const text = await registry.metrics();
  return reply.header('content-type', registry.contentType).header('cache-control', 'no-store').send(text);
}

/**
 * The private metrics listener: /metrics and nothing else. It has no token of its own; it is meant for a
 * loopback or internal interface, which is why METRICS_HOST defaults to 127.0.0.1.
 */
export function buildMetricsApp(registry: Registry): FastifyInstance {
  const app = Fastify({ logger: false });
  app.get('/metrics', async (_req, reply) => sendMetrics(registry, reply));
  return app;
}

/** True when an `Authorization: Bearer …` header carries `token`. Both sides are hashed to one length first. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const given = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1] ?? '';
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(token)) && given.length > 0;
}

export interface PublicMetricsAccess {
  token: string;
  /** Called for each refused scrape (no or wrong token), e.g. to audit it. Must not throw. */
  onRefused?: (refusal: { sourceIp: string; reason: 'token_missing' | 'token_wrong' }) => Promise<void>;
  /** Scrape attempts per minute and IP before 429 (default 60; a scraper needs a few). */
  perMinute?: number;
}

/**
 * /metrics on the public web app, for a caller with the bearer token; refusals are rate-limited. Registered
 * as a plugin, so it is in place once the app is ready.
 */
export function registerPublicMetrics(
  app: FastifyInstance,
  registry: Registry,
  access: PublicMetricsAccess,
): void {
  app.register(async (scope) => {
    await scope.register(rateLimit, { global: false });
    scope.get(
      '/metrics',
      { config: { rateLimit: { max: access.perMinute ?? 60, timeWindow: 60_000 } } },
      async (req, reply) => {
        const header = req.headers.authorization;
        if (!bearerMatches(header, access.token)) {
          await access.onRefused?.({ sourceIp: req.ip, reason: header ? 'token_wrong' : 'token_missing' });
          return reply.status(401).header('www-authenticate', 'Bearer realm="metrics"').send({
            error: 'metrics.unauthorized',
            message: 'Metrics need "Authorization: Bearer <METRICS_TOKEN>", or scrape the metrics listener.',
          });
        }
        return sendMetrics(registry, reply);
      },
    );
  });
}

/** The public /metrics access for METRICS_TOKEN, with each refusal audited; none without a token. */
export function publicMetricsAccess(
  token: string | undefined,
  audit: Pick<AuditService, 'append'>,
): PublicMetricsAccess | undefined {
  if (!token) return undefined;
  return {
    token,
    async onRefused({ sourceIp, reason }) {
      await audit
        .append({
          actorType: 'anonymous',
          action: 'metrics.scrape',
          outcome: 'refused',
          details: { reason, sourceIp },
        })
        .catch(() => {});
    },
  };
}
