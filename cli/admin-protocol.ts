// The admin socket's wire format, shared by the server and the CLI. JSON lines both ways:
//   CLI → server   {"argv": [...], "cwd": "/abs/dir"}      once, first
//                  {"line": "text" | null}                  each time the server asks for a line of stdin
//   server → CLI   {"out": "text"} / {"err": "text"}       output, as it is produced
//                  {"ask": "line"}                          the command reads a line of the CLI's stdin
//                  {"exit": 0}                              last; the CLI exits with this code

import type { Socket } from 'node:net';
import { isAbsolute } from 'node:path';
import { z } from 'zod';

/** The socket's name inside DATA_DIR. */
export const ADMIN_SOCKET = 'admin.sock';

/** A request line longer than this is refused: argv of an admin command is a few hundred bytes. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export const adminRequestSchema = z.object({
  argv: z.array(z.string().max(8192)).min(1).max(64),
  cwd: z.string().max(4096).refine(isAbsolute, 'must be an absolute path'),
});
export type AdminRequest = z.infer<typeof adminRequestSchema>;

export const stdinReplySchema = z.object({ line: z.string().max(MAX_REQUEST_BYTES).nullable() });

export const serverMessageSchema = z.union([
  z.object({ out: z.string() }),
  z.object({ err: z.string() }),
  z.object({ ask: z.literal('line') }),
  z.object({ exit: z.number().int().min(0).max(255) }),
]);
export type ServerMessage = z.infer<typeof serverMessageSchema>;

export interface LineReader {
  /** The next line, or undefined when the peer closed (or sent a line over the cap, which closes it). */
  next(): Promise<string | undefined>;
}

/**
 * Splits a socket's input into lines, holding at most `maxLineBytes` of one unfinished line. Reading pauses
 * the socket while many lines wait, so a fast sender cannot fill memory.
 */
export function readLines(socket: Socket, maxLineBytes: number): LineReader {
  socket.setEncoding('utf8');
  let partial = '';
  const ready: string[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  socket.on('data', (chunk: string) => {
    partial += chunk;
    for (let i = partial.indexOf('\n'); i !== -1; i = partial.indexOf('\n')) {
      ready.push(partial.slice(0, i));
      partial = partial.slice(i + 1);
    }
    if (Buffer.byteLength(partial) > maxLineBytes) {
      ended = true;
      socket.destroy();
    }
    if (ready.length > 256) socket.pause();
    notify();
  });
  socket.on('close', () => {
    ended = true;
    notify();
  });
  socket.on('end', () => {
    ended = true;
    notify();
  });
  return {
    async next() {
      for (;;) {
        const line = ready.shift();
        if (line !== undefined) {
          if (ready.length < 16) socket.resume();
          return line;
        }
        if (ended) return undefined;
        await new Promise<void>((r) => {
          wake = r;
        });
      }
    },
  };
}

/** Writes one JSON line; resolves when the socket can take more, or at once if it has closed. */
export function sendLine(socket: Socket, message: unknown): Promise<void> {
  if (socket.destroyed || !socket.writable) return Promise.resolve();
  if (socket.write(`${JSON.stringify(message)}\n`)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}
