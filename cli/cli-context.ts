// What every CLI command gets: the database and the services an admin action goes through, so the CLI
// writes the same audit records as the chat and the web page do, keyed with the same chain key. The CLI
// builds it on a database it opens itself; the running server builds it on its own open database when a CLI
// sends it a command.
import { join } from 'node:path';
import pino from 'pino';
import { checkpointLogFor, resolveCheckpointKeys } from '../app/audit-anchoring.ts';
import { type Config, resolveSecretKey } from '../app/config.ts';
import { stepUpFromConfig } from '../app/platform.ts';
import type { CheckpointLogEntry } from '../bot/audit/audit-checkpoint.ts';
import { type AuditCheckpointer, createAuditCheckpointer } from '../bot/audit/audit-checkpointer.ts';
import { auditChainKey, type CheckpointKeys } from '../bot/audit/audit-keys.ts';
import { type AuditService, createAuditService } from '../bot/audit/audit-service.ts';
import { createFileLibrary, type FileLibrary } from '../bot/library/file-library.ts';
import { type Clock, type FileStore, systemClock } from '../bot/ports.ts';
import type { StepUpService } from '../bot/stepup/stepup-service.ts';
import { createUserService, type UserService } from '../bot/users/user-service.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import { type Database, type Db, openDatabase } from '../db/client.ts';
import { prepareDataDir } from '../db/data-dir.ts';
import type { CliIo } from './cli-types.ts';

export interface CliContext {
  config: Config;
  database: Database;
  db: Db;
  clock: Clock;
  audit: AuditService;
  checkpointer: AuditCheckpointer;
  /** The checkpoint file and the key its signatures are checked with, for `audit verify`. */
  anchors(): Promise<{ entries: CheckpointLogEntry[]; publicKey: CheckpointKeys['publicKey'] }>;
  users: UserService;
  stepup: StepUpService;
  library: FileLibrary;
  io: CliIo;
  /** Shorthand for io.out. */
  out(line: string): void;
}

export interface CliContextDeps {
  config: Config;
  database: Database;
  secretKey: Buffer;
  io: CliIo;
  clock?: Clock;
  /** The server passes its own services (the audit one counts into its metrics); else they are built here. */
  audit?: AuditService;
  checkpointer?: AuditCheckpointer;
  users?: UserService;
  stepup?: StepUpService;
  fileStore?: FileStore;
}

export function createCliContext(deps: CliContextDeps): CliContext {
  const { config, database, secretKey, io } = deps;
  const clock = deps.clock ?? systemClock;
  const db = database.db;
  const audit = deps.audit ?? createAuditService({ db, clock, chainKey: auditChainKey(secretKey) });
  const checkpointLog = checkpointLogFor(config);
  const checkpointKeys = resolveCheckpointKeys(config, secretKey);
  // The CLI does not poll; it signs only on `audit checkpoint`. The server posts to the audit channel.
  const checkpointer =
    deps.checkpointer ??
    createAuditCheckpointer({
      audit,
      log: checkpointLog,
      keys: checkpointKeys,
      clock,
      // Warnings and errors only, on stderr: the commands print their own results.
      logger: pino(
        { level: ['silent', 'fatal', 'error'].includes(config.LOG_LEVEL) ? config.LOG_LEVEL : 'warn' },
        pino.destination(2),
      ),
    });
  const users = deps.users ?? createUserService({ db, audit, clock, secretKey });
  const stepup = deps.stepup ?? stepUpFromConfig({ db, audit, clock, secretKey, config });
  const fileStore = deps.fileStore ?? createLocalFileStore(join(config.DATA_DIR, 'files'));
  const library = createFileLibrary({ db, audit, fileStore, maxFileBytes: config.MAX_FILE_BYTES });
  return {
    config,
    database,
    db,
    clock,
    audit,
    checkpointer,
    async anchors() {
      return { entries: await checkpointLog.readAll(), publicKey: checkpointKeys.publicKey };
    },
    users,
    stepup,
    library,
    io,
    out: (line) => io.out(line),
  };
}

/**
 * Opens the database for this process and builds the context on it. On the embedded database this takes
 * the data directory's lock, so it throws DataDirLockedError while the server runs (the CLI then sends the
 * command to the server instead).
 */
export async function openCliContext(
  config: Config,
  io: CliIo,
): Promise<CliContext & { close(): Promise<void> }> {
  prepareDataDir(config.DATA_DIR);
  const secretKey = resolveSecretKey(config);
  const database = await openDatabase({
    url: config.DATABASE_URL,
    migrationUrl: config.DATABASE_MIGRATION_URL,
    dataDir: config.DATA_DIR,
    maxConnections: 2,
    role: 'cli',
  });
  const ctx = createCliContext({ config, database, secretKey, io });
  // A database from before keyed hashing is switched over before any command appends to it, so the first
  // keyed record is the marker and the old records are vouched for by its checkpoint.
  await ctx.checkpointer.sealLegacyChain();
  return { ...ctx, close: () => database.close() };
}
