// Runs just a broker from the environment (app/config.ts): for scale-out next to the main process, and for
// the multi-broker and crash tests. SIGTERM/SIGINT stop it gracefully.
import { join } from 'node:path';
import pino from 'pino';
import { loadConfig, resolveSecretKey } from '../app/config.ts';
import { auditChainKey } from '../bot/audit/audit-keys.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { systemClock } from '../bot/ports.ts';
import { openDatabase } from '../db/client.ts';
import { createBroker } from './broker.ts';
import { createLocalFileStore } from './files/local-file-store.ts';

const config = loadConfig();
const logger = pino({ level: config.LOG_LEVEL });
const db = await openDatabase({
  url: config.DATABASE_URL,
  migrationUrl: config.DATABASE_MIGRATION_URL,
  dataDir: config.DATA_DIR,
});
// The same SECRET_KEY as the main process: records are keyed with the same chain key. The main process's
// checkpointer signs what this one appends (it polls the head).
const audit = createAuditService({
  db: db.db,
  clock: systemClock,
  chainKey: auditChainKey(resolveSecretKey(config)),
});
const broker = createBroker({
  db,
  audit,
  clock: systemClock,
  logger,
  fileStore: createLocalFileStore(join(config.DATA_DIR, 'files')),
  config: {
    host: config.BROKER_HOST,
    port: config.BROKER_PORT,
    brokerId: config.BROKER_ID,
    publicHost: config.BROKER_PUBLIC_HOST,
    dataDir: config.DATA_DIR,
    maxFileBytes: config.MAX_FILE_BYTES,
    heartbeatSeconds: config.BROKER_HEARTBEAT,
  },
});
const { port } = await broker.start();
// One machine-readable line so a parent process (tests, supervisors) knows the port.
process.stdout.write(`${JSON.stringify({ event: 'broker.listening', port, brokerId: config.BROKER_ID })}\n`);

let stopping = false;
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, async () => {
    if (stopping) return;
    stopping = true;
    await broker.stop();
    await db.close();
    process.exit(0);
  });
}
