// One writer for the embedded database. PGlite has no locking of its own: two processes that open one data
// directory each keep their own copy of the catalog in memory and overwrite each other's pages (the audit
// chain lost a record that way). The process that opens it holds `DATA_DIR/pglite.lock`; another process is
// refused with the holder's pid. A lock whose process is gone is taken over, and the taker says so.
import {
  closeSync,
  existsSync,
  linkSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';

export const LOCK_FILE = 'pglite.lock';

const holderSchema = z.object({
  pid: z.number().int().positive(),
  startedAt: z.string().max(40),
  role: z.string().max(40),
  hostname: z.string().max(255).optional(),
});
export type LockHolder = z.infer<typeof holderSchema>;

/** How a refused process is told who holds the lock. */
const ROLE_NAMES: Record<string, string> = {
  server: 'the server',
  cli: 'the admin CLI',
  demo: 'the demo',
};

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
  readonly code = 'data_dir.locked';
  constructor(
    readonly dataDir: string,
    readonly holder: LockHolder,
  ) {
    const who = ROLE_NAMES[holder.role] ?? `another process (${holder.role})`;
    const where = holder.hostname && holder.hostname !== hostname() ? ` on ${holder.hostname}` : '';
    const what = holder.pid
      ? `${who} (pid ${holder.pid}${where}, since ${holder.startedAt})`
      : 'another process that is starting up';
    super(
      `The embedded database in ${dataDir} is in use by ${what}. Only one process can open it: stop it, ` +
        'or use the admin CLI, which talks to the running server.',
    );
  }
}

export interface DataDirLock {
  holder: LockHolder;
  /** Removes the lock file if it is still this process's. Idempotent. */
  release(): void;
}

/** Dirs this process holds, so a second open in the same process is refused rather than taken as stale. */
const heldHere = new Set<string>();

/** True when `pid` is a running process (EPERM: it runs, as another user). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The lock's holder when its file is readable, else undefined (no lock, or a torn file). */
export function readLockHolder(dataDir: string): LockHolder | undefined {
  try {
    return holderSchema.parse(JSON.parse(readFileSync(join(dataDir, LOCK_FILE), 'utf8')));
  } catch {
    return undefined;
  }
}

/**
 * Whether the holder still runs. A holder on another host (a shared volume) cannot be checked and counts as
 * live. Our own pid without our own lock is a previous life of this process id (a restarted container).
 */
export function isHolderLive(holder: LockHolder, dataDir: string): boolean {
  if (holder.hostname && holder.hostname !== hostname()) return true;
  if (holder.pid === process.pid) return heldHere.has(resolve(dataDir));
  return isProcessAlive(holder.pid);
}

/**
 * Takes the lock on `dataDir` for this process, or throws DataDirLockedError naming the live holder. The file
 * is written in full under a private name and then hard-linked into place: link(2) fails when the name
 * exists, exactly like O_EXCL, and a reader never sees a half-written holder. A stale lock is removed under
 * a short-lived takeover guard (itself O_EXCL) so two processes cannot both remove it and both win.
 */
export function acquireDataDirLock(
  dir: string,
  role: string,
  onStale: (stale: LockHolder) => void = () => {},
): DataDirLock {
  const dataDir = resolve(dir);
  const path = join(dataDir, LOCK_FILE);
  const holder: LockHolder = {
    pid: process.pid,
    startedAt: new Date().toISOString(),
    role,
    hostname: hostname(),
  };
  const body = `${JSON.stringify(holder)}\n`;
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, body, { mode: 0o600 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(tmp, path);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const current = readLockHolder(dataDir);
      const unknown: LockHolder = { pid: 0, startedAt: '', role: 'unknown' };
      if (current && isHolderLive(current, dataDir)) throw new DataDirLockedError(dataDir, current);
      // Unreadable but fresh (someone is editing it, or a disk filled up mid-write): held, rather than
      // guessed at; an unreadable lock older than a few seconds is taken over.
      if (!current && !lockFileIsOld(path)) throw new DataDirLockedError(dataDir, unknown);
      if (attempt >= 3) throw new DataDirLockedError(dataDir, current ?? unknown);
      if (removeStaleLock(path, current) && current) onStale(current);
    }
  } finally {
    unlinkSync(tmp);
  }
  heldHere.add(dataDir);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    heldHere.delete(dataDir);
    process.removeListener('exit', release);
    try {
      if (readFileSync(path, 'utf8') === body) unlinkSync(path);
    } catch {
      // already gone
    }
  };
  process.on('exit', release);
  return { holder, release };
}

function lockFileIsOld(path: string): boolean {
  try {
    return Date.now() - statSync(path).mtimeMs > 10_000;
  } catch {
    return true;
  }
}

/**
 * Removes the lock file only if it still holds what we judged stale, under the takeover guard. Returns
 * whether it did.
 */
function removeStaleLock(path: string, stale: LockHolder | undefined): boolean {
  const guard = `${path}.takeover`;
  let fd: number;
  try {
    fd = openSync(guard, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    // Someone else is taking over right now; a guard left by a crash mid-takeover expires.
    if (lockFileIsOld(guard)) unlinkSync(guard);
    return false;
  }
  try {
    if (!existsSync(path)) return false;
    const now = readLockHolder(dirname(path));
    // Another process may have taken over and locked it afresh since we read it: leave that one alone.
    const same = stale ? now?.pid === stale.pid && now.startedAt === stale.startedAt : !now;
    if (same) unlinkSync(path);
    return same;
  } finally {
    closeSync(fd);
    unlinkSync(guard);
  }
}
