// File streams over an agent connection. Uploads (fetch evidence, a script's upload_file) are hashed as they
// stream into the FileStore and compared with the agent's own SHA-256 and size before a `files` row exists;
// downloads (put, download_file) send a library file in chunks with backpressure. A transfer cut by a
// disconnect leaves no file and no row, and is audited as failed.
import { createHash } from 'node:crypto';
import { and, desc, eq, or } from 'drizzle-orm';
import type { WebSocket } from 'ws';
import type { z } from 'zod';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import type { Clock, FileStore, Logger } from '../../bot/ports.ts';
import type { Db } from '../../db/client.ts';
import { deliveries, files } from '../../db/schema.ts';
import {
  ERROR_CODES,
  type fileEndFrame,
  type fileGetFrame,
  MAX_CHUNK_BYTES,
  makeChunk,
  type uploadStartFrame,
} from '../../protocol/frames.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HIGH_WATER = 1024 * 1024;

/** An async iterable fed by pushes, pausing the socket when the consumer falls behind. */
function createChunkQueue(onBacklog: (paused: boolean) => void) {
  const items: Buffer[] = [];
  let done = false;
  let failure: Error | undefined;
  let wakeUp: (() => void) | undefined;
  let paused = false;
  const signal = () => {
    wakeUp?.();
    wakeUp = undefined;
  };
  return {
    push(b: Buffer) {
      items.push(b);
      if (!paused && items.length > 32) {
        paused = true;
        onBacklog(true);
      }
      signal();
    },
    end() {
      done = true;
      signal();
    },
    fail(e: Error) {
      failure = e;
      signal();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (failure) throw failure;
        const next = items.shift();
        if (next) {
          if (paused && items.length < 8) {
            paused = false;
            onBacklog(false);
          }
          yield next;
          continue;
        }
        if (done) return;
        await new Promise<void>((r) => {
          wakeUp = r;
        });
      }
    },
  };
}

interface Upload {
  start: z.infer<typeof uploadStartFrame>;
  queue: ReturnType<typeof createChunkQueue>;
  received: number;
  hash: ReturnType<typeof createHash>;
  stored: Promise<{ key: string; size: number; sha256: string }>;
  requestId: string;
}

export interface TransferDeps {
  db: Db;
  audit: AuditService;
  clock: Clock;
  logger: Logger;
  fileStore: FileStore;
  maxFileBytes: number;
}

