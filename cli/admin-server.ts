// The running server's end of the admin CLI. On the embedded database the server holds the data directory's
// lock, so `npm run cli` cannot open the database itself; it sends its command line here instead, and the
// server runs the very same command implementation on its own open database (same services, same audit
// records), streaming the output back.
//
// Authentication is the file system: the socket is a Unix socket (never reachable over a network), made
// 0600 inside DATA_DIR, which is 0700 and refused at start when others can write to it. Only this user
// (and root) can connect, and they could open the database files directly anyway.
import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import type { Config } from '../app/config.ts';
import type { AuditCheckpointer } from '../bot/audit/audit-checkpointer.ts';
import type { AuditService } from '../bot/audit/audit-service.ts';
import type { Clock, FileStore, Logger } from '../bot/ports.ts';
import type { StepUpService } from '../bot/stepup/stepup-service.ts';
import type { UserService } from '../bot/users/user-service.ts';
import type { Database } from '../db/client.ts';
import {
  ADMIN_SOCKET,
  type AdminRequest,
  adminRequestSchema,
  MAX_REQUEST_BYTES,
  readLines,
  sendLine,
  stdinReplySchema,
} from './admin-protocol.ts';
import { createCliContext } from './cli-context.ts';
import { findCommand, runCliCommand } from './cli-runner.ts';
import type { CliIo } from './cli-types.ts';

/** Linux keeps a Unix socket's path in 108 bytes, the last one a NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
/** A connection that has not sent its request line by then is dropped. */
const REQUEST_WAIT_MS = 10_000;

export class AdminSocketError extends Error {
  override name = 'AdminSocketError';
  readonly code = 'admin_socket.unavailable';
}

export interface AdminServer {
  path: string;
  close(): Promise<void>;
}

export interface AdminServerDeps {
  socketPath: string;
  logger: Logger;
  /** Runs one command with its output going to `io`; resolves to the exit code. One runs at a time. */
  run(request: AdminRequest, io: CliIo): Promise<number>;
}

/** Whether something answers on the socket at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((done) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      done(true);
    });
    s.once('error', () => done(false));
  });
}

/**
 * Listens on `socketPath` (mode 0600). A socket left by a server that is gone is replaced; a live one (a
 * second server on the same DATA_DIR) or a non-socket file at that path is refused with AdminSocketError.
 */
export async function startAdminServer(deps: AdminServerDeps): Promise<AdminServer> {
  const path = deps.socketPath;
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new AdminSocketError(
      `The admin socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes, the limit for a Unix ` +
        'socket. Use a shorter DATA_DIR.',
    );
  }
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) {
      throw new AdminSocketError(`${path} exists and is not a socket. Move it away, then start again.`);
    }
    if (await answers(path)) {
      throw new AdminSocketError(
        `Another server is answering on ${path}. Stop it first: two servers cannot share one DATA_DIR.`,
      );
    }
    unlinkSync(path);
  }

  let queue: Promise<unknown> = Promise.resolve();
  const open = new Set<Socket>();
  const server: Server = createServer((socket) => {
    socket.on('error', () => {}); // a CLI that goes away mid-command is not the server's problem
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    void serve(socket).catch((err) => deps.logger.error({ err }, 'admin command failed'));
  });

  async function serve(socket: Socket): Promise<void> {
    const lines = readLines(socket, MAX_REQUEST_BYTES);
    const timer = setTimeout(() => socket.destroy(), REQUEST_WAIT_MS);
    const first = await lines.next();
    clearTimeout(timer);
    if (first === undefined) {
      socket.destroy();
      return;
    }
    let request: AdminRequest;
    try {
      request = adminRequestSchema.parse(JSON.parse(first));
    } catch {
      await sendLine(socket, {
        err: 'The admin socket expects {"argv": [...], "cwd": "/dir"} as one line.\n',
      });
      await sendLine(socket, { exit: 2 });
      socket.end();
      return;
    }
    const io: CliIo = {
      out: (line) => void sendLine(socket, { out: `${line}\n` }),
      err: (line) => void sendLine(socket, { err: `${line}\n` }),
      write: (chunk) => sendLine(socket, { out: chunk }),
      async readLine() {
        await sendLine(socket, { ask: 'line' });
        const reply = await lines.next();
        if (reply === undefined) return undefined;
        try {
          return stdinReplySchema.parse(JSON.parse(reply)).line ?? undefined;
        } catch {
          return undefined;
        }
      },
      resolvePath: (p) => resolve(request.cwd, p),
    };
    // One command at a time: commands are short, and the embedded database serialises them anyway.
    const run = queue.then(() => deps.run(request, io));
    queue = run.catch(() => undefined);
    let exit = 1;
    try {
      exit = await run;
    } catch (err) {
      deps.logger.error({ err }, 'admin command failed');
      io.err('The command failed on the server; see its log.');
    }
    deps.logger.info(
      { command: request.argv.slice(0, 2).join(' ').slice(0, 60), exit },
      'admin command from the CLI',
    );
    await sendLine(socket, { exit });
    socket.end();
  }

  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(path, () => {
      server.off('error', fail);
      ok();
    });
  });
  // The directory is 0700, so nobody else could reach the socket in the moment before this chmod.
  chmodSync(path, 0o600);
  return {
    path,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of open) s.destroy(); // e.g. a CLI still waiting for someone to type a line
      await closed;
      await queue;
      if (existsSync(path)) unlinkSync(path);
    },
  };
}

export interface ServeAdminCliDeps {
  config: Config;
  database: Database;
  secretKey: Buffer;
  clock: Clock;
  logger: Logger;
  audit: AuditService;
  checkpointer: AuditCheckpointer;
  users: UserService;
  stepup: StepUpService;
  fileStore: FileStore;
}

/** The server's admin socket at DATA_DIR/admin.sock, running CLI commands on the server's own services. */
export function serveAdminCli(deps: ServeAdminCliDeps): Promise<AdminServer> {
  return startAdminServer({
    socketPath: join(deps.config.DATA_DIR, ADMIN_SOCKET),
    logger: deps.logger,
    async run(request, io) {
      const found = findCommand(request.argv, io);
      if (typeof found === 'number') return found;
      return runCliCommand(found, createCliContext({ ...deps, io }));
    },
  });
}
