// What every CLI command gets: the database and the services an admin action goes through, so the CLI
// writes the same audit records as the chat and the web page do, keyed with the same chain key.
import pino from 'pino';
import { checkpointLogFor, resolveCheckpointKeys } from '../app/audit-anchoring.ts';
import { type Config, resolveSecretKey } from '../app/config.ts';
import { stepUpFromConfig } from '../app/platform.ts';
import { createAuditCheckpointer } from '../bot/audit/audit-checkpointer.ts';
import { auditChainKey } from '../bot/audit/audit-keys.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { systemClock } from '../bot/ports.ts';
import { createUserService } from '../bot/users/user-service.ts';
import { type Database, openDatabase } from '../db/client.ts';

export async function openCliContext(config: Config) {
  const secretKey = resolveSecretKey(config);
  const checkpointKeys = resolveCheckpointKeys(config, secretKey);
  const database: Database = await openDatabase({
    url: config.DATABASE_URL,
    migrationUrl: config.DATABASE_MIGRATION_URL,
    dataDir: config.DATA_DIR,
    maxConnections: 2,
  });
  const clock = systemClock;
  // Warnings and errors only, on stderr: the commands print their own results.
  const quiet = ['silent', 'fatal', 'error'].includes(config.LOG_LEVEL) ? config.LOG_LEVEL : 'warn';
  const logger = pino({ level: quiet }, pino.destination(2));
  const audit = createAuditService({ db: database.db, clock, chainKey: auditChainKey(secretKey) });
  const checkpointLog = checkpointLogFor(config);
  // The CLI does not poll; it signs only on `audit checkpoint`. The server posts to the audit channel.
  const checkpointer = createAuditCheckpointer({
    audit,
    log: checkpointLog,
    keys: checkpointKeys,
    clock,
    logger,
  });
  // A database from before keyed hashing is switched over before any command appends to it, so the first
  // keyed record is the marker and the old records are vouched for by its checkpoint.
  await checkpointer.sealLegacyChain();
  const users = createUserService({ db: database.db, audit, clock, secretKey });
  const stepup = stepUpFromConfig({ db: database.db, audit, clock, secretKey, config });
  return {
    config,
    database,
    db: database.db,
    clock,
    audit,
    checkpointer,
    /** The checkpoint file and the key its signatures are checked with, for `audit verify`. */
    async anchors() {
      return { entries: await checkpointLog.readAll(), publicKey: checkpointKeys.publicKey };
    },
    users,
    stepup,
    out: (line: string) => console.log(line),
    close: () => database.close(),
  };
}

export type CliContext = Awaited<ReturnType<typeof openCliContext>>;
