// What the benchmarks share: the spread of repeated runs, the process's file-descriptor limit, a settled
// memory reading, and the bare mTLS floor of ../shared/floor/run.sh run beside them.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export interface Spread {
  median: number;
  min: number;
  max: number;
}

/** Median, min and max of repeated runs (the median of three is the middle one). */
export function spread(values: number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  return { median: s[Math.floor((s.length - 1) / 2)]!, min: s[0]!, max: s[s.length - 1]! };
}

/** The soft limit on open files this process got (children inherit it). */
export function fdLimit(): number {
  const out = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout.trim();
  return out === 'unlimited' ? Number.POSITIVE_INFINITY : Number(out);
}

/**
 * Re-runs this script under bash with the open-file limit raised to the hard limit and with --expose-gc, when
 * either is missing; returns only in the process that has both. `need` is how many descriptors the run uses.
 */
export function ensureLimitsOrReexec(script: string, need: number): void {
  if (process.env.AR_BENCH_REEXEC || (fdLimit() >= need && typeof global.gc === 'function')) return;
  const args = process.argv.slice(2).map((a) => `'${a.replace(/'/g, `'\\''`)}'`);
  const r = spawnSync(
    'bash',
    [
      '-c',
      `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec node --expose-gc --import tsx '${script}' ${args.join(' ')}`,
    ],
    { stdio: 'inherit', env: { ...process.env, AR_BENCH_REEXEC: '1' } },
  );
  process.exit(r.status ?? 1);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Resident memory once garbage collection has settled: forced collections until two readings agree within
 * 1% (at most five rounds). A single gc() right after a burst leaves freed buffers and sweeping work behind,
 * which is how a per-connection figure came out negative.
 */
export async function settledRss(): Promise<number> {
  let prev = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    global.gc?.();
    await sleep(300);
    const rss = process.memoryUsage().rss;
    if (Math.abs(rss - prev) / rss < 0.01) return rss;
    prev = rss;
  }
  return prev;
}

export type FloorRun = Record<string, number | string>;

/** One run of the bare mTLS WebSocket floor with `n` connections, or undefined when the script is absent. */
export function floorRun(root: string, n: number): FloorRun | undefined {
  const script = join(root, '..', 'shared', 'floor', 'run.sh');
  if (!existsSync(script)) return undefined;
  const out = execFileSync('bash', [script], {
    cwd: root,
    env: { ...process.env, N: String(n) },
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

/** Per numeric key, the spread over runs. */
export function spreadEach<T extends Record<string, unknown>>(runs: T[]): Record<string, Spread> {
  const out: Record<string, Spread> = {};
  for (const k of Object.keys(runs[0] ?? {})) {
    const vals = runs.map((r) => r[k]).filter((v): v is number => typeof v === 'number');
    if (vals.length === runs.length) out[k] = spread(vals);
  }
  return out;
}
