#!/usr/bin/env node
// The admin CLI: `npm run cli -- <group> <command> [args]`. It opens the same database the server uses
// (DATABASE_URL, or the embedded one under DATA_DIR). The embedded database takes one process at a time:
// while the server holds it, the CLI sends the command to the server over DATA_DIR/admin.sock and the
// server runs it, with the same code and the same audit records.
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { loadConfig } from '../app/config.ts';
import { DataDirLockedError } from '../db/data-dir-lock.ts';
import { AdminConnectError, runOnServer } from './admin-client.ts';
import { ADMIN_SOCKET } from './admin-protocol.ts';
import { openCliContext } from './cli-context.ts';
import { findCommand, runCliCommand } from './cli-runner.ts';
import { type CliIo, CliUsageError } from './cli-types.ts';

const processIo: CliIo = {
  out: (line) => void process.stdout.write(`${line}\n`),
  err: (line) => void process.stderr.write(`${line}\n`),
  write: (chunk) =>
    new Promise((r) => (process.stdout.write(chunk) ? r() : process.stdout.once('drain', () => r()))),
  async readLine() {
    const rl = createInterface({ input: process.stdin, terminal: false });
    for await (const line of rl) {
      rl.close();
      return line;
    }
    return undefined;
  },
  resolvePath: (p) => resolve(p),
};

async function main(argv: string[]): Promise<number> {
  const found = findCommand(argv, processIo);
  if (typeof found === 'number') return found;
  const config = loadConfig();
  // Whatever the CLI creates under DATA_DIR (the embedded database's files, exports) is private.
  process.umask(0o077);
  // Commands that set the database up (as its owner) or read only keys run here, never on the server.
  if ('runWithoutContext' in found.command) {
    try {
      return (await found.command.runWithoutContext(config, found.args, processIo)) || 0;
    } catch (e) {
      if (e instanceof CliUsageError) {
        processIo.err(`${e.message}\nUsage: npm run cli -- ${e.usage}`);
        return 2;
      }
      throw e;
    }
  }
  let ctx: Awaited<ReturnType<typeof openCliContext>>;
  try {
    ctx = await openCliContext(config, processIo);
  } catch (e) {
    if (!(e instanceof DataDirLockedError && e.holder.role === 'server')) throw e;
    const socket = join(config.DATA_DIR, ADMIN_SOCKET);
    return runOnServer(socket, argv, { ...process, cwd: process.cwd() }).catch((err) => {
      if (!(err instanceof AdminConnectError)) throw err;
      throw new AdminConnectError(
        `The server (pid ${e.holder.pid}) holds the embedded database, but ${err.message} If it is ` +
          'starting, try again in a moment; if it is stuck, stop it and run the command again.',
      );
    });
  }
  try {
    return await runCliCommand(found, ctx);
  } finally {
    await ctx.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error & { code?: string }) => {
    console.error(typeof err.code === 'string' ? `${err.message} (${err.code})` : err.message);
    if (typeof err.code !== 'string' && process.env.LOG_LEVEL === 'debug') console.error(err.stack);
    process.exit(1);
  },
);
