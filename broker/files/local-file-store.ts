// FileStore on a local directory (DATA_DIR/files by default). A file is streamed into a temporary name while
// it is hashed and only renamed into place once complete, so a cut transfer never leaves a partial file
// under a real key.
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { access, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { NotFound } from '../../bot/errors.ts';
import type { FileStore } from '../../bot/ports.ts';

const KEY = /^[0-9a-f-]{36}$/;

export function createLocalFileStore(dir: string): FileStore & { pathOf(key: string): string } {
  let ready: Promise<unknown> | undefined;
  const ensureDir = () => {
    ready ??= mkdir(dir, { recursive: true, mode: 0o700 });
    return ready;
  };
  const pathOf = (key: string) => {
    // Keys are ours (uuids); anything else could walk out of the directory.
    if (!KEY.test(key))
      throw new NotFound('file.unknown', `no stored file has the key "${key.slice(0, 80)}"`);
    return join(dir, key);
  };

  return {
    pathOf,
    async put(source) {
      await ensureDir();
      const key = randomUUID();
      const tmp = join(dir, `.partial-${key}`);
      const hash = createHash('sha256');
      let size = 0;
      async function* tap(src: AsyncIterable<Uint8Array>) {
        for await (const chunk of src) {
          hash.update(chunk);
          size += chunk.byteLength;
          yield chunk;
        }
      }
      try {
        await pipeline(source as AsyncIterable<Uint8Array>, tap, createWriteStream(tmp, { mode: 0o600 }));
        await rename(tmp, join(dir, key));
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
      return { key, size, sha256: hash.digest('hex') };
    },
    async open(key) {
      const p = pathOf(key);
      try {
        await access(p);
      } catch {
        throw new NotFound('file.unknown', `no stored file has the key "${key}"`);
      }
      return createReadStream(p);
    },
    async remove(key) {
      await rm(pathOf(key), { force: true });
    },
  };
}
