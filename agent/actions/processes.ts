// Processes: list them, and kill by pid or by name. A name matches the kernel's short name (`comm`, cut to
// 15 characters on Linux), the executable's file name, or the first word of the command line, so a long
// name such as `coinminer-helper-x86` still matches although its `comm` is `coinminer-helpe`.
// With a sandbox (the demo's dry-run agents) only processes whose working directory lies inside it are
// visible, so a demo can never kill a process it did not start.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, isAbsolute, relative } from 'node:path';

export interface ProcInfo {
  pid: number;
  name: string;
  cmdline: string;
}

interface ProcDetail extends ProcInfo {
  /** Full path of the executable, when readable. */
  exe?: string;
  /** argv[0] as the process was started. */
  argv0?: string;
  cwd?: string;
}

export const MAX_PROCESSES = 5000;

function inside(root: string, p: string | undefined): boolean {
  if (!p) return false;
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

const readlink = (p: string) => {
  try {
    return readlinkSync(p);
  } catch {
    return undefined;
  }
};

function linuxProcesses(withCwd: boolean): ProcDetail[] {
  const out: ProcDetail[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const name = readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').filter(Boolean);
      out.push({
        pid: Number(d),
        name,
        cmdline: argv.join(' ').slice(0, 1000),
        argv0: argv[0],
        exe: readlink(`/proc/${d}/exe`)?.replace(/ \(deleted\)$/, ''),
        cwd: withCwd ? readlink(`/proc/${d}/cwd`) : undefined,
      });
    } catch {
      // The process exited while we looked.
    }
  }
  return out;
}

function allProcesses(withCwd: boolean): ProcDetail[] {
  if (process.platform === 'linux') return linuxProcesses(withCwd);
  if (process.platform === 'win32') {
    // "Image Name","PID","Session Name","Session#","Mem Usage"
    const t = spawnSync('tasklist', ['/fo', 'csv', '/nh'], { encoding: 'utf8' });
    return (t.stdout ?? '')
      .split(/\r?\n/)
      .map((l) => /^"([^"]*)","(\d+)"/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ pid: Number(m[2]), name: m[1]!, cmdline: m[1]!, exe: m[1]! }));
  }
  const r = spawnSync('ps', ['-axo', 'pid=,comm='], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => /^\s*(\d+)\s+(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), name: basename(m[2]!), cmdline: m[2]!, exe: m[2]! }));
}

/**
 * The processes this agent may see: all of them, or with `sandbox` only those whose working directory is
 * inside it. Sandboxing needs /proc (Linux); elsewhere a sandboxed agent sees none, which is safe.
 */
function visibleProcesses(sandbox?: string): ProcDetail[] {
  if (!sandbox) return allProcesses(false);
  if (process.platform !== 'linux') return [];
  return allProcesses(true).filter((p) => inside(sandbox, p.cwd));
}

/**
 * The name to report: Linux cuts `comm` to 15 characters, so when the executable's or argv[0]'s file name
 * starts with it and is longer, that is the process's real name.
 */
function fullName(p: ProcDetail): string {
  const longer = [p.exe, p.argv0]
    .map((s) => s?.split(/[\\/]/).pop())
    .find((n) => n && n.length > p.name.length && n.startsWith(p.name));
  return longer ?? p.name;
}

const strip = (p: ProcDetail): ProcInfo => ({ pid: p.pid, name: fullName(p), cmdline: p.cmdline });

export function listProcesses(opts: { sandbox?: string; match?: string } = {}) {
  const all = visibleProcesses(opts.sandbox);
  const wanted = opts.match?.toLowerCase();
  const shown = wanted ? all.filter((p) => `${p.name} ${p.cmdline}`.toLowerCase().includes(wanted)) : all;
  return { processes: shown.slice(0, MAX_PROCESSES).map(strip), total: shown.length };
}

/** Whether `name` names this process: short name, executable file name, or argv[0] (or their full paths). */
export function nameMatches(p: Pick<ProcDetail, 'name' | 'exe' | 'argv0'>, name: string): boolean {
  if (name.includes('/') || name.includes('\\')) return p.exe === name || p.argv0 === name;
  const winName = (s: string | undefined) => s?.split(/[\\/]/).pop();
  return p.name === name || winName(p.exe) === name || winName(p.argv0) === name;
}

/** Kills by pid or by name (never the agent itself, its parent or pid 1). Reports what it killed. */
export function killProcesses(target: { pid?: number; name?: string }, opts: { sandbox?: string } = {}) {
  const self = new Set([process.pid, process.ppid, 1]);
  const visible = visibleProcesses(opts.sandbox);
  const victims =
    target.pid !== undefined
      ? visible.filter((p) => p.pid === target.pid)
      : visible.filter((p) => nameMatches(p, target.name ?? ''));
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
      killed.push(strip(p));
    } catch (e) {
      failed.push({ pid: p.pid, error: (e as Error).message });
    }
  }
  return { killed, failed, skipped, matched: victims.length };
}
