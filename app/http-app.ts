// The one public Fastify instance: the step-up pages, the Slack and Teams endpoints, /healthz, and /metrics
// only for a scraper holding METRICS_TOKEN (the metrics listener in app/metrics-http.ts serves it otherwise).
// Built as a plain function so tests call `app.inject()` on exactly what production serves.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Registry } from 'prom-client';
import { isAppError } from '../bot/errors.ts';
import { observeHttpLatency, type PublicMetricsAccess, registerPublicMetrics } from './metrics-http.ts';

export interface HttpAppOptions {
  logger?: FastifyServerOptions['loggerInstance'] | boolean;
  /** Answers /healthz: resolves when the database answers. */
  healthCheck?: () => Promise<void>;
  /** Request latency is observed into it; /metrics is served here only with `publicMetrics`. */
  metrics?: Registry;
  /** Serves /metrics on this listener to a caller with the bearer token (METRICS_TOKEN). */
  publicMetrics?: PublicMetricsAccess;
  /** Trust X-Forwarded-For from a reverse proxy (source IPs in the audit log). */
  trustProxy?: boolean;
  bodyLimit?: number;
}

export function buildHttpApp(opts: HttpAppOptions = {}): FastifyInstance {
  const app = Fastify({
    loggerInstance: typeof opts.logger === 'object' ? opts.logger : undefined,
    logger: typeof opts.logger === 'boolean' ? opts.logger : undefined,
    trustProxy: opts.trustProxy ?? false,
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    // Request ids appear in "something went wrong, reference X" so a person can find the log line.
    genReqId: () => `ref-${Math.random().toString(36).slice(2, 10)}`,
  });
  // Before any route, so every route (and the 404 handler) is timed.
  if (opts.metrics) observeHttpLatency(app, opts.metrics);

  app.setErrorHandler((err, req, reply) => {
    if (isAppError(err)) {
      reply.status(err.status).send({ error: err.code, message: err.message });
      return;
    }
    const e = err as { statusCode?: number; code?: string; message: string };
    if (e.statusCode && e.statusCode < 500) {
      reply.status(e.statusCode).send({ error: e.code ?? 'bad_request', message: e.message });
      return;
    }
    req.log.error({ err }, 'unhandled error');
    reply.status(500).send({ error: 'internal', message: `Something went wrong, reference ${req.id}` });
  });

  app.get('/healthz', async (_req, reply) => {
    try {
      await opts.healthCheck?.();
      return { status: 'ok' };
    } catch {
      reply.status(503);
      return { status: 'unavailable' };
    }
  });

  if (opts.metrics && opts.publicMetrics) registerPublicMetrics(app, opts.metrics, opts.publicMetrics);
  return app;
}
