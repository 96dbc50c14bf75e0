// The CLI's end of the admin socket: used when the server holds the embedded database. Sends the command
// line and the working directory, prints what comes back, answers the server's requests for a line of
// standard input, and exits with the command's exit code.
import { statSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { readLines, sendLine, serverMessageSchema } from './admin-protocol.ts';

export class AdminConnectError extends Error {
  override name = 'AdminConnectError';
  readonly code = 'admin_socket.unreachable';
}

export interface LocalStreams {
  stdout: Writable;
  stderr: Writable;
  stdin: Readable;
  cwd: string;
}

/** Output lines can be long (one audit record each, file contents never); this is a sanity cap. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

function write(stream: Writable, text: string): Promise<void> {
  return stream.write(text) ? Promise.resolve() : new Promise((r) => stream.once('drain', () => r()));
}

/**
 * Runs `argv` on the server listening at `socketPath`; resolves to the command's exit code. Throws
 * AdminConnectError when nothing answers there. The socket's directory must not be writable by others:
 * whoever could put a socket there could read what is sent to it (a password given on stdin).
 */
export async function runOnServer(socketPath: string, argv: string[], local: LocalStreams): Promise<number> {
  const dir = dirname(socketPath);
  if (statSync(dir).mode & 0o022) {
    throw new AdminConnectError(
      `${dir} can be written by other users; not sending anything there. chmod 700 ${dir}`,
    );
  }
  const socket = connect(socketPath);
  await new Promise<void>((ok, fail) => {
    socket.once('connect', ok);
    socket.once('error', (e: NodeJS.ErrnoException) =>
      fail(new AdminConnectError(`Nothing answers on ${socketPath} (${e.code ?? e.message}).`)),
    );
  });
  socket.on('error', () => {});
  const lines = readLines(socket, MAX_MESSAGE_BYTES);
  let stdin: ReturnType<typeof createInterface> | undefined;
  let stdinLines: AsyncIterator<string> | undefined;
  try {
    await sendLine(socket, { argv, cwd: local.cwd });
    for (;;) {
      const line = await lines.next();
      if (line === undefined) {
        await write(
          local.stderr,
          'The server closed the connection before the command finished; see its log.\n',
        );
        return 1;
      }
      const msg = serverMessageSchema.parse(JSON.parse(line));
      if ('out' in msg) await write(local.stdout, msg.out);
      else if ('err' in msg) await write(local.stderr, msg.err);
      else if ('exit' in msg) return msg.exit;
      else {
        stdin ??= createInterface({ input: local.stdin, terminal: false });
        stdinLines ??= stdin[Symbol.asyncIterator]();
        const next = await stdinLines.next();
        await sendLine(socket, { line: next.done ? null : next.value });
      }
    }
  } finally {
    stdin?.close();
    socket.destroy();
  }
}
