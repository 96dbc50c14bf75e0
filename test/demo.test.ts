// `npm run demo` as a newcomer uses it: the README walkthrough (isolate three endpoints, confirm on the step-up
// page, approve as the commander, see the macOS exclusion, the offline Windows endpoint's queued delivery and
// its delivery once it comes online), then every command `help` lists. Step-up pages are used over HTTP with
// their own form and CSRF token, as a browser without JavaScript would. The demo's agents change nothing
// outside its temporary directory: the decoy it kills is its own, and the test runner is still alive.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generate } from 'otplib';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from './helpers/ports.ts';

describe('npm run demo', () => {
  let child: ChildProcess | undefined;
  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.stdin!.end('/quit\n');
      await new Promise((r) => child!.once('exit', r));
    }
  });

  it('follows the README walkthrough and every command help lists', { timeout: 240_000 }, async () => {
    const [http, broker] = [await freePort(), await freePort()];
    child = spawn(process.execPath, ['--import', 'tsx', 'demo.ts'], {
      env: { ...process.env, HTTP_PORT: String(http), BROKER_PORT: String(broker), LOG_LEVEL: 'silent' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    /** Waits for `re` in the output written after `from` (an offset into it). */
    const until = async (re: RegExp, from = 0, ms = 60_000): Promise<RegExpMatchArray> => {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = out.slice(from).match(re);
        if (m) return m;
        if (child!.exitCode !== null || Date.now() > deadline)
          throw new Error(`demo output never matched ${re}:\n${out.slice(from).slice(-4000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    /** Types a line and returns the output offset it was typed at. */
    const type = (line: string) => {
      const at = out.length;
      child!.stdin!.write(`${line}\n`);
      return at;
    };
    const secrets: Record<string, { password: string; secret: string }> = {};
    /** Completes the step-up page a link leads to, as `who`, with the page's own form. */
    async function stepUp(link: string, who: string) {
      const page = await fetch(link);
      expect(page.status).toBe(200);
      const html = await page.text();
      const csrf = html.match(/name="_csrf" value="([^"]+)"/)![1]!;
      const cookie = page.headers
        .getSetCookie()
        .map((c) => c.split(';')[0])
        .join('; ');
      const code = await freshCode(who);
      const res = await fetch(link, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
        body: new URLSearchParams({ _csrf: csrf, password: secrets[who]!.password, code }).toString(),
        redirect: 'manual',
      });
      expect([200, 303]).toContain(res.status);
      return html;
    }
    const link = /http:\/\/localhost:\d+\/stepup\/[A-Za-z0-9_-]+/;
    /**
     * A code not used before: each is accepted once, and every approval needs its own step-up, so quick
     * successive ones take the next 30-second step's code (accepted one step early), or wait for it.
     */
    const lastStep: Record<string, number> = {};
    async function freshCode(who: string): Promise<string> {
      for (;;) {
        const now = Math.floor(Date.now() / 1000 / 30);
        const step = Math.max((lastStep[who] ?? 0) + 1, now);
        if (step <= now + 1) {
          lastStep[who] = step;
          return generate({ secret: secrets[who]!.secret, epoch: step * 30 });
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    }

    await until(/Console chat on #incident/);
    for (const who of ['analyst', 'commander']) {
      const [, password, secret] = (await until(
        new RegExp(`${who}\\s+\\S.*?password (\\S+)\\s+TOTP secret (\\S+)`),
      ))!;
      secrets[who] = { password: password!, secret: secret! };
    }
    const sandbox = (await until(/web-01 {2}Linux, online {4}sandbox (\S+)/))[1]!;
    const decoy = (await until(/coinminer-xmrig-helper \(pid (\d+)\)/))[1]!;

    // 1. The walkthrough's first command: three endpoints, one excluded, one offline.
    let at = type('isolate web-01 ws-02 mac-03 --reason "C2 beacon" --case IR-1');
    await stepUp((await until(link, at))[0]!, 'analyst');
    const [card, ref] = await until(
      /▌ (R-[0-9A-Z]{6}) · isolate on web-01, ws-02[\s\S]*?\[Approve\] \[Deny\]/,
      at,
    );
    expect(card).toMatch(
      /Excluded \(1\): OS not supported \(1\): mac-03 \(macOS is not supported for actions, scripts or action groups\)/,
    );
    expect(card).toMatch(/Case: IR-1/);

    // 2. The commander approves on the page; web-01 answers, ws-02 waits in the queue until it comes online.
    type('/as commander');
    at = type(`/approve ${ref}`);
    const approvePage = await stepUp((await until(link, at))[0]!, 'commander');
    expect(approvePage).toContain('What the digest covers');
    await until(/web-01: isolated from the network \(dry run: simulated, nothing changed\)/, at);
    at = type('queue ws-02');
    await until(/ws-02 \(offline[^)]*\) has 1 pending delivery/, at);
    at = type('/online ws-02');
    await until(/ws-02: isolated from the network \(dry run: simulated, nothing changed\)/, at, 90_000);
    await until(new RegExp(`${ref} completed: succeeded 2`), at);

    // 3. Every other command help lists, as the analyst.
    type('/as analyst');
    at = type('help');
    // The built-ins are listed too, in name order with the demo's own scripts.
    await until(
      /Scripts for run: [^\n]*isolation-control \(built-in\), list-processes \(read-only\), [^\n]*sinkhole-domain[\s\S]*\/online ws-02/,
      at,
    );
    at = type('processes web-01');
    await until(new RegExp(`${decoy}\\s+coinminer-xmrig-helper`), at);
    at = type('kill web-01 coinminer-xmrig-helper --reason "miner"');
    at = await approveNext(at);
    await until(new RegExp(`web-01: killed 1 process \\(${decoy} coinminer-xmrig-helper\\)`), at);
    // The demo's kill reaches only its own decoys: the test runner is not among them, and is still alive.
    at = type(`kill web-01 ${process.pid} --reason "should not reach"`);
    at = await approveNext(at);
    await until(
      /web-01: kill failed — no process matches \d+ among the processes this sandboxed agent may touch/,
      at,
    );
    expect(() => process.kill(process.pid, 0)).not.toThrow();

    at = type(`fetch web-01 ${join(sandbox, 'evidence', 'dropper.bin')} --reason triage`);
    at = await approveNext(at);
    const [, fileId] = await until(/File id ([0-9a-f-]{36})\. Get a personal download link/, at);
    at = type('fetch web-01 /etc/hostname --reason "outside the sandbox"');
    at = await approveNext(at);
    await until(/web-01: fetch failed — .*outside the allowed root/, at);
    at = type(`download ${fileId}`);
    await until(/Download dropper\.bin \(\d+ bytes, sha256 [0-9a-f]{64}\) as a zip/, at);

    const dest = join(sandbox, 'opt', 'remediate.sh');
    at = type(`put web-01 remediate.sh ${dest} --reason fix`);
    at = await approveNext(at);
    await until(/web-01: wrote .*remediate\.sh — \d+ bytes, sha256 [0-9a-f]{64} \(the approved file\)/, at);
    expect(readFileSync(dest, 'utf8')).toContain('remediated');

    at = type('run sinkhole-domain web-01 domain=evil.example --reason block');
    at = await approveNext(at);
    await until(/web-01: script exited with code 0[\s\S]*sinkholed evil\.example/, at);
    expect(readFileSync(join(sandbox, 'hosts'), 'utf8')).toContain('0.0.0.0 evil.example');
    at = type('run list-processes web-01');
    await until(/processes\n/, at);

    at = type('scripts');
    await until(/sinkhole-domain v1[\s\S]*domain=<string, required/, at);
    at = type('files');
    await until(/remediate\.sh — .*sha256 [0-9a-f]{64}/, at);
    at = type('status');
    await until(/Your recent requests/, at);
    at = type(`status ${ref}`);
    await until(new RegExp(`${ref}: isolate on web-01, ws-02 — completed[\\s\\S]*Excluded \\(1\\)`), at);
    at = type(`audit ${ref}`);
    await until(
      new RegExp(`Latest audit records for ${ref}:[\\s\\S]*request\\.created ${ref} ok by analyst`),
      at,
    );
    at = type('audit web-01');
    await until(/Latest audit records for web-01/, at);
    at = type('history');
    await until(/Session history and audit log: http/, at);
    at = type('upload');
    await until(/Add a file to the library: http/, at);
    at = type('session start web-01 --reason "live look"');
    // The analyst's step-up window from the walkthrough may still be open; then no link is needed.
    const started = await Promise.race([
      until(link, at, 10_000).then((x) => x[0]!),
      until(/session with web-01 started/, at, 10_000).then(() => undefined),
    ]);
    if (started) await stepUp(started, 'analyst');
    await until(/session with web-01 started/, at);
    at = type('session stop web-01');
    await until(/session with web-01 stopped/, at);
    at = type('unisolate web-01 --reason "clean"');
    at = await approveNext(at);
    await until(/web-01: isolation lifted/, at);
    at = type('isolate web-01 --reason x');
    const [, cancelRef] = await until(/▌ (R-[0-9A-Z]{6}) · isolate on web-01/, at);
    at = type(`cancel ${cancelRef}`);
    await until(new RegExp(`Cancelled ${cancelRef}`), at);
    at = type('isolate web-01 --reason y');
    const [, denyRef] = await until(/▌ (R-[0-9A-Z]{6}) · isolate on web-01/, at);
    type('/as commander');
    at = type(`/deny ${denyRef} --reason "not this host"`);
    await until(/Denied by Cole Commander: not this host/, at);
    at = type(`deny ${denyRef}`);
    await until(/already denied|nothing to decide/, at);
    at = type('grant analyst approver');
    await until(/admin/i, at);
    at = type('frobnicate');
    await until(/Unknown command "frobnicate"/, at);
    at = type('statsu');
    await until(/Did you mean "status"\?/, at);
    expect(existsSync(sandbox)).toBe(true);

    /** Approves the request a command just made (as the commander, with the page), back as the analyst. */
    async function approveNext(from: number): Promise<number> {
      const [, r] = await until(/▌ (R-[0-9A-Z]{6}) · [^\n]*\n\s+state: pending_approval/, from);
      type('/as commander');
      const a = type(`/approve ${r}`);
      // A commander with a live step-up window approves at once; otherwise the click sends a link.
      const m = await Promise.race([
        until(link, a, 10_000).then((x) => x[0]!),
        until(/Approved by Cole Commander/, a, 10_000).then(() => undefined),
      ]);
      if (m) await stepUp(m, 'commander');
      type('/as analyst');
      return a;
    }
  });
});
