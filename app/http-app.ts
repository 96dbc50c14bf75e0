// The one Fastify instance: the step-up pages, the Slack and Teams endpoints, /healthz and /metrics.
// Built as a plain function so tests call `app.inject()` on exactly what production serves.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { isAppError } from '../bot/errors.ts';

export interface HttpAppOptions {
  logger?: FastifyServerOptions['loggerInstance'] | boolean;
  /** Answers /healthz: resolves when the database answers. */
  healthCheck?: () => Promise<void>;
  metrics?: Registry;
  /** Trust X-Forwarded-For from a reverse proxy (source IPs in the audit log). */
  trustProxy?: boolean;
  bodyLimit?: number;
}

export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
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

  if (opts.metrics) {
    const registry = opts.metrics;
    app.get('/metrics', async (_req, reply) => {
      reply.header('content-type', registry.contentType);
      return registry.metrics();
    });
  }
  return app;
}
