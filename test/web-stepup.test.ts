import { Writable } from 'node:stream';
import { and, eq } from 'drizzle-orm';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditLog, stepUpChallenges, stepUpWindows } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import {
  codeAt,
  createWebFixture,
  formState,
  PASSWORD,
  sampleRequestView,
  type TestUser,
  type WebFixture,
} from './helpers/web-stepup.ts';

describe.each(drivers)('step-up page on %s', (driver) => {
  let f: WebFixture;
  let approver: TestUser;
  beforeAll(async () => {
    f = await createWebFixture(driver, { request: sampleRequestView(), lockoutThreshold: 3 });
    approver = await f.makeUser('carol', { roles: ['approver'] });
  });
  afterAll(async () => {
    await f.close();
  });

  const get = (token: string, headers: Record<string, string> = {}) =>
    f.app.inject({ method: 'GET', url: `/stepup/${token}`, headers });

  /** Opens the page and posts the form back with the cookie and token it handed out. */
  async function submit(token: string, fields: { password?: string; code?: string; csrf?: boolean } = {}) {
    const page = await get(token);
    const { token: csrf, cookies } = formState(page);
    const body = new URLSearchParams({
      ...(fields.csrf === false ? {} : { _csrf: csrf ?? '' }),
      password: fields.password ?? PASSWORD,
      code: fields.code ?? (await codeAt(approver.secret!, f.clock.now())),
    });
    return f.app.inject({
      method: 'POST',
      url: `/stepup/${token}`,
      payload: body.toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'vitest-browser/1.0' },
      cookies,
      remoteAddress: '203.0.113.7',
    });
  }

  /** Moves to the next TOTP step, so the next right code has not been used yet. */
  const nextStep = () => f.clock.advance(30_000);

  it('shows what is being approved in plain words, with no script and strict headers', async () => {
    const res = await get(await f.link(approver, 'approve', 'digest'));
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/html/);
    const body = res.body;
    expect(body).toContain('Approve this request');
    const text = body.replace(/<[^>]+>/g, '').replaceAll('&quot;', '"');
    expect(text).toContain('7 endpoints: web-01, web-02, web-03, db-01, db-02, cache-01, cache-02');
    expect(text).toContain('mac-01: os not supported');
    expect(body).toContain('IR-42');
    expect(body).toContain('Ann Analyst');
    // Every parameter of the action, and the whole digest with the text it covers.
    expect(text).toContain('collect-triage v2');
    expect(text).toMatch(/Parameter since\s*"24h"/);
    expect(text).toMatch(/Time limit\s*600 s/);
    expect(body).toContain('d1e2f3a4b5c6d7e8f9a0'.padEnd(64, '0'));
    expect(body).toContain('What the digest covers');
    expect(text).toContain('{"action":"run","params":{"args":{"since":"24h"}');
    // Approve and Deny are both on the page.
    expect(body).toMatch(/name="decision" value="approve"/);
    expect(body).toMatch(/name="decision" value="deny"/);
    expect(body).toContain('ab'.repeat(32));
    // The reason is the requester's text: escaped, never markup.
    expect(body).toContain('C2 beacon &lt;script&gt;');
    expect(body).not.toMatch(/<script/i);
    expect(body).toMatch(/<label for="password">Password<\/label>/);
    expect(body).toMatch(/<label for="code">Authenticator code/);
    const csp = String(res.headers['content-security-policy']);
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'none'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers['referrer-policy']).toBe('no-referrer');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    const csrfCookie = res.cookies.find((c) => c.name === '_csrf');
    expect(csrfCookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
    expect(csrfCookie?.secure).toBeFalsy(); // PUBLIC_URL is http here
  });

  it('serves its one stylesheet from a static route', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/assets/stepup.css' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/css/);
    expect(res.body).toContain('max-width');
  });

  it('completes with the right password and code, opens the window and says to return to chat', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const res = await submit(token);
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('Done');
    expect(res.body).toContain('return to Slack or Teams');
    const [ch] = await f.tdb.db
      .select()
      .from(stepUpChallenges)
      .where(eq(stepUpChallenges.userId, approver.id));
    expect(ch).toBeDefined();
    const windows = await f.tdb.db.select().from(stepUpWindows).where(eq(stepUpWindows.userId, approver.id));
    expect(windows.at(-1)).toMatchObject({ sourceIp: '203.0.113.7', userAgent: 'vitest-browser/1.0' });
    const attempts = await f.tdb.db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, 'stepup.attempt'), eq(auditLog.outcome, 'ok')));
    expect(attempts.length).toBeGreaterThan(0);
    expect(JSON.stringify(attempts)).not.toContain(PASSWORD);
  });

  it('refuses a wrong password and a wrong code with the same words, never naming the factor', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const badPassword = await submit(token, { password: 'not the password at all' });
    expect(badPassword.statusCode).toBe(403);
    expect(badPassword.body).toContain('The password or the code was not accepted');
    expect(badPassword.body).not.toContain('not the password at all');
    expect(badPassword.body).toContain('name="password"'); // the form is offered again
    const badCode = await submit(token, { code: '000000' });
    expect(badCode.statusCode).toBe(403);
    const words = (b: string) => /The password or the code was not accepted[^.]*\./.exec(b)?.[0];
    expect(words(badCode.body)).toBe(words(badPassword.body));
    // Right factors still work on the same link after failures below the threshold.
    const ok = await submit(token);
    expect(ok.statusCode).toBe(200);
  });

  it('refuses a code that was already used, even on a new link', async () => {
    nextStep();
    const code = await codeAt(approver.secret!, f.clock.now());
    expect((await submit(await f.link(approver, 'approve', 'digest'), { code })).statusCode).toBe(200);
    const replay = await submit(await f.link(approver, 'approve', 'digest'), { code });
    expect(replay.statusCode).toBe(403);
    expect(replay.body).toContain('not accepted');
  });

  it('asks for six digits without counting a malformed code as an attempt', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const res = await submit(token, { code: '12ab' });
    expect(res.statusCode).toBe(400);
    expect(res.body).toContain('6 digits');
  });

  it('says a used link was used and offers nothing else', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    expect((await submit(token)).statusCode).toBe(200);
    const again = await get(token);
    expect(again.statusCode).toBe(410);
    expect(again.body).toContain('already been used');
    expect(again.body).not.toContain('<form');
    const repost = await f.app.inject({
      method: 'POST',
      url: `/stepup/${token}`,
      payload: 'password=x&code=123456',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(repost.statusCode).toBe(403); // no CSRF token either way; nothing is reached
  });

  it('says an expired link expired and offers nothing else', async () => {
    const token = await f.link(approver, 'approve', 'digest');
    f.clock.advance(16 * 60_000);
    const res = await get(token);
    expect(res.statusCode).toBe(410);
    expect(res.body).toContain('expired');
    expect(res.body).not.toContain('<form');
  });

  it('answers an unknown or malformed link with a plain not-valid page', async () => {
    const unknown = await get('AAAAAAAAAAAAAAAAAAAAAA');
    expect(unknown.statusCode).toBe(404);
    expect(unknown.body).toContain('not valid');
    const malformed = await get('..%2F..%2Fetc');
    expect(malformed.statusCode).toBe(404);
    expect(malformed.body).not.toContain('<form');
  });

  it('refuses a POST without the CSRF token and consumes nothing', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const before = await f.tdb.db.select().from(auditLog);
    const res = await submit(token, { csrf: false });
    expect(res.statusCode).toBe(403);
    expect(res.body).toContain('This form has expired');
    expect(await f.tdb.db.select().from(auditLog)).toHaveLength(before.length);
    expect((await get(token)).statusCode).toBe(200); // the link is still good
  });

  it("refuses a CSRF token paired with another visit's cookie", async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const mine = formState(await get(token));
    const theirs = formState(await get(token));
    const res = await f.app.inject({
      method: 'POST',
      url: `/stepup/${token}`,
      payload: new URLSearchParams({
        _csrf: mine.token!,
        password: PASSWORD,
        code: await codeAt(approver.secret!, f.clock.now()),
      }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      cookies: theirs.cookies,
    });
    expect(res.statusCode).toBe(403);
    expect(res.body).toContain('This form has expired');
  });

  it('answers repeated or oversized form fields with a page, never a server error', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const { token: csrf, cookies } = formState(await get(token));
    const post = (payload: string) =>
      f.app.inject({
        method: 'POST',
        url: `/stepup/${token}`,
        payload,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        cookies,
      });
    const repeated = await post(`_csrf=${csrf}&_csrf=${csrf}&password=x&code=123456`);
    expect(repeated.statusCode).toBe(403);
    const twoPasswords = await post(`_csrf=${encodeURIComponent(csrf!)}&password=a&password=b&code=123456`);
    expect(twoPasswords.statusCode).toBe(400);
    expect(twoPasswords.body).toContain('Enter your password');
    const huge = await post(`_csrf=${encodeURIComponent(csrf!)}&password=${'x'.repeat(20_000)}&code=123456`);
    expect(huge.statusCode).toBe(413);
    expect(huge.headers['content-type']).toMatch(/text\/html/);
  });

  it('sends an enrolment link opened on the step-up path to the enrolment page', async () => {
    const fresh = await f.makeUser('dave', { enrol: false });
    const res = await get(await f.link(fresh, 'enrol_totp', 'enrol'));
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toMatch(/^\/enrol\//);
  });

  it('tells a user whose authenticator was reset to enrol again', async () => {
    const fresh = await f.makeUser('erin');
    const token = await f.link(fresh, 'approve', 'digest');
    await f.stepup.resetTotp(fresh.id, null);
    const page = await get(token);
    const { token: csrf, cookies } = formState(page);
    const res = await f.app.inject({
      method: 'POST',
      url: `/stepup/${token}`,
      payload: new URLSearchParams({ _csrf: csrf!, password: PASSWORD, code: '123456' }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      cookies,
    });
    expect(res.statusCode).toBe(403);
    expect(res.body).toContain('Set up two-factor authentication first');
  });

  it('locks out after repeated failures, says until when, and refuses even right factors', async () => {
    const victim = await f.makeUser('frank', { roles: ['approver'] });
    const token = await f.link(victim, 'approve', 'digest');
    const tryWith = async (password: string) => {
      const page = await get(token);
      const { token: csrf, cookies } = formState(page);
      return f.app.inject({
        method: 'POST',
        url: `/stepup/${token}`,
        payload: new URLSearchParams({
          _csrf: csrf!,
          password,
          code: await codeAt(victim.secret!, f.clock.now()),
        }).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        cookies,
      });
    };
    await tryWith('wrong password one');
    await tryWith('wrong password two');
    const third = await tryWith('wrong password three');
    expect(third.body).toContain('locked until');
    const locked = await tryWith(PASSWORD);
    expect(locked.statusCode).toBe(429);
    expect(locked.body).toContain('Locked for now');
    expect(locked.body).toMatch(/locked until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/);
    expect(locked.body).not.toContain('<form');
    const lockouts = await f.tdb.db.select().from(auditLog).where(eq(auditLog.action, 'stepup.lockout'));
    expect(lockouts.length).toBeGreaterThan(0);
  });
});

