// Read-only investigation: list processes, and kill by pid or by exact process name.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcInfo {
  pid: number;
  name: string;
  cmdline: string;
}

const MAX_PROCESSES = 5000;

export function listProcesses(): ProcInfo[] {
  if (process.platform === 'linux') {
    const out: ProcInfo[] = [];
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const name = readFileSync(`/proc/${d}/comm`, 'utf8').trim();
        const cmdline = readFileSync(`/proc/${d}/cmdline`, 'utf8')
          .replaceAll('\0', ' ')
          .trim()
          .slice(0, 1000);
        out.push({ pid: Number(d), name, cmdline });
      } catch {
        // The process exited while we looked.
      }
      if (out.length >= MAX_PROCESSES) break;
    }
    return out;
  }
  if (process.platform === 'win32') {
    // "Image Name","PID","Session Name","Session#","Mem Usage"
    const t = spawnSync('tasklist', ['/fo', 'csv', '/nh'], { encoding: 'utf8' });
    return (t.stdout ?? '')
      .split(/\r?\n/)
      .map((l) => /^"([^"]*)","(\d+)"/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .slice(0, MAX_PROCESSES)
      .map((m) => ({ pid: Number(m[2]), name: m[1]!, cmdline: m[1]! }));
  }
  const r = spawnSync('ps', ['-axo', 'pid=,comm='], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => /^\s*(\d+)\s+(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .slice(0, MAX_PROCESSES)
    .map((m) => ({ pid: Number(m[1]), name: m[2]!.split('/').pop()!, cmdline: m[2]! }));
}

/** Kills by pid or by exact name (never the agent itself or pid 1). Reports what it killed. */
export function killProcesses(target: { pid?: number; name?: string }) {
  const self = new Set([process.pid, process.ppid, 1]);
  const victims =
    target.pid !== undefined
      ? listProcesses().filter((p) => p.pid === target.pid)
      : listProcesses().filter((p) => p.name === target.name);
  const killed: ProcInfo[] = [];
  const failed: { pid: number; error: string }[] = [];
  const skipped: number[] = [];
  for (const p of victims) {
    if (self.has(p.pid)) {
      skipped.push(p.pid);
      continue;
    }
    try {
      process.kill(p.pid, 'SIGKILL');
      killed.push(p);
    } catch (e) {
      failed.push({ pid: p.pid, error: (e as Error).message });
    }
  }
  return { killed, failed, skipped, matched: victims.length };
}
