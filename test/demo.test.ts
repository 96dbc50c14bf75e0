// `npm run demo` as a newcomer uses it: type an isolate request in the console chat, follow the step-up
// link the demo prints (here over HTTP with the page's own form and CSRF token), and see the request card
// pending approval, with the macOS endpoint excluded.
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { generate } from 'otplib';
import { afterAll, describe, expect, it } from 'vitest';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

describe('npm run demo', () => {
  let child: ChildProcess | undefined;
  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.stdin!.end('/quit\n');
      await new Promise((r) => child!.once('exit', r));
    }
  });

  it('gets an isolate request to a pending approval in the console chat', async () => {
    const [http, broker] = [await freePort(), await freePort()];
    child = spawn(process.execPath, ['--import', 'tsx', 'demo.ts'], {
      env: { ...process.env, HTTP_PORT: String(http), BROKER_PORT: String(broker), LOG_LEVEL: 'silent' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const until = async (re: RegExp, ms = 90_000): Promise<RegExpMatchArray> => {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = out.match(re);
        if (m) return m;
        if (child!.exitCode !== null || Date.now() > deadline)
          throw new Error(`demo output never matched ${re}:\n${out}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };

    await until(/Console chat on #incident/);
    const [, password, secret] = await until(
      /analyst\s+active_response\s+password (\S+)\s+TOTP secret (\S+)/,
    );
    child.stdin!.write('isolate web-01 mac-03 --reason "demo" --case IR-1\n');
    const [link] = await until(/http:\/\/localhost:\d+\/stepup\/[A-Za-z0-9_-]+/);

    // The step-up page, as a browser without JavaScript would use it: GET the form, POST it back.
    const page = await fetch(link!);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toMatch(/isolate/);
    const csrf = html.match(/name="_csrf" value="([^"]+)"/)![1]!;
    const cookie = page.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .join('; ');
    const code = await generate({ secret: secret! });
    const done = await fetch(link!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
      body: new URLSearchParams({ _csrf: csrf, password: password!, code }).toString(),
      redirect: 'manual',
    });
    expect([200, 303]).toContain(done.status);

    const [card] = await until(
      /▌ R-[0-9A-Z]{6} · isolate on web-01[\s\S]*?state: pending_approval[\s\S]*?\[Approve\] \[Deny\]/,
    );
    expect(card).toMatch(/Excluded \(1\): mac-03: .*macOS/);
    expect(card).toMatch(/Case: IR-1/);
  });
});
