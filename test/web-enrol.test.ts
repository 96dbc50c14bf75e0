import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeTotpSecret } from '../bot/stepup/totp.ts';
import { auditLog, users } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { codeAt, createWebFixture, formState, PASSWORD, type WebFixture } from './helpers/web-stepup.ts';

describe.each(drivers)('TOTP enrolment page on %s', (driver) => {
  let f: WebFixture;
  beforeAll(async () => {
    f = await createWebFixture(driver, { lockoutThreshold: 3 });
  });
  afterAll(async () => {
    await f.close();
  });

  type Cookies = Record<string, string>;
  const get = (token: string, cookies: Cookies = {}) =>
    f.app.inject({ method: 'GET', url: `/enrol/${token}`, cookies });
  const secretOf = (body: string) => /data-secret="([A-Z2-7]+)"/.exec(body)?.[1];
  const form = (fields: Record<string, string>, cookies: Cookies) => ({
    payload: new URLSearchParams(fields).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'vitest' },
    cookies,
  });

  /** Posts the password step from a fresh page view; returns the response and every cookie now held. */
  async function postPassword(token: string, password = PASSWORD) {
    const page = await get(token);
    const { token: csrf, cookies } = formState(page);
    const res = await f.app.inject({
      method: 'POST',
      url: `/enrol/${token}`,
      ...form({ _csrf: csrf!, step: 'password', password }, cookies),
    });
    const held = { ...cookies, ...Object.fromEntries(res.cookies.map((c) => [c.name, c.value])) };
    return { res, cookies: held };
  }

  /** Passes the password step and opens the page it leads to, as a browser following the redirect does. */
  async function unlock(token: string) {
    const { res, cookies } = await postPassword(token);
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe(`/enrol/${token}`);
    return { page: await get(token, cookies), cookies };
  }

  async function postCode(token: string, code: string, cookies: Cookies, opts: { csrf?: boolean } = {}) {
    const { token: csrf, cookies: withCsrf } = formState(await get(token, cookies));
    const all = { ...cookies, ...withCsrf };
    return f.app.inject({
      method: 'POST',
      url: `/enrol/${token}`,
      ...form({ ...(opts.csrf === false ? {} : { _csrf: csrf! }), step: 'code', code }, all),
    });
  }

  const enrolPasswordRecords = (userId: string) =>
    f.tdb.db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, 'totp.enrol_password'), eq(auditLog.actorId, userId)));

  it('asks for the password first and shows no secret to whoever only holds the link', async () => {
    const u = await f.makeUser('jill', { enrol: false });
    const res = await get(await f.link(u, 'enrol_totp', 'enrol'));
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('Set up two-factor authentication');
    expect(res.body).toMatch(/<label for="password">Password<\/label>/);
    expect(res.body).not.toContain('data-secret');
    expect(res.body).not.toMatch(/<svg/);
    expect(res.body).not.toMatch(/<script/i);
  });

  it('refuses a wrong password, audits it, counts it toward the lockout and still shows no secret', async () => {
    const u = await f.makeUser('karl', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const { res, cookies } = await postPassword(token, 'not the password at all');
    expect(res.statusCode).toBe(403);
    expect(res.body).toContain('That password was not accepted');
    expect(res.body).toContain('2 attempts left');
    expect(res.body).not.toContain('data-secret');
    expect(res.body).not.toContain('not the password at all');
    expect((await get(token, cookies)).body).not.toContain('data-secret');
    const [row] = await f.tdb.db.select().from(users).where(eq(users.id, u.id));
    expect(row!.failedAttempts).toBe(1);
    const records = await enrolPasswordRecords(u.id);
    expect(records.map((r) => [r.outcome, (r.details as { reason: string }).reason])).toEqual([
      ['refused', 'password_wrong'],
    ]);
    expect(JSON.stringify(records)).not.toContain('not the password at all');
  });

  it('locks the account after repeated wrong passwords, like a failed step-up', async () => {
    const u = await f.makeUser('lena', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    for (const p of ['wrong one', 'wrong two'])
      expect((await postPassword(token, p)).res.statusCode).toBe(403);
    const third = await postPassword(token, 'wrong three');
    expect(third.res.body).toContain('locked until');
    const locked = await postPassword(token, PASSWORD);
    expect(locked.res.statusCode).toBe(429);
    expect(locked.res.body).not.toContain('data-secret');
    const lockouts = await f.tdb.db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, 'stepup.lockout'), eq(auditLog.actorId, u.id)));
    expect(lockouts).toHaveLength(1);
  });

  it('after the password, shows a QR code as inline SVG and the secret as text, under a CSP with no script', async () => {
    const u = await f.makeUser('kate', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const { page: res } = await unlock(token);
    expect(res.statusCode).toBe(200);
    expect(res.body).toMatch(/<figure class="qr" aria-label="[^"]+"><svg[^>]*viewBox/);
    expect(secretOf(res.body)).toMatch(/^[A-Z2-7]{32}$/);
    expect(res.body).not.toMatch(/<script/i);
    expect(res.body).toMatch(/<label for="code">/);
    expect(String(res.headers['content-security-policy'])).toContain("script-src 'none'");
    expect(res.headers['cache-control']).toBe('no-store');
    const records = await enrolPasswordRecords(u.id);
    expect(records.map((r) => r.outcome)).toEqual(['ok']);
  });

  it('keeps the same secret when the page is reloaded, so a scanned code stays valid', async () => {
    const u = await f.makeUser('leo', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const { page, cookies } = await unlock(token);
    expect(secretOf((await get(token, cookies)).body)).toBe(secretOf(page.body));
  });

  it('enrols with the code the app shows, uses up the link and audits it', async () => {
    const u = await f.makeUser('mia', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const { page, cookies } = await unlock(token);
    const secret = decodeTotpSecret(secretOf(page.body)!);
    const res = await postCode(token, await codeAt(secret, f.clock.now()), cookies);
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('Two-factor authentication is set up');
    expect((await f.users.getUser(u.id)).mfaEnrolled).toBe(true);
    const again = await get(token, cookies);
    expect(again.statusCode).toBe(410);
    expect(again.body).not.toContain('data-secret');
    const rows = await f.tdb.db.select().from(auditLog).where(eq(auditLog.action, 'totp.enrolled'));
    expect(rows.some((r) => r.actorId === u.id)).toBe(true);
  });

  it('refuses a code posted without the password step, counting nothing against the user', async () => {
    const u = await f.makeUser('nina', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const res = await postCode(token, '123456', {});
    expect(res.statusCode).toBe(400);
    expect(res.body).toContain('Enter your password first');
    expect(res.body).not.toContain('data-secret');
    const [row] = await f.tdb.db.select().from(users).where(eq(users.id, u.id));
    expect(row!.failedAttempts).toBe(0);
    expect((await f.users.getUser(u.id)).mfaEnrolled).toBe(false);
  });

  it('does not take the password step of one link for another link', async () => {
    const u = await f.makeUser('otto', { enrol: false });
    const first = await f.link(u, 'enrol_totp', 'enrol');
    const { cookies } = await unlock(first);
    const second = await f.link(u, 'enrol_totp', 'enrol');
    const res = await get(second, cookies);
    expect(res.body).toMatch(/<label for="password">/);
    expect(res.body).not.toContain('data-secret');
  });

  it('refuses a wrong code, shows the same secret again and leaves the user unenrolled', async () => {
    const u = await f.makeUser('ned', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const { page, cookies } = await unlock(token);
    const res = await postCode(token, '000000', cookies);
    expect(res.statusCode).toBe(403);
    expect(res.body).toContain('not accepted');
    expect(secretOf(res.body)).toBe(secretOf(page.body));
    expect((await f.users.getUser(u.id)).mfaEnrolled).toBe(false);
  });

  it('asks for six digits when the code is malformed', async () => {
    const u = await f.makeUser('olga', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const { cookies } = await unlock(token);
    const res = await postCode(token, 'abc', cookies);
    expect(res.statusCode).toBe(400);
    expect(res.body).toContain('6 digits');
  });

  it('refuses a POST without the CSRF token', async () => {
    const u = await f.makeUser('pete', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const { page, cookies } = await unlock(token);
    const secret = decodeTotpSecret(secretOf(page.body)!);
    const res = await postCode(token, await codeAt(secret, f.clock.now()), cookies, { csrf: false });
    expect(res.statusCode).toBe(403);
    expect(res.body).toContain('This form has expired');
    expect((await f.users.getUser(u.id)).mfaEnrolled).toBe(false);
  });

  it('says so when the user is already enrolled', async () => {
    const u = await f.makeUser('quinn', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    // Enrolled another way (a second link) after this link was sent.
    const secret = decodeTotpSecret((await f.stepup.startTotpEnrolment(u.id)).secret);
    await f.stepup.confirmTotpEnrolment(u.id, await codeAt(secret, f.clock.now()));
    const res = await get(token);
    expect(res.statusCode).toBe(409);
    expect(res.body).toContain('Already set up');
    expect(res.body).not.toContain('data-secret');
  });

  it('sends a step-up link opened on the enrolment path to the step-up page', async () => {
    const u = await f.makeUser('rosa');
    const res = await get(await f.link(u, 'approve', 'digest'));
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toMatch(/^\/stepup\//);
  });

  it('says an expired enrolment link expired', async () => {
    const u = await f.makeUser('sam', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    f.clock.advance(16 * 60_000);
    const res = await get(token);
    expect(res.statusCode).toBe(410);
    expect(res.body).toContain('expired');
  });
});

describe.each(drivers)('enrolment rate limit on %s', (driver) => {
  it('limits requests per link owner on the enrolment routes, and made-up links per address', async () => {
    const f = await createWebFixture(driver, { config: { rateLimitPerUser: 2, rateLimitPerIp: 2 } });
    try {
      const u = await f.makeUser('tess', { enrol: false });
      const token = await f.link(u, 'enrol_totp', 'enrol');
      const codes: number[] = [];
      for (let i = 0; i < 3; i++)
        codes.push((await f.app.inject({ method: 'GET', url: `/enrol/${token}` })).statusCode);
      expect(codes).toEqual([200, 200, 429]);
      const madeUp: number[] = [];
      for (let i = 0; i < 3; i++)
        madeUp.push((await f.app.inject({ method: 'GET', url: `/enrol/${'B'.repeat(21)}${i}` })).statusCode);
      expect(madeUp).toEqual([404, 404, 429]);
    } finally {
      await f.close();
    }
  });
});
