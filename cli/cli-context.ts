// What every CLI command gets: the database and the services an admin action goes through, so the CLI
// writes the same audit records as the chat and the web page do. The CLI builds it on a database it opens
// itself; the running server builds it on its own open database when a CLI sends it a command.
import { type Config, resolveSecretKey } from '../app/config.ts';
import { stepUpFromConfig } from '../app/platform.ts';
import { type AuditService, createAuditService } from '../bot/audit/audit-service.ts';
import { type Clock, systemClock } from '../bot/ports.ts';
import type { StepUpService } from '../bot/stepup/stepup-service.ts';
import { createUserService, type UserService } from '../bot/users/user-service.ts';
import { type Database, type Db, openDatabase } from '../db/client.ts';
import { prepareDataDir } from '../db/data-dir.ts';
import type { CliIo } from './cli-types.ts';

export interface CliContext {
  config: Config;
  database: Database;
  db: Db;
  clock: Clock;
  audit: AuditService;
  users: UserService;
  stepup: StepUpService;
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
  users?: UserService;
  stepup?: StepUpService;
}

export function createCliContext(deps: CliContextDeps): CliContext {
  const { config, database, secretKey, io } = deps;
  const clock = deps.clock ?? systemClock;
  const db = database.db;
  const audit = deps.audit ?? createAuditService({ db, clock });
  const users = deps.users ?? createUserService({ db, audit, clock, secretKey });
  const stepup = deps.stepup ?? stepUpFromConfig({ db, audit, clock, secretKey, config });
  return { config, database, db, clock, audit, users, stepup, io, out: (line) => io.out(line) };
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
    dataDir: config.DATA_DIR,
    maxConnections: 2,
    role: 'cli',
  });
  return { ...createCliContext({ config, database, secretKey, io }), close: () => database.close() };
}
