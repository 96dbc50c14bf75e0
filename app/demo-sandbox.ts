// What the demo's agents have to work on, all inside each agent's sandbox directory: a few evidence files
// to fetch and harmless decoy processes to kill (copies of `sleep` whose working directory is the sandbox,
// the only processes a sandboxed agent can see). Nothing here touches anything outside the demo's directory.
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface DemoSandbox {
  dir: string;
  evidence: string[];
  decoys: { name: string; pid: number }[];
  stop(): void;
}

const SLEEP = ['/bin/sleep', '/usr/bin/sleep'].find((p) => existsSync(p));

/** Names a responder would hunt for; the first is longer than the 15 characters Linux keeps in `comm`. */
const DECOYS = ['coinminer-xmrig-helper', 'beacon'];

export function prepareSandbox(dir: string, opts: { decoys: boolean }): DemoSandbox {
  mkdirSync(join(dir, 'evidence'), { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, 'opt'), { recursive: true, mode: 0o700 });
  const evidence = [
    [
      'evidence/dropper.bin',
      `MZ\u0090\u0000 pretend dropper, not a real executable\n${'suspicious bytes '.repeat(200)}\n`,
    ],
    [
      'evidence/auth.log',
      'Nov 29 03:12:44 web-01 sshd[4242]: Accepted publickey for root from 203.0.113.66 port 50122\n'.repeat(
        20,
      ),
    ],
  ].map(([rel, text]) => {
    const path = join(dir, rel!);
    writeFileSync(path, text!, { mode: 0o600 });
    return path;
  });
  const children: ChildProcess[] = [];
  const decoys: { name: string; pid: number }[] = [];
  if (opts.decoys && SLEEP) {
    mkdirSync(join(dir, 'bin'), { recursive: true, mode: 0o700 });
    for (const name of DECOYS) {
      const bin = join(dir, 'bin', name);
      if (!existsSync(bin)) copyFileSync(SLEEP, bin);
      const child = spawn(bin, ['86400'], { cwd: dir, stdio: 'ignore', detached: false });
      children.push(child);
      decoys.push({ name, pid: child.pid! });
    }
  }
  return {
    dir,
    evidence,
    decoys,
    stop() {
      for (const c of children) c.kill('SIGKILL');
    },
  };
}
