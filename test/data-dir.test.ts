// The embedded database's directory: private (0700, files 0600), refused when others can write to it, and
// held by one process at a time. A second process is told who holds it; a lock whose process is gone is
// taken over.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { readdir } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/client.ts';
import { DataDirError, prepareDataDir } from '../db/data-dir.ts';
import { DataDirLockedError, LOCK_FILE, type LockHolder } from '../db/data-dir-lock.ts';
import { runCli } from './helpers/server-process.ts';

const root = mkdtempSync(join(tmpdir(), 'ar-datadir-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(root, `d${++n}`);
const mode = (p: string) => statSync(p).mode & 0o777;

/** Paths under `dir` whose mode lets group or others in. */
async function openToOthers(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.map((e) => join(dir, e)).filter((p) => mode(p) & 0o077);
}

describe('DATA_DIR permissions', () => {
  it('creates a missing DATA_DIR with mode 0700', () => {
    const dir = fresh();
    expect(prepareDataDir(dir)).toEqual({});
    expect(mode(dir)).toBe(0o700);
  });

  it('refuses a DATA_DIR that others can write to, saying how to fix it', () => {
    const dir = fresh();
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    expect(() => prepareDataDir(dir)).toThrow(DataDirError);
    expect(() => prepareDataDir(dir)).toThrow(`chmod 700 ${dir}`);
    chmodSync(dir, 0o770);
    expect(() => prepareDataDir(dir)).toThrow(/can be written by other users \(mode 0770\)/);
    expect(mode(dir)).toBe(0o770); // refused, not changed
  });

  it('tightens a DATA_DIR that others can only read (what older versions made) to 0700', () => {
    const dir = fresh();
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    expect(prepareDataDir(dir)).toEqual({ tightenedFrom: '0755' });
    expect(mode(dir)).toBe(0o700);
  });

  it('refuses a DATA_DIR that is a file', () => {
    const file = fresh();
    writeFileSync(file, '');
    expect(() => prepareDataDir(file)).toThrow();
  });

  it('leaves no embedded database file readable or writable by others', async () => {
    const dir = fresh();
    const db = await openDatabase({ dataDir: dir, role: 'test' });
    try {
      await db.db.execute('create table scratch (x int)');
      expect(mode(dir)).toBe(0o700);
      expect(await openToOthers(join(dir, 'pglite'))).toEqual([]);
      expect(mode(join(dir, LOCK_FILE))).toBe(0o600);
    } finally {
      await db.close();
    }
  });
});

describe('the embedded database lock', () => {
  it('refuses a second process with the holder pid, and lets it in once the holder closes', async () => {
    const dir = fresh();
    const db = await openDatabase({ dataDir: dir, role: 'demo' });
    const holder = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as LockHolder;
    expect(holder).toMatchObject({ pid: process.pid, role: 'demo' });
    try {
      const refused = await runCli(['user', 'list'], { DATA_DIR: dir, DATABASE_URL: '' });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`in use by the demo (pid ${process.pid}`);
      expect(refused.stderr).toContain('stop it, or use the admin CLI, which talks to the running server');
      expect(refused.stderr).toContain('(data_dir.locked)');
    } finally {
      await db.close();
    }
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    const allowed = await runCli(['user', 'list'], { DATA_DIR: dir, DATABASE_URL: '' });
    expect(allowed.code).toBe(0);
  });

  it('refuses a second open in the same process', async () => {
    const dir = fresh();
    const db = await openDatabase({ dataDir: dir, role: 'server' });
    try {
      await expect(openDatabase({ dataDir: dir, role: 'cli' })).rejects.toBeInstanceOf(DataDirLockedError);
    } finally {
      await db.close();
    }
  });

  it('takes over the lock of a process that is gone, and says so', async () => {
    const dir = fresh();
    mkdirSync(dir, { mode: 0o700 });
    const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
    const stale: LockHolder = {
      pid: gone,
      startedAt: '2026-11-01T00:00:00.000Z',
      role: 'server',
      hostname: hostname(),
    };
    writeFileSync(join(dir, LOCK_FILE), `${JSON.stringify(stale)}\n`, { mode: 0o600 });
    const seen: LockHolder[] = [];
    const db = await openDatabase({ dataDir: dir, role: 'server', onStaleLock: (h) => seen.push(h) });
    try {
      expect(seen).toEqual([stale]);
      expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8'))).toMatchObject({ pid: process.pid });
    } finally {
      await db.close();
    }
  });
});
