#!/usr/bin/env node
// The admin CLI: `npm run cli -- <group> <command> [args]`. It opens the same database the server uses
// (DATABASE_URL, or the embedded one under DATA_DIR — stop the server first, PGlite allows one process).
import { loadConfig } from '../app/config.ts';
import { openCliContext } from './cli-context.ts';
import { CliUsageError, type CommandGroup } from './cli-types.ts';
import { auditCommands } from './commands/audit-commands.ts';
import { dbCommands } from './commands/db-commands.ts';
import { endpointCommands } from './commands/endpoint-cli.ts';
import { libraryCommands } from './commands/library-commands.ts';
import { orgCommands } from './commands/org-commands.ts';
import { segmentCommands } from './commands/segment-commands.ts';
import { userCommands } from './commands/user-commands.ts';

const groups: Record<string, CommandGroup> = {
  user: userCommands,
  role: {
    summary: 'grant or revoke a role',
    commands: { grant: userCommands.commands['role-grant']!, revoke: userCommands.commands['role-revoke']! },
  },
  org: orgCommands,
  segment: segmentCommands,
  endpoint: endpointCommands,
  script: libraryCommands,
  audit: auditCommands,
  db: dbCommands,
};

function usage(): string {
  const lines = ['Usage: npm run cli -- <group> <command> [arguments]', ''];
  for (const [name, g] of Object.entries(groups)) {
    for (const [cmd, c] of Object.entries(g.commands)) {
      if (name === 'user' && cmd.startsWith('role-')) continue;
      lines.push(`  ${`${name} ${cmd} ${c.args ?? ''}`.padEnd(62)} ${c.summary}`);
    }
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [groupName, cmdName, ...rest] = argv;
  if (!groupName || groupName === 'help' || groupName === '--help' || groupName === '-h') {
    console.log(usage());
    return groupName ? 0 : 2;
  }
  const group = groups[groupName];
  const command = group && cmdName ? group.commands[cmdName] : undefined;
  if (!command) {
    console.error(`Unknown command "${[groupName, cmdName].filter(Boolean).join(' ')}".\n\n${usage()}`);
    return 2;
  }
  const config = loadConfig();
  if ('runWithoutContext' in command) {
    await command.runWithoutContext(config, rest);
    return 0;
  }
  const ctx = await openCliContext(config);
  try {
    await command.run(ctx, rest);
    return 0;
  } finally {
    await ctx.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(Number(process.exitCode ?? code)),
  (err: Error & { code?: string }) => {
    if (err instanceof CliUsageError) {
      console.error(`${err.message}\nUsage: npm run cli -- ${err.usage}`);
      process.exit(2);
    }
    // Typed errors carry a user-facing message; anything else is printed without stack noise but kept whole.
    console.error(err.code ? `${err.message} (${err.code})` : err.message);
    if (!err.code && process.env.LOG_LEVEL === 'debug') console.error(err.stack);
    process.exit(1);
  },
);
