// The step-up pages' rate limits under the attack the review found: behind a reverse proxy every client
// shares one address, and a flood of made-up links from it must not lock real approvers out. Limits run at
// the production defaults (60 made-up links per address, 30 requests per link owner, per minute).
import { and, eq } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { auditLog, stepUpWindows, users } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { codeAt, createWebFixture, formState, PASSWORD, type WebFixture } from './helpers/web-stepup.ts';

const PRODUCTION_LIMITS = { rateLimitPerIp: 60, rateLimitPerUser: 30 };
const form = { 'content-type': 'application/x-www-form-urlencoded' };

/** A 22-character token in the links' alphabet that no link has. */
const madeUp = (i: number) => `Zz${String(i).padStart(20, '0')}`;

/** Opens the approver's link and confirms with the right password and code, as a person would. */
async function stepUp(
  f: WebFixture,
  token: string,
  secret: Uint8Array,
  from: { headers?: Record<string, string>; remoteAddress?: string },
) {
  const headers = from.headers ?? {};
  const remoteAddress = from.remoteAddress;
  const page = await f.app.inject({ method: 'GET', url: `/stepup/${token}`, headers, remoteAddress });
  expect(page.statusCode).toBe(200);
  const { token: csrf, cookies } = formState(page);
  return f.app.inject({
    method: 'POST',
    url: `/stepup/${token}`,
    payload: new URLSearchParams({
      _csrf: csrf!,
      password: PASSWORD,
      code: await codeAt(secret, f.clock.now()),
    }).toString(),
    headers: { ...form, ...headers },
    cookies,
    remoteAddress,
  });
}

describe.each(drivers)('step-up rate limits under a made-up-link flood on %s', (driver) => {
  it('lets a real approver finish their step-up after a flood of made-up links from their own address', async () => {
    const f = await createWebFixture(driver, { config: PRODUCTION_LIMITS });
    try {
      const approver = await f.makeUser('paula', { roles: ['approver'] });
      const token = await f.link(approver, 'approve', 'digest');
      // Everyone arrives from the proxy's address (no TRUST_PROXY): the attacker too.
      const proxy = '10.0.0.2';
      const statuses = new Set<number>();
      for (let i = 0; i < 150; i++) {
        const res = await f.app.inject({
          method: i % 3 ? 'GET' : 'POST',
          url: `/stepup/${madeUp(i)}`,
          remoteAddress: proxy,
          ...(i % 3 ? {} : { payload: 'password=x&code=123456', headers: form }),
        });
        statuses.add(res.statusCode);
      }
      for (let i = 0; i < 30; i++) {
        statuses.add(
          (await f.app.inject({ method: 'GET', url: `/enrol/${madeUp(i)}`, remoteAddress: proxy }))
            .statusCode,
        );
      }
      expect(statuses.has(429)).toBe(true); // the flood itself is cut off
      expect([...statuses].every((s) => [403, 404, 429].includes(s))).toBe(true);

      const done = await stepUp(f, token, approver.secret!, { remoteAddress: proxy });
      expect(done.statusCode).toBe(200);
      expect(done.body).toContain('Done');
      const [row] = await f.tdb.db.select().from(users).where(eq(users.id, approver.id));
      expect(row).toMatchObject({ failedAttempts: 0, lockedUntil: null });
      const lockouts = await f.tdb.db.select().from(auditLog).where(eq(auditLog.action, 'stepup.lockout'));
      expect(lockouts).toHaveLength(0);
    } finally {
      await f.close();
    }
  });

  it('still refuses made-up links from the flooding address once its own bucket is spent', async () => {
    const f = await createWebFixture(driver, { config: { rateLimitPerIp: 5, rateLimitPerUser: 30 } });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 7; i++)
        codes.push(
          (await f.app.inject({ method: 'GET', url: `/stepup/${madeUp(i)}`, remoteAddress: '10.0.0.2' }))
            .statusCode,
        );
      expect(codes).toEqual([404, 404, 404, 404, 404, 429, 429]);
      const res = await f.app.inject({
        method: 'GET',
        url: `/stepup/${madeUp(99)}`,
        remoteAddress: '10.0.0.2',
      });
      expect(res.headers['retry-after']).toBeDefined();
      expect(res.body).toContain('Too many');
    } finally {
      await f.close();
    }
  });
});

describe.each(drivers)('TRUST_PROXY on the step-up pages on %s', (driver) => {
  it('takes the client address from the trusted proxy for limits and the audit log', async () => {
    // inject() connects from 127.0.0.1: that is the proxy here.
    const f = await createWebFixture(driver, {
      config: { rateLimitPerIp: 3, rateLimitPerUser: 30 },
      http: { trustProxy: ['127.0.0.1'] },
    });
    try {
      const flood: number[] = [];
      for (let i = 0; i < 4; i++) {
        const res = await f.app.inject({
          method: 'GET',
          url: `/stepup/${madeUp(i)}`,
          headers: { 'x-forwarded-for': '198.51.100.66' },
        });
        flood.push(res.statusCode);
      }
      expect(flood).toEqual([404, 404, 404, 429]);
      const neighbour = await f.app.inject({
        method: 'GET',
        url: `/stepup/${madeUp(50)}`,
        headers: { 'x-forwarded-for': '198.51.100.77' },
      });
      expect(neighbour.statusCode).toBe(404); // a different client behind the same proxy is not limited

      const approver = await f.makeUser('quentin', { roles: ['approver'] });
      const done = await stepUp(f, await f.link(approver, 'approve', 'digest'), approver.secret!, {
        headers: { 'x-forwarded-for': '203.0.113.20' },
      });
      expect(done.statusCode).toBe(200);
      const [window] = await f.tdb.db
        .select()
        .from(stepUpWindows)
        .where(eq(stepUpWindows.userId, approver.id));
      expect(window!.sourceIp).toBe('203.0.113.20');
      const [attempt] = await f.tdb.db
        .select()
        .from(auditLog)
        .where(and(eq(auditLog.action, 'stepup.attempt'), eq(auditLog.actorId, approver.id)));
      expect(attempt!.details).toMatchObject({ sourceIp: '203.0.113.20' });
    } finally {
      await f.close();
    }
  });

  it('ignores X-Forwarded-For when no proxy is trusted, so a flood cannot dodge its limit by forging it', async () => {
    const f = await createWebFixture(driver, { config: { rateLimitPerIp: 3, rateLimitPerUser: 30 } });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) {
        const res = await f.app.inject({
          method: 'GET',
          url: `/stepup/${madeUp(i)}`,
          headers: { 'x-forwarded-for': `198.51.100.${i + 1}` },
        });
        codes.push(res.statusCode);
      }
      expect(codes).toEqual([404, 404, 404, 429]);
    } finally {
      await f.close();
    }
  });
});
