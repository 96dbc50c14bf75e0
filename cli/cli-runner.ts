// The admin commands and how one is run: look it up, run it against a context, turn its errors into the
// text and exit code an operator sees. The CLI's own process and the running server (for a CLI that sends
// it the command over the admin socket) both go through `runCliCommand`, so the two behave alike.
import type { CliContext } from './cli-context.ts';
import { type CliCommand, type CliIo, CliUsageError, type CommandGroup } from './cli-types.ts';
import { auditCommands } from './commands/audit-commands.ts';
import { dbCommands } from './commands/db-commands.ts';
import { endpointCommands } from './commands/endpoint-cli.ts';
import { fileCommands } from './commands/file-commands.ts';
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
  file: fileCommands,
  audit: auditCommands,
  db: dbCommands,
};

export function usage(): string {
  const lines = ['Usage: npm run cli -- <group> <command> [arguments]', ''];
  for (const [name, g] of Object.entries(groups)) {
    for (const [cmd, c] of Object.entries(g.commands)) {
      if (name === 'user' && cmd.startsWith('role-')) continue;
      lines.push(`  ${`${name} ${cmd} ${c.args ?? ''}`.padEnd(62)} ${c.summary}`);
    }
  }
  return lines.join('\n');
}

export interface FoundCommand {
  /** `group command`, for logs: never the arguments, which may hold a code. */
  name: string;
  command: CliCommand;
  args: string[];
}

/** The command `argv` names, or the exit code after printing help or an unknown-command message. */
export function findCommand(argv: string[], io: CliIo): FoundCommand | number {
  const [groupName, cmdName, ...args] = argv;
  if (!groupName || groupName === 'help' || groupName === '--help' || groupName === '-h') {
    io.out(usage());
    return groupName ? 0 : 2;
  }
  const group = Object.hasOwn(groups, groupName) ? groups[groupName] : undefined;
  const command =
    group && cmdName && Object.hasOwn(group.commands, cmdName) ? group.commands[cmdName] : undefined;
  if (!command) {
    io.err(`Unknown command "${[groupName, cmdName].filter(Boolean).join(' ')}".\n\n${usage()}`);
    return 2;
  }
  return { name: `${groupName} ${cmdName}`, command, args };
}

/**
 * Runs a found command; resolves to its exit code: 0, the command's own (3: audit chain broken), 2 for a
 * usage error (printed with the usage line), 1 for any other error (its message, and its code when typed).
 */
export async function runCliCommand(found: FoundCommand, ctx: CliContext): Promise<number> {
  try {
    const c = found.command;
    return (
      ('run' in c
        ? await c.run(ctx, found.args)
        : await c.runWithoutContext(ctx.config, found.args, ctx.io)) || 0
    );
  } catch (e) {
    const err = e as Error & { code?: unknown };
    if (err instanceof CliUsageError) {
      ctx.io.err(`${err.message}\nUsage: npm run cli -- ${err.usage}`);
      return 2;
    }
    // Typed errors carry a user-facing message; anything else is printed without stack noise but kept whole.
    ctx.io.err(typeof err.code === 'string' ? `${err.message} (${err.code})` : String(err.message ?? err));
    if (typeof err.code !== 'string' && ctx.config.LOG_LEVEL === 'debug') ctx.io.err(String(err.stack));
    return 1;
  }
}
