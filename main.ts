import pino from 'pino';
import { ConfigError, loadConfig, resolveSecretKey } from './app/config.ts';
import { buildHttpApp, httpOptionsFromConfig } from './app/http-app.ts';
import { createMetricsRegistry } from './app/metrics.ts';
import { buildMetricsApp, publicMetricsAccess } from './app/metrics-http.ts';
import { createPlatform } from './app/platform.ts';
import { nextSteps, startBanner } from './app/start-message.ts';
import { describeStartupError, secureDataDir, startAdminSocket, startDatabase } from './app/start-up.ts';
import { attachSurfaces } from './app/surfaces.ts';
import { systemClock } from './bot/ports.ts';
import { createBroker } from './broker/broker.ts';
import { auditLogExposure } from './db/roles.ts';

/** Never let a secret reach a log line, whatever object a caller hands the logger. */
export const LOG_REDACT = [
  'password',
  '*.password',
  'totpCode',
  '*.totpCode',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-slack-signature"]',
];

async function main() {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      process.exit(2);
    }
    throw e;
  }
  const logger = pino({ level: config.LOG_LEVEL, redact: { paths: LOG_REDACT, censor: '[redacted]' } });
  secureDataDir(config, logger);
  const secretKey = resolveSecretKey(config);
  const database = await startDatabase(config, logger, 'server');
  logger.info(
    { driver: database.driver, dataDir: database.driver === 'pglite' ? config.DATA_DIR : undefined },
    'database ready',
  );

  if (config.DATABASE_URL) {
    const exposure = await auditLogExposure(config.DATABASE_URL);
    if (exposure) logger.warn({ hint: 'npm run cli -- db setup-roles --app-role ar_app' }, exposure);
  }

  const clock = systemClock;
  const metrics = config.METRICS ? createMetricsRegistry() : undefined;
  const platform = createPlatform({ config, database, logger, clock, secretKey, metrics });
  await platform.installBuiltinScripts();
  const closeAdmin = await startAdminSocket({ config, database, platform, logger });
  const fileStore = platform.fileStore;

  const http = buildHttpApp({
    logger,
    metrics,
    ...httpOptionsFromConfig(config),
    publicMetrics: publicMetricsAccess(config.METRICS_TOKEN, platform.audit),
    healthChecks: { database: async () => void (await database.db.execute('select 1')) },
  });
  const surfaces = await attachSurfaces({ http, platform, config, logger, fileStore, database });
  // After the surfaces, so the first checkpoint already reaches the Slack or Teams audit channel.
  await platform.checkpointer.start();
  // After the surfaces too: it sends through their adapters, starting with what an earlier process left.
  void platform.sender.start();

  const broker = createBroker({
    db: database,
    audit: platform.audit,
    clock,
    logger,
    fileStore,
    metrics,
    config: {
      host: config.BROKER_HOST,
      port: config.BROKER_PORT,
      brokerId: config.BROKER_ID,
      publicHost: config.BROKER_PUBLIC_HOST,
      dataDir: config.DATA_DIR,
      maxFileBytes: config.MAX_FILE_BYTES,
      heartbeatSeconds: config.BROKER_HEARTBEAT,
      outboxSweepMs: config.OUTBOX_SWEEP * 1000,
    },
  });
  const unfollow = await platform.followDeliveries();
  const brokerAddr = await broker.start();
  await http.listen({ host: config.HOST, port: config.HTTP_PORT });
  const metricsHttp = metrics && buildMetricsApp(metrics);
  await metricsHttp?.listen({ host: config.METRICS_HOST, port: config.METRICS_PORT });
  const sweeper = setInterval(
    () => void platform.sweep().catch((err) => logger.error({ err }, 'sweep failed')),
    30_000,
  );
  // The backstop for delivery events lost while the database connection was down (broker/outbox/outbox-sweep.ts
  // is the brokers' half).
  const catchUp = setInterval(
    () => void platform.catchUpDeliveries().catch((err) => logger.error({ err }, 'delivery catch-up failed')),
    config.OUTBOX_SWEEP * 1000,
  );
  const facts = {
    publicUrl: config.PUBLIC_URL,
    slackEnabled: config.slackEnabled,
    teamsEnabled: config.teamsEnabled,
    embedded: database.driver === 'pglite',
  };
  logger.info(
    {
      http: `http://${config.HOST}:${config.HTTP_PORT}`,
      publicUrl: config.PUBLIC_URL,
      broker: brokerAddr,
      metrics: metricsHttp ? `http://${config.METRICS_HOST}:${config.METRICS_PORT}/metrics` : undefined,
      slack: config.slackEnabled,
      teams: config.teamsEnabled,
    },
    `active response platform up. Next: ${nextSteps(facts).join(' ')}`,
  );
  if (process.stdout.isTTY) process.stdout.write(`${startBanner(facts)}\n`);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    clearInterval(sweeper);
    clearInterval(catchUp);
    await http.close().catch(() => {});
    // Before the surfaces close and the database goes: the last head gets signed and posted.
    await platform.checkpointer.stop().catch(() => {});
    await closeAdmin().catch(() => {});
    await metricsHttp?.close().catch(() => {});
    // What is not sent yet stays in the chat outbox for the next start.
    await platform.sender.stop().catch(() => {});
    await surfaces.close().catch(() => {});
    await broker.stop().catch(() => {});
    await unfollow().catch(() => {});
    await database.close().catch(() => {});
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

main().catch((err) => {
  // A setting that only turns out bad once read (AUDIT_SIGNING_KEY's file) stops the start like any other.
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(2);
  }
  console.error(describeStartupError(err));
  process.exit(1);
});