export function createTransfers(
  deps: TransferDeps,
  conn: {
    ws: WebSocket;
    endpointId: string;
    hostname: string;
    /** Refuses a frame the way the session does (error frame, audit record, counted towards 1008). */
    refuse(code: string, message: string, ref: string): Promise<void>;
  },
) {
  const { db, audit, fileStore, logger } = deps;
  const { ws, endpointId } = conn;
  const uploads = new Map<string, Upload>();
  const downloads = new Set<string>();
  // Every transfer id this connection has started, finished or not: a reused id is refused rather than
  // silently starting a second transfer that an agent's late chunks or file_end could be mixed into.
  const used = new Set<string>();
  let closed = false;

  const sendJson = (frame: object) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
  };
  const error = (code: string, message: string, ref?: string) =>
    sendJson({ type: 'error', code, message, ref });

  /** The delivery a transfer belongs to must be this agent's and running. */
  async function runningDelivery(deliveryId: string) {
    const [d] = await db
      .select({ id: deliveries.id, requestId: deliveries.requestId, state: deliveries.state })
      .from(deliveries)
      .where(and(eq(deliveries.id, deliveryId), eq(deliveries.endpointId, endpointId)));
    return d && d.state === 'acknowledged' ? d : undefined;
  }

  async function auditUpload(u: Upload, outcome: 'ok' | 'failed', details: Record<string, unknown>) {
    await audit
      .append({
        actorType: 'agent',
        actorId: endpointId,
        action: 'file.uploaded',
        outcome,
        requestId: u.requestId,
        endpointId,
        details: {
          transferId: u.start.transferId,
          deliveryId: u.start.deliveryId,
          name: u.start.name,
          path: u.start.path ?? null,
          ...details,
        },
      })
      .catch((e) => logger.error({ err: e }, 'audit of an upload failed'));
  }

  return {
    async startUpload(start: z.infer<typeof uploadStartFrame>) {
      if (used.has(start.transferId))
        return conn.refuse(
          ERROR_CODES.unexpected,
          'this transfer id was already used on this connection; start each transfer with a new id',
          start.transferId,
        );
      if (start.size > deps.maxFileBytes) {
        return error(
          ERROR_CODES.fileTooLarge,
          `file is ${start.size} bytes; the limit is ${deps.maxFileBytes}`,
          start.transferId,
        );
      }
      const d = await runningDelivery(start.deliveryId);
      if (!d)
        return conn.refuse(
          ERROR_CODES.unknownDelivery,
          'uploads belong to a delivery this agent is running',
          start.transferId,
        );
      used.add(start.transferId);
      const queue = createChunkQueue((pause) => (pause ? ws.pause() : ws.resume()));
      const u: Upload = {
        start,
        queue,
        received: 0,
        hash: createHash('sha256'),
        requestId: d.requestId,
        stored: fileStore.put(queue),
      };
      // A failed store (disk full, abort) is reported at file_end or close; never an unhandled rejection.
      u.stored.catch(() => {});
      uploads.set(start.transferId, u);
    },

    chunk(transferId: string, data: Buffer) {
      const u = uploads.get(transferId);
      if (!u)
        return error(ERROR_CODES.transferUnknown, 'no upload with this transfer id is open', transferId);
      u.received += data.length;
      if (u.received > u.start.size || u.received > deps.maxFileBytes) {
        uploads.delete(transferId);
        u.queue.fail(new Error('more bytes than declared'));
        void auditUpload(u, 'failed', { reason: 'more bytes than declared', declared: u.start.size });
        return error(
          ERROR_CODES.fileSizeMismatch,
          `more than the declared ${u.start.size} bytes arrived`,
          transferId,
        );
      }
      u.hash.update(data);
      u.queue.push(data);
    },

    async endUpload(end: z.infer<typeof fileEndFrame>) {
      const u = uploads.get(end.transferId);
      if (!u)
        return error(ERROR_CODES.transferUnknown, 'no upload with this transfer id is open', end.transferId);
      uploads.delete(end.transferId);
      u.queue.end();
      let stored: Awaited<Upload['stored']>;
      try {
        stored = await u.stored;
      } catch (e) {
        await auditUpload(u, 'failed', { reason: (e as Error).message });
        return error(ERROR_CODES.internal, 'the file could not be stored', end.transferId);
      }
      const problem =
        stored.size !== end.size || stored.size !== u.start.size
          ? `size mismatch: agent says ${end.size}, declared ${u.start.size}, received ${stored.size}`
          : stored.sha256 !== end.sha256
            ? `SHA-256 mismatch: agent says ${end.sha256}, received ${stored.sha256}`
            : undefined;
      if (problem) {
        await fileStore.remove(stored.key);
        await auditUpload(u, 'failed', { reason: problem });
        return error(
          stored.sha256 !== end.sha256 ? ERROR_CODES.fileHashMismatch : ERROR_CODES.fileSizeMismatch,
          problem,
          end.transferId,
        );
      }
      const fileId = await db.transaction(async (tx) => {
        const [row] = await tx
          .insert(files)
          .values({
            kind: 'fetched',
            name: u.start.name,
            sourcePath: u.start.path ?? null,
            size: stored.size,
            sha256: stored.sha256,
            storageKey: stored.key,
            requestId: u.requestId,
            deliveryId: u.start.deliveryId,
            endpointId,
          })
          .returning({ id: files.id });
        await audit.append(
          {
            actorType: 'agent',
            actorId: endpointId,
            action: 'file.uploaded',
            outcome: 'ok',
            requestId: u.requestId,
            endpointId,
            details: {
              fileId: row!.id,
              deliveryId: u.start.deliveryId,
              name: u.start.name,
              path: u.start.path ?? null,
              size: stored.size,
              sha256: stored.sha256,
            },
          },
          tx,
        );
        return row!.id;
      });
      sendJson({
        type: 'file_stored',
        transferId: end.transferId,
        fileId,
        size: stored.size,
        sha256: stored.sha256,
      });
    },

    abortUpload(transferId: string, reason: string) {
      const u = uploads.get(transferId);
      if (!u) return;
      uploads.delete(transferId);
      u.queue.fail(new Error(`agent aborted: ${reason}`));
      void auditUpload(u, 'failed', { reason: `agent aborted: ${reason}` });
    },

    async download(get: z.infer<typeof fileGetFrame>) {
      if (used.has(get.transferId))
        return conn.refuse(
          ERROR_CODES.unexpected,
          'this transfer id was already used on this connection; start each transfer with a new id',
          get.transferId,
        );
      const d = await runningDelivery(get.deliveryId);
      if (!d)
        return conn.refuse(
          ERROR_CODES.unknownDelivery,
          'downloads belong to a delivery this agent is running',
          get.transferId,
        );
      used.add(get.transferId);
      const match = UUID.test(get.ref)
        ? eq(files.id, get.ref)
        : or(eq(files.sha256, get.ref.toLowerCase()), eq(files.name, get.ref));
      const [file] = await db
        .select()
        .from(files)
        .where(and(eq(files.kind, 'library'), match))
        .orderBy(desc(files.createdAt))
        .limit(1);
      if (!file)
        return error(ERROR_CODES.fileNotFound, `no library file matches "${get.ref}"`, get.transferId);
      downloads.add(get.transferId);
      sendJson({
        type: 'file_start',
        transferId: get.transferId,
        name: file.name,
        size: file.size,
        sha256: file.sha256,
      });
      const hash = createHash('sha256');
      let sent = 0;
      let outcome: 'ok' | 'failed' = 'ok';
      let reason: string | undefined;
      try {
        const stream = await fileStore.open(file.storageKey);
        for await (const raw of stream as AsyncIterable<Buffer>) {
          for (let off = 0; off < raw.length; off += MAX_CHUNK_BYTES) {
            if (closed) throw new Error('agent disconnected');
            const part = raw.subarray(off, off + MAX_CHUNK_BYTES);
            hash.update(part);
            sent += part.length;
            ws.send(makeChunk(get.transferId, part));
            // Backpressure: wait for the socket to drain instead of buffering a whole file in memory.
            while (ws.bufferedAmount > HIGH_WATER && !closed) await new Promise((r) => setTimeout(r, 5));
          }
        }
        const digest = hash.digest('hex');
        if (digest !== file.sha256 || sent !== file.size)
          throw new Error('stored file no longer matches its SHA-256');
        sendJson({ type: 'file_end', transferId: get.transferId, size: sent, sha256: digest });
      } catch (e) {
        outcome = 'failed';
        reason = (e as Error).message;
        sendJson({ type: 'file_abort', transferId: get.transferId, reason });
      } finally {
        downloads.delete(get.transferId);
      }
      await audit.append({
        actorType: 'agent',
        actorId: endpointId,
        action: 'file.downloaded',
        outcome,
        requestId: d.requestId,
        endpointId,
        details: {
          fileId: file.id,
          name: file.name,
          sha256: file.sha256,
          size: file.size,
          deliveryId: get.deliveryId,
          reason: reason ?? null,
        },
      });
    },

    /** The connection is gone: every open upload fails and leaves nothing behind. */
    close() {
      closed = true;
      for (const [id, u] of uploads) {
        uploads.delete(id);
        u.queue.fail(new Error('agent disconnected mid-transfer'));
        void auditUpload(u, 'failed', {
          reason: 'agent disconnected mid-transfer',
          received: u.received,
          declared: u.start.size,
        });
      }
    },
  };
}

export type Transfers = ReturnType<typeof createTransfers>;
