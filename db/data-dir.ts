// The data directory holds the embedded database, the secret key, the CA and fetched evidence. Anyone who can
// write into it can replace the database or the key, so it is created 0700 and a directory that others can
// write to is refused rather than used. Entry points also set `umask(0o077)` so every file made inside is
// 0600; PGlite unpacks its initial catalog with the modes stored in its bundle (0666, set by chmod, which
// umask does not touch), so its directory is also tightened after it opens.
import { chmodSync, lstatSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export class DataDirError extends Error {
  override name = 'DataDirError';
  readonly code = 'data_dir.unsafe';
}

/** The mode bits, as `chmod` prints them. */
const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

/**
 * Creates `dir` (0700) when missing and checks it: it must be a directory owned by this process's user that
 * no group or other user can write to; otherwise DataDirError says how to fix it. A directory that others
 * can only read or enter (the 0755 an older version created) is tightened to 0700, which also puts any
 * world-writable file an older version left inside out of their reach. Returns a note when it tightened.
 */
export function prepareDataDir(dir: string): { tightenedFrom?: string } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (!st.isDirectory()) {
    throw new DataDirError(`DATA_DIR ${dir} is not a directory. Point DATA_DIR at a directory.`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new DataDirError(
      `DATA_DIR ${dir} belongs to uid ${st.uid}, but this process runs as uid ${uid}. Run as the user that ` +
        `owns it (files made by another user would lock the server out of them), or: chown -R ${uid} ${dir}`,
    );
  }
  if (st.mode & 0o022) {
    throw new DataDirError(
      `DATA_DIR ${dir} can be written by other users (mode ${octal(st.mode)}), so they could replace the ` +
        `database or the secret key. Check its contents, then fix it with: chmod 700 ${dir}`,
    );
  }
  if (st.mode & 0o077) {
    chmodSync(dir, 0o700);
    return { tightenedFrom: octal(st.mode) };
  }
  return {};
}

/**
 * Removes group and other permissions from every file and directory under `dir` (symlinks are left alone).
 * Returns how many entries it changed.
 */
export function tightenTree(dir: string): number {
  let changed = 0;
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return;
    if (st.mode & 0o077) {
      chmodSync(path, st.mode & 0o700);
      changed++;
    }
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(dir);
  return changed;
}
