// The one public Fastify instance: the step-up pages, the Slack and Teams endpoints, /healthz, and /metrics
// only for a scraper holding METRICS_TOKEN (the metrics listener in app/metrics-http.ts serves it otherwise).
// Built as a plain function so tests call `app.inject()` on exactly what production serves.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Registry } from 'prom-client';
import { isAppError } from '../bot/errors.ts';
import type { Config } from './config.ts';
import { httpLogSerializers, ScrubbingLogController } from './http-logging.ts';
import { observeHttpLatency, type PublicMetricsAccess, registerPublicMetrics } from './metrics-http.ts';

/** Server timeouts in milliseconds (see httpOptionsFromConfig for what each one cuts). */
export interface HttpTimeouts {
  /** Whole request (headers and body) must arrive within this. */
  requestTimeout: number;
  headersTimeout: number;
  keepAliveTimeout: number;
  /** Socket with no traffic at all. */
  connectionTimeout: number;
}

export interface HttpAppOptions {
  logger?: FastifyServerOptions['loggerInstance'] | boolean;
  /** Answer /healthz: each check resolves when its dependency answers (e.g. `database`). */
  healthChecks?: Record<string, () => Promise<void>>;
  /** Request latency is observed into it; /metrics is served here only with `publicMetrics`. */
  metrics?: Registry;
  /** Serves /metrics on this listener to a caller with the bearer token (METRICS_TOKEN). */
  publicMetrics?: PublicMetricsAccess;
  /** Fastify's trustProxy: which proxies' X-Forwarded-For gives the client address (rate limits, audit). */
  trustProxy?: boolean | number | string[];
  bodyLimit?: number;
  timeouts?: Partial<HttpTimeouts>;
}

export const DEFAULT_TIMEOUTS: HttpTimeouts = {
  requestTimeout: 30_000,
  headersTimeout: 10_000,
  keepAliveTimeout: 5_000,
  connectionTimeout: 60_000,
};

/** A dependency check that does not answer within this counts as down, so /healthz itself never hangs. */
const HEALTH_CHECK_TIMEOUT_MS = 3_000;

/** The HTTP server settings from config (durations there are in seconds). */
export function httpOptionsFromConfig(
  config: Config,
): Pick<HttpAppOptions, 'trustProxy' | 'bodyLimit' | 'timeouts'> {
  return {
    trustProxy: config.TRUST_PROXY,
    bodyLimit: config.HTTP_BODY_LIMIT,
    timeouts: {
      requestTimeout: config.HTTP_REQUEST_TIMEOUT * 1000,
      headersTimeout: config.HTTP_HEADERS_TIMEOUT * 1000,
      keepAliveTimeout: config.HTTP_KEEPALIVE_TIMEOUT * 1000,
      connectionTimeout: config.HTTP_CONNECTION_TIMEOUT * 1000,
    },
  };
}

/** Fastify takes a hop count at run time but not in its types; this is the function proxy-addr makes of one. */
function trustProxyOption(v: HttpAppOptions['trustProxy']) {
  if (typeof v !== 'number') return v ?? false;
  return (_addr: string, hop: number) => hop < v;
}

export function buildHttpApp(opts: HttpAppOptions = {}): FastifyInstance {
  const t = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
  const logger = typeof opts.logger === 'object' ? opts.logger : undefined;
  const app = Fastify({
    // A child logger whose serializers take link tokens out of URLs (see http-logging.ts).
    loggerInstance: logger?.child({}, { serializers: httpLogSerializers }),
    logger: typeof opts.logger === 'boolean' ? opts.logger : undefined,
    logController: new ScrubbingLogController(),
    trustProxy: trustProxyOption(opts.trustProxy),
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    // Node 20 takes the request and header timeouts only when they are given as the server is created
    // (Fastify sets requestTimeout afterwards, which that version ignores), and checks them every
    // connectionsCheckingInterval (30 s by default, so a 30 s timeout could take a minute to bite).
    http: {
      requestTimeout: t.requestTimeout,
      headersTimeout: t.headersTimeout,
      connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(t.headersTimeout / 4))),
    },
    requestTimeout: t.requestTimeout,
    keepAliveTimeout: t.keepAliveTimeout,
    connectionTimeout: t.connectionTimeout,
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

  // Says which dependency is down (never why: the page is public, the reason goes to the log).
  app.get('/healthz', async (req, reply) => {
    const checks: Record<string, 'ok' | 'down'> = {};
    await Promise.all(
      Object.entries(opts.healthChecks ?? {}).map(async ([name, check]) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            check(),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error('no answer in time')), HEALTH_CHECK_TIMEOUT_MS);
            }),
          ]);
          checks[name] = 'ok';
        } catch (err) {
          checks[name] = 'down';
          req.log.warn({ dependency: name, err }, 'health check failed');
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    const down = Object.keys(checks).filter((k) => checks[k] === 'down');
    if (down.length) reply.status(503);
    return { status: down.length ? 'unavailable' : 'ok', checks, ...(down.length ? { down } : {}) };
  });

  if (opts.metrics && opts.publicMetrics) registerPublicMetrics(app, opts.metrics, opts.publicMetrics);
  return app;
}
