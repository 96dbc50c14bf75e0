import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeTotpSecret } from '../bot/stepup/totp.ts';
import { auditLog } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { codeAt, createWebFixture, formState, type WebFixture } from './helpers/web-stepup.ts';

describe.each(drivers)('TOTP enrolment page on %s', (driver) => {
  let f: WebFixture;
  beforeAll(async () => {
    f = await createWebFixture(driver, { lockoutThreshold: 3 });
  });
  afterAll(async () => {
    await f.close();
  });

  const get = (token: string) => f.app.inject({ method: 'GET', url: `/enrol/${token}` });
  const secretOf = (body: string) => /data-secret="([A-Z2-7]+)"/.exec(body)?.[1];

  async function post(token: string, code: string, opts: { csrf?: boolean } = {}) {
    const page = await get(token);
    const { token: csrf, cookies } = formState(page);
    return f.app.inject({
      method: 'POST',
      url: `/enrol/${token}`,
      payload: new URLSearchParams({ ...(opts.csrf === false ? {} : { _csrf: csrf! }), code }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'vitest' },
      cookies,
    });
  }

  it('shows a QR code as inline SVG and the secret as text, under a CSP with no script', async () => {
    const u = await f.makeUser('kate', { enrol: false });
    const res = await get(await f.link(u, 'enrol_totp', 'enrol'));
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('Set up two-factor authentication');
    expect(res.body).toMatch(/<figure class="qr" aria-label="[^"]+"><svg[^>]*viewBox/);
    expect(secretOf(res.body)).toMatch(/^[A-Z2-7]{32}$/);
    expect(res.body).not.toMatch(/<script/i);
    expect(res.body).toMatch(/<label for="code">/);
    expect(String(res.headers['content-security-policy'])).toContain("script-src 'none'");
    expect(res.headers['cache-control']).toBe('no-store');
  });

  it('keeps the same secret when the page is reloaded, so a scanned code stays valid', async () => {
    const u = await f.makeUser('leo', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    expect(secretOf((await get(token)).body)).toBe(secretOf((await get(token)).body));
  });

  it('enrols with the code the app shows, uses up the link and audits it', async () => {
    const u = await f.makeUser('mia', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const secret = decodeTotpSecret(secretOf((await get(token)).body)!);
    const res = await post(token, await codeAt(secret, f.clock.now()));
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('Two-factor authentication is set up');
    expect((await f.users.getUser(u.id)).mfaEnrolled).toBe(true);
    const again = await get(token);
    expect(again.statusCode).toBe(410);
    expect(again.body).not.toContain('data-secret');
    const rows = await f.tdb.db.select().from(auditLog).where(eq(auditLog.action, 'totp.enrolled'));
    expect(rows.some((r) => r.actorId === u.id)).toBe(true);
  });

  it('refuses a wrong code, shows the same secret again and leaves the user unenrolled', async () => {
    const u = await f.makeUser('ned', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const shown = secretOf((await get(token)).body);
    const res = await post(token, '000000');
    expect(res.statusCode).toBe(403);
    expect(res.body).toContain('not accepted');
    expect(secretOf(res.body)).toBe(shown);
    expect((await f.users.getUser(u.id)).mfaEnrolled).toBe(false);
  });

  it('asks for six digits when the code is malformed', async () => {
    const u = await f.makeUser('olga', { enrol: false });
    const res = await post(await f.link(u, 'enrol_totp', 'enrol'), 'abc');
    expect(res.statusCode).toBe(400);
    expect(res.body).toContain('6 digits');
  });

  it('refuses a POST without the CSRF token', async () => {
    const u = await f.makeUser('pete', { enrol: false });
    const token = await f.link(u, 'enrol_totp', 'enrol');
    const secret = decodeTotpSecret(secretOf((await get(token)).body)!);
    const res = await post(token, await codeAt(secret, f.clock.now()), { csrf: false });
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
  it('limits requests per IP on the enrolment routes', async () => {
    const f = await createWebFixture(driver, { config: { rateLimitPerIp: 2 } });
    try {
      const u = await f.makeUser('tess', { enrol: false });
      const token = await f.link(u, 'enrol_totp', 'enrol');
      const codes: number[] = [];
      for (let i = 0; i < 3; i++)
        codes.push((await f.app.inject({ method: 'GET', url: `/enrol/${token}` })).statusCode);
      expect(codes).toEqual([200, 200, 429]);
    } finally {
      await f.close();
    }
  });
});
