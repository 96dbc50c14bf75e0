import { readFileSync } from 'node:fs';
import { openDatabase } from '../../db/client.ts';
import { setupAppRole } from '../../db/roles.ts';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';

export const dbCommands: CommandGroup = {
  summary: 'PostgreSQL roles',
  commands: {
    'setup-roles': {
      summary: 'as the owner: migrate, then create/grant the app role (audit_log: INSERT and SELECT only)',
      args: '--app-role <name> [--password-file <file>]',
      async runWithoutContext(config, argv, io) {
        const usage = 'db setup-roles --app-role <name> [--password-file <file>]';
        const { values } = cliArgs(argv, usage, 0, {
          'app-role': { type: 'string' },
          'password-file': { type: 'string' },
        });
        const appRole = values['app-role'];
        if (!appRole) throw new CliUsageError('--app-role is required, e.g. --app-role ar_app.', usage);
        const ownerUrl = config.DATABASE_MIGRATION_URL ?? config.DATABASE_URL;
        if (!ownerUrl)
          throw new CliUsageError(
            'Roles exist only on PostgreSQL: set DATABASE_MIGRATION_URL (or DATABASE_URL) to the owner role’s URL. The embedded database has no roles.',
            usage,
          );
        let password: string | undefined;
        if (values['password-file']) {
          try {
            password = readFileSync(values['password-file'], 'utf8').replace(/\r?\n$/, '');
          } catch (e) {
            throw new CliUsageError(
              `Cannot read --password-file ${values['password-file']} (${(e as NodeJS.ErrnoException).code ?? 'error'}).`,
              usage,
            );
          }
          if (!password)
            throw new CliUsageError(`--password-file ${values['password-file']} is empty.`, usage);
        }
        // Migrations first, as the owner, so every table exists and is the owner's before the grants.
        const database = await openDatabase({ url: ownerUrl, maxConnections: 1 });
        await database.close();
        const res = await setupAppRole(ownerUrl, { appRole, password });
        io.out(
          [
            `Role ${res.appRole}: ${res.created ? 'created' : 'already existed'}${res.passwordSet ? ', password set from the file' : ''}.`,
            `Database ${res.database}: CONNECT; schema public: USAGE; ${res.tables} tables: SELECT, INSERT, UPDATE, DELETE, except audit_log: SELECT, INSERT only; sequences: USAGE, SELECT.`,
            `Tables stay owned by ${res.owner}, so ${res.appRole} cannot alter or disable the audit log's trigger.`,
            `Run the platform with DATABASE_URL as ${res.appRole} and DATABASE_MIGRATION_URL as ${res.owner}.`,
          ].join('\n'),
        );
      },
    },
  },
};
