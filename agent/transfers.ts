// File transfers from the agent's side. Uploads hash as they read and tell the broker the SHA-256 at the
// end; the broker compares it with what it received. Downloads are written to a temporary file next to the
// destination, checked against the announced size and SHA-256, fsync'd and only then renamed into place.
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { MAX_CHUNK_BYTES, makeChunk } from '../protocol/frames.ts';
import type { Link } from './link.ts';

export interface UploadResult {
  fileId: string;
  size: number;
  sha256: string;
}

/** Streams a file to the broker. `bytesPerSecond` throttles the upload on slow or metered links. */
export async function uploadFile(
  link: Link,
  o: { deliveryId: string; path: string; size: number; name?: string; bytesPerSecond?: number },
): Promise<UploadResult> {
  const transferId = randomUUID();
  const hash = createHash('sha256');
  let settle!: { resolve: (r: UploadResult) => void; reject: (e: Error) => void };
  const done = new Promise<UploadResult>((resolve, reject) => {
    settle = { resolve, reject };
  });
  done.catch(() => {});
  link.register(transferId, {
    frame(f) {
      if (f.type === 'file_stored') settle.resolve({ fileId: f.fileId, size: f.size, sha256: f.sha256 });
      else if (f.type === 'error')
        settle.reject(new Error(`broker refused the upload (${f.code}): ${f.message}`));
    },
    chunk() {},
    closed() {
      settle.reject(new Error('the connection to the broker closed mid-transfer'));
    },
  });
  let failed: Error | undefined;
  done.catch((e) => {
    failed = e;
  });
  try {
    link.send({
      type: 'file_start',
      transferId,
      deliveryId: o.deliveryId,
      name: o.name ?? basename(o.path),
      path: o.path,
      size: o.size,
    });
    const started = Date.now();
    let sent = 0;
    for await (const buf of createReadStream(o.path, {
      highWaterMark: MAX_CHUNK_BYTES,
    }) as AsyncIterable<Buffer>) {
      if (failed) throw failed;
      hash.update(buf);
      link.sendBinary(makeChunk(transferId, buf));
      sent += buf.length;
      await link.drained();
      if (o.bytesPerSecond) {
        const due = started + (sent / o.bytesPerSecond) * 1000;
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      }
    }
    if (sent !== o.size)
      throw new Error(`the file changed while it was read (${o.size} bytes expected, ${sent} read)`);
    link.send({ type: 'file_end', transferId, size: sent, sha256: hash.digest('hex') });
    return await done;
  } catch (e) {
    if (link.isOpen())
      link.send({ type: 'file_abort', transferId, reason: (e as Error).message.slice(0, 900) });
    throw e;
  } finally {
    link.unregister(transferId);
  }
}

/**
 * Fetches a library file into `dest` atomically; refuses to keep it unless size and SHA-256 match what the
 * broker announced and, with `expectSha256`, what was approved.
 */
export async function downloadFile(
  link: Link,
  o: { deliveryId: string; ref: string; dest: string; maxBytes: number; expectSha256?: string },
): Promise<{ path: string; size: number; sha256: string; name: string }> {
  const transferId = randomUUID();
  const tmp = join(dirname(o.dest), `.${basename(o.dest)}.ar-partial-${transferId.slice(0, 8)}`);
  const fh = await open(tmp, 'wx', 0o600);
  const hash = createHash('sha256');
  let received = 0;
  let announced: { size: number; sha256: string; name: string } | undefined;
  let writes: Promise<unknown> = Promise.resolve();
  try {
    const result = await new Promise<{ size: number; sha256: string }>((resolve, reject) => {
      link.register(transferId, {
        frame(f) {
          if (f.type === 'file_start') {
            if (f.size > o.maxBytes)
              return reject(new Error(`the file is ${f.size} bytes; this agent accepts ${o.maxBytes}`));
            if (o.expectSha256 && f.sha256 !== o.expectSha256)
              return reject(
                new Error(
                  `the library file's SHA-256 is now ${f.sha256}, not the approved ${o.expectSha256}; nothing was written`,
                ),
              );
            announced = { size: f.size, sha256: f.sha256, name: f.name };
          } else if (f.type === 'file_end') {
            resolve({ size: f.size, sha256: f.sha256 });
          } else if (f.type === 'file_abort') {
            reject(new Error(`the broker aborted the transfer: ${f.reason}`));
          } else if (f.type === 'error') {
            reject(new Error(`the broker refused the download (${f.code}): ${f.message}`));
          }
        },
        chunk(data) {
          received += data.length;
          if (!announced || received > announced.size)
            return reject(new Error('more bytes arrived than announced'));
          hash.update(data);
          const copy = Buffer.from(data);
          writes = writes.then(() => fh.write(copy));
        },
        closed() {
          reject(new Error('the connection to the broker closed mid-transfer'));
        },
      });
      link.send({ type: 'file_get', transferId, deliveryId: o.deliveryId, ref: o.ref });
    });
    await writes;
    const digest = hash.digest('hex');
    if (!announced || received !== announced.size || received !== result.size) {
      throw new Error(`size mismatch: announced ${announced?.size}, received ${received}`);
    }
    if (
      digest !== announced.sha256 ||
      digest !== result.sha256 ||
      (o.expectSha256 && digest !== o.expectSha256)
    ) {
      throw new Error(`SHA-256 mismatch: expected ${announced.sha256}, received ${digest}`);
    }
    await fh.sync();
    await fh.close();
    await rename(tmp, o.dest);
    return { path: o.dest, size: received, sha256: digest, name: announced.name };
  } catch (e) {
    await writes.catch(() => {});
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  } finally {
    link.unregister(transferId);
  }
}