describe.each(drivers)('step-up rate limits and cookies on %s', (driver) => {
  it('limits made-up links per address, and leaves another address alone', async () => {
    const f = await createWebFixture(driver, { config: { rateLimitPerIp: 3, rateLimitPerUser: 1000 } });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) {
        codes.push(
          (
            await f.app.inject({
              method: 'GET',
              url: `/stepup/${'A'.repeat(21)}${i}`,
              remoteAddress: '198.51.100.1',
            })
          ).statusCode,
        );
      }
      expect(codes).toEqual([404, 404, 404, 429]);
      const other = await f.app.inject({
        method: 'GET',
        url: `/stepup/${'A'.repeat(22)}`,
        remoteAddress: '198.51.100.2',
      });
      expect(other.statusCode).toBe(404);
    } finally {
      await f.close();
    }
  });

  it('limits requests per user across IPs and links', async () => {
    const f = await createWebFixture(driver, { config: { rateLimitPerIp: 1000, rateLimitPerUser: 3 } });
    try {
      const u = await f.makeUser('hank');
      const other = await f.makeUser('ivy');
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) {
        const token = await f.link(u, 'approve', 'digest');
        codes.push(
          (await f.app.inject({ method: 'GET', url: `/stepup/${token}`, remoteAddress: `192.0.2.${i + 1}` }))
            .statusCode,
        );
      }
      expect(codes).toEqual([200, 200, 200, 429]);
      const res = await f.app.inject({
        method: 'GET',
        url: `/stepup/${await f.link(other, 'approve', 'digest')}`,
      });
      expect(res.statusCode).toBe(200);
      expect(res.body).not.toContain('Too many');
    } finally {
      await f.close();
    }
  });

  it('writes no link token, password or code to the logs', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const f = await createWebFixture(driver, {
      logger: pino({ level: 'trace' }, sink),
      config: { rateLimitPerUser: 3 },
    });
    try {
      const u = await f.makeUser('kai');
      const token = await f.link(u, 'approve', 'digest');
      const page = await f.app.inject({ method: 'GET', url: `/stepup/${token}` });
      const { token: csrf, cookies } = formState(page);
      const code = await codeAt(u.secret!, f.clock.now());
      await f.app.inject({
        method: 'POST',
        url: `/stepup/${token}`,
        payload: new URLSearchParams({ _csrf: csrf!, password: 'hunter2 wrong password', code }).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        cookies,
      });
      await f.app.inject({ method: 'GET', url: `/stepup/${token}` });
      expect((await f.app.inject({ method: 'GET', url: `/stepup/${token}` })).statusCode).toBe(429);
      const enrolToken = await f.link(await f.makeUser('lia', { enrol: false }), 'enrol_totp', 'enrol');
      await f.app.inject({ method: 'GET', url: `/enrol/${enrolToken}`, remoteAddress: '192.0.2.99' });
      const all = lines.join('');
      expect(all).not.toContain(token);
      expect(all).not.toContain(enrolToken);
      expect(all).not.toContain('hunter2');
      expect(all).not.toContain(code);
      expect(all).not.toContain(csrf!);
    } finally {
      await f.close();
    }
  });

  it('marks cookies Secure and sends HSTS when PUBLIC_URL is https', async () => {
    const f = await createWebFixture(driver, { publicUrl: 'https://ar.example.com' });
    try {
      const u = await f.makeUser('jack');
      const res = await f.app.inject({
        method: 'GET',
        url: `/stepup/${await f.link(u, 'approve', 'digest')}`,
      });
      expect(res.cookies.find((c) => c.name === '_csrf')).toMatchObject({ secure: true, httpOnly: true });
      expect(res.headers['strict-transport-security']).toContain('max-age=');
      expect(String(res.headers['content-security-policy'])).toContain('upgrade-insecure-requests');
      // The step-up window cookie of a history link is Secure too.
      const token = await f.link(u, 'history', 'history');
      const page = await f.app.inject({ method: 'GET', url: `/stepup/${token}` });
      const { token: csrf, cookies } = formState(page);
      const done = await f.app.inject({
        method: 'POST',
        url: `/stepup/${token}`,
        payload: new URLSearchParams({
          _csrf: csrf!,
          password: PASSWORD,
          code: await codeAt(u.secret!, f.clock.now()),
        }).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        cookies,
      });
      expect(done.statusCode).toBe(303);
      expect(done.cookies.find((c) => c.name === 'ar_stepup_window')).toMatchObject({
        secure: true,
        httpOnly: true,
        sameSite: 'Strict',
      });
    } finally {
      await f.close();
    }
  });
});
