// The composition root: config, logger, database, services, the HTTP server (step-up pages, Slack, health,
// metrics) and the agent broker, with a graceful shutdown. `npm start` runs this.
import { join } from 'node:path';
import pino from 'pino';
import { ConfigError, loadConfig, resolveSecretKey } from './app/config.ts';
import { buildHttpApp, createMetricsRegistry } from './app/http-app.ts';
import { createPlatform } from './app/platform.ts';
import { attachSurfaces } from './app/surfaces.ts';
import { systemClock } from './bot/ports.ts';
import { createBroker } from './broker/broker.ts';
import { createLocalFileStore } from './broker/files/local-file-store.ts';
import { openDatabase } from './db/client.ts';
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
  const secretKey = resolveSecretKey(config);
  const database = await openDatabase({
    url: config.DATABASE_URL,
    migrationUrl: config.DATABASE_MIGRATION_URL,
    dataDir: config.DATA_DIR,
  });
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
  const fileStore = createLocalFileStore(join(config.DATA_DIR, 'files'));

  const http = buildHttpApp({
    logger,
    metrics,
    healthCheck: async () => void (await database.db.execute('select 1')),
  });
  const surfaces = await attachSurfaces({ http, platform, config, logger, fileStore, database });
  // After the surfaces, so the first checkpoint already reaches the Slack audit channel.
  await platform.checkpointer.start();

  const broker = createBroker({
    db: database,
    audit: platform.audit,
    clock,
    logger,
    fileStore,
    config: {
      host: config.BROKER_HOST,
      port: config.BROKER_PORT,
      brokerId: config.BROKER_ID,
      publicHost: config.BROKER_PUBLIC_HOST,
      dataDir: config.DATA_DIR,
      maxFileBytes: config.MAX_FILE_BYTES,
    },
  });
  const unfollow = await platform.followDeliveries();
  const brokerAddr = await broker.start();
  await http.listen({ host: config.HOST, port: config.HTTP_PORT });
  const sweeper = setInterval(
    () => void platform.sweep().catch((err) => logger.error({ err }, 'sweep failed')),
    30_000,
  );
  logger.info(
    {
      http: `http://${config.HOST}:${config.HTTP_PORT}`,
      publicUrl: config.PUBLIC_URL,
      broker: brokerAddr,
      slack: config.slackEnabled,
    },
    'active response platform up',
  );

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    clearInterval(sweeper);
    await http.close().catch(() => {});
    // Before the surfaces close and the database goes: the last head gets signed and posted.
    await platform.checkpointer.stop().catch(() => {});
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
  console.error(err);
  process.exit(1);
});
