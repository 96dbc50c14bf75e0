// What every CLI command gets: the database and the services an admin action goes through, so the CLI
// writes the same audit records as the chat and the web page do.
import { type Config, resolveSecretKey } from '../app/config.ts';
import { stepUpFromConfig } from '../app/platform.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { systemClock } from '../bot/ports.ts';
import { createUserService } from '../bot/users/user-service.ts';
import { type Database, openDatabase } from '../db/client.ts';

export async function openCliContext(config: Config) {
  const secretKey = resolveSecretKey(config);
  const database: Database = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.DATA_DIR,
    maxConnections: 2,
  });
  const clock = systemClock;
  const audit = createAuditService({ db: database.db, clock });
  const users = createUserService({ db: database.db, audit, clock, secretKey });
  const stepup = stepUpFromConfig({ db: database.db, audit, clock, secretKey, config });
  return {
    config,
    database,
    db: database.db,
    clock,
    audit,
    users,
    stepup,
    out: (line: string) => console.log(line),
    close: () => database.close(),
  };
}

export type CliContext = Awaited<ReturnType<typeof openCliContext>>;
