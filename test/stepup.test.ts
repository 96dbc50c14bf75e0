import { eq, sql } from 'drizzle-orm';
import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AuditService, createAuditService } from '../bot/audit/audit-service.ts';
import { verifyPassword } from '../bot/crypto/passwords.ts';
import { deriveKey, open, seal } from '../bot/crypto/secret-box.ts';
import { hashToken, newToken, safeEqual } from '../bot/crypto/tokens.ts';
import { Forbidden } from '../bot/errors.ts';
import { bindTo } from '../bot/stepup/stepup-binding.ts';
import { createStepUpService, type StepUpService } from '../bot/stepup/stepup-service.ts';
import { decodeTotpSecret } from '../bot/stepup/totp.ts';
import { createUserService, type UserService } from '../bot/users/user-service.ts';
import { stepUpChallenges, stepUpWindows, users } from '../db/schema.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { testChainKey } from './helpers/keys.ts';

const PASSWORD = 'correct horse battery staple';
const SECRET_KEY = Buffer.alloc(32, 9);
const PUBLIC_URL = 'https://ar.example.test/';

describe('crypto helpers', () => {
  it('opens a sealed value only with the same key and owner', () => {
    const key = deriveKey(SECRET_KEY, 'totp-secret');
    const sealed = seal('s3cret', key, 'user-a');
    expect(open(sealed, key, 'user-a').toString()).toBe('s3cret');
    expect(() => open(sealed, key, 'user-b')).toThrow(/cannot open/);
    expect(() => open(sealed, deriveKey(SECRET_KEY, 'token-hash'), 'user-a')).toThrow(/cannot open/);
    expect(seal('s3cret', key, 'user-a')).not.toBe(sealed); // fresh IV each time
  });

  it('hashes tokens with a key, and compares in constant time', () => {
    const t = newToken();
    expect(t).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(hashToken(t, SECRET_KEY)).toBe(hashToken(t, SECRET_KEY));
    expect(hashToken(t, SECRET_KEY)).not.toBe(hashToken(t, Buffer.alloc(32, 1)));
    expect(safeEqual('abc', 'abc')).toBe(true);
    expect(safeEqual('abc', 'abcd')).toBe(false);
  });

  it('answers false, never throws, for a malformed password hash', async () => {
    await expect(verifyPassword('not-a-hash', PASSWORD)).resolves.toBe(false);
    await expect(verifyPassword('$argon2id$v=19$garbage', PASSWORD)).resolves.toBe(false);
  });
});

describe.each(drivers)('step-up on %s', (driver) => {
  let tdb: TestDatabase;
  let audit: AuditService;
  let usersSvc: UserService;
  let stepup: StepUpService;
  const clock = createTestClock();

  beforeAll(async () => {
    tdb = await openTestDatabase(driver);
    audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    usersSvc = createUserService({ db: tdb.db, audit, clock, secretKey: SECRET_KEY });
    stepup = createStepUpService({ db: tdb.db, audit, clock, secretKey: SECRET_KEY, publicUrl: PUBLIC_URL });
  });
  afterAll(async () => {
    await tdb.destroy();
  });

  const epoch = () => Math.floor(clock.now().getTime() / 1000);
  /** Moves to the next 30-second step (a code is accepted once) and returns its code. */
  async function freshCode(secret: string) {
    clock.advance(30_000);
    return generate({ secret, epoch: epoch() });
  }

  async function enrolledUser(username: string) {
    const u = await usersSvc.createUser({ username, displayName: username, password: PASSWORD });
    const { secret } = await stepup.startTotpEnrolment(u.id);
    await stepup.confirmTotpEnrolment(u.id, await generate({ secret, epoch: epoch() }));
    return { id: u.id, secret };
  }

  async function link(userId: string, subject = 'digest-abc') {
    return stepup.createChallenge({ userId, purpose: 'approve', subject });
  }

  async function attempts(userId: string) {
    return (await audit.list({ actorId: userId, limit: 1000 })).reverse();
  }

  it('enrols TOTP: sealed at rest, bound to the user, active only after one right code', async () => {
    const u = await usersSvc.createUser({
      username: 'enrol.me',
      displayName: 'Enrol Me',
      password: PASSWORD,
    });
    const other = await usersSvc.createUser({
      username: 'enrol.other',
      displayName: 'Other',
      password: PASSWORD,
    });
    const started = await stepup.startTotpEnrolment(u.id);
    expect(started.otpauthUri).toMatch(/^otpauth:\/\/totp\/.*enrol\.me.*secret=/);
    // Reloading the enrolment page shows the same secret.
    expect((await stepup.startTotpEnrolment(u.id)).secret).toBe(started.secret);

    const [row] = await tdb.db.select().from(users).where(eq(users.id, u.id));
    const raw = Buffer.from(decodeTotpSecret(started.secret));
    expect(row!.totpSecretEnc).not.toContain(started.secret);
    expect(row!.totpSecretEnc).not.toContain(raw.toString('base64'));
    expect(row!.totpSecretEnc).not.toContain(raw.toString('hex'));
    const key = deriveKey(SECRET_KEY, 'totp-secret');
    expect(open(row!.totpSecretEnc!, key, u.id).equals(raw)).toBe(true);
    expect(() => open(row!.totpSecretEnc!, key, other.id)).toThrow();

    await expect(stepup.confirmTotpEnrolment(u.id, '000000')).rejects.toMatchObject({
      code: 'totp.code_wrong',
    });
    expect((await usersSvc.getUser(u.id)).mfaEnrolled).toBe(false);
    await stepup.confirmTotpEnrolment(u.id, await generate({ secret: started.secret, epoch: epoch() }));
    expect((await usersSvc.getUser(u.id)).mfaEnrolled).toBe(true);
    await expect(stepup.startTotpEnrolment(u.id)).rejects.toMatchObject({ code: 'totp.already_enrolled' });
    const actions = (await attempts(u.id)).map((r) => `${r.action}:${r.outcome}`);
    expect(actions).toEqual(
      expect.arrayContaining(['totp.enrolment_started:ok', 'totp.enrol_attempt:refused', 'totp.enrolled:ok']),
    );
  });

  it('consumes the enrolment link when enrolment completes through it', async () => {
    const u = await usersSvc.createUser({ username: 'enrol.link', displayName: 'Link', password: PASSWORD });
    const created = await stepup.createChallenge({ userId: u.id, purpose: 'enrol_totp', subject: 'enrol' });
    expect(created.url).toBe(`https://ar.example.test/enrol/${created.token}`);
    const view = await stepup.inspectChallenge(created.token);
    const { secret } = await stepup.startTotpEnrolment(view.userId);
    await stepup.confirmTotpEnrolment(u.id, await generate({ secret, epoch: epoch() }), {
      token: created.token,
    });
    await expect(stepup.inspectChallenge(created.token)).rejects.toMatchObject({ code: 'stepup.link_used' });
  });

  it('makes links that store only a hash of the token, and refuses users without MFA', async () => {
    const u = await enrolledUser('linky');
    const created = await link(u.id);
    expect(created.url).toBe(`https://ar.example.test/stepup/${created.token}`);
    const [row] = await tdb.db
      .select()
      .from(stepUpChallenges)
      .where(eq(stepUpChallenges.id, created.challengeId));
    expect(row!.tokenHash).toBe(hashToken(created.token, SECRET_KEY));
    expect(JSON.stringify(row)).not.toContain(created.token);
    await expect(stepup.inspectChallenge(created.token)).resolves.toMatchObject({
      userId: u.id,
      username: 'linky',
      purpose: 'approve',
      subject: 'digest-abc',
    });
    const plain = await usersSvc.createUser({
      username: 'no.mfa',
      displayName: 'No MFA',
      password: PASSWORD,
    });
    await expect(link(plain.id)).rejects.toMatchObject({
      code: 'stepup.mfa_not_enrolled',
      message: expect.stringMatching(/enrol/i),
    });
    await expect(stepup.inspectChallenge('nope')).rejects.toMatchObject({ code: 'stepup.link_unknown' });
  });

  it('opens a window for windowSeconds, runs onConfirmed in the same transaction, and audits the attempt', async () => {
    const u = await enrolledUser('win');
    const created = await link(u.id, 'digest-win');
    const code = await freshCode(u.secret);
    let seenInTx = false;
    const res = await stepup.complete(
      {
        token: created.token,
        password: PASSWORD,
        totpCode: code,
        sourceIp: '203.0.113.5',
        userAgent: 'test-agent',
      },
      async (challenge, window, tx) => {
        const [w] = await tx.select().from(stepUpWindows).where(eq(stepUpWindows.id, window.id));
        const who = await usersSvc.getUser(challenge.userId, tx);
        seenInTx = !!w && challenge.subject === 'digest-win' && who.username === 'win';
      },
    );
    expect(seenInTx).toBe(true);
    expect(res.window.expiresAt.getTime() - clock.now().getTime()).toBe(600_000);
    await expect(stepup.windowFor(u.id, 'approve')).resolves.toMatchObject({ id: res.window.id });
    await expect(stepup.windowById(res.window.id)).resolves.toMatchObject({ userId: u.id });

    const [rec] = (await attempts(u.id)).filter((r) => r.action === 'stepup.attempt');
    expect(rec).toMatchObject({
      outcome: 'ok',
      details: {
        purpose: 'approve',
        subject: 'digest-win',
        sourceIp: '203.0.113.5',
        userAgent: 'test-agent',
      },
    });
    expect(JSON.stringify(rec!.details)).not.toContain(PASSWORD);
    expect(JSON.stringify(rec!.details)).not.toContain(code);

    clock.advance(600_000 + 1000);
    await expect(stepup.windowFor(u.id, 'approve')).resolves.toBeNull();
    await expect(stepup.windowById(res.window.id)).resolves.toBeNull();
  });

  it("binds the window to the link's purpose and subject, and finds it for those only", async () => {
    const u = await enrolledUser('bound');
    const requestLink = await stepup.createChallenge({
      userId: u.id,
      purpose: 'approve',
      subject: 'f'.repeat(64),
    });
    const approved = await stepup.complete({
      token: requestLink.token,
      password: PASSWORD,
      totpCode: await freshCode(u.secret),
    });
    expect(approved.window).toMatchObject({
      purpose: 'approve',
      subject: bindTo.request('', 'f'.repeat(64)),
    });
    const history = await stepup.complete({
      token: (await stepup.createChallenge({ userId: u.id, purpose: 'history', subject: 'history' })).token,
      password: PASSWORD,
      totpCode: await freshCode(u.secret),
    });
    expect(history.window).toMatchObject({ purpose: 'history', subject: 'history' });
    // The history window is the newest, yet it is nobody's approval or role change.
    await expect(stepup.windowFor(u.id, 'grant')).resolves.toBeNull();
    await expect(stepup.windowFor(u.id, 'approve', bindTo.request('', '0'.repeat(64)))).resolves.toBeNull();
    await expect(
      stepup.windowFor(u.id, 'approve', bindTo.request('', 'f'.repeat(64))),
    ).resolves.toMatchObject({ id: approved.window.id });
    await expect(stepup.windowFor(u.id, ['history', 'download'])).resolves.toMatchObject({
      id: history.window.id,
    });
    const [row] = await tdb.db.select().from(stepUpWindows).where(eq(stepUpWindows.id, history.window.id));
    expect(row).toMatchObject({ purpose: 'history', subject: 'history' });
  });

  it("ends a user's open links and windows when one of their roles is revoked", async () => {
    const u = await enrolledUser('demoted');
    await usersSvc.grantRole({ userId: u.id, role: 'approver' });
    const opened = await stepup.complete({
      token: (await link(u.id)).token,
      password: PASSWORD,
      totpCode: await freshCode(u.secret),
    });
    const waiting = await link(u.id);
    await usersSvc.revokeRole({ userId: u.id, role: 'approver' });
    await expect(stepup.windowById(opened.window.id)).resolves.toBeNull();
    await expect(
      stepup.complete({ token: waiting.token, password: PASSWORD, totpCode: await freshCode(u.secret) }),
    ).rejects.toMatchObject({ code: 'stepup.link_expired' });
  });

  it('records a completion refused by what the link was for as a refused attempt', async () => {
    const u = await enrolledUser('refused.effect');
    const created = await link(u.id);
    await expect(
      stepup.complete(
        { token: created.token, password: PASSWORD, totpCode: await freshCode(u.secret) },
        async () => {
          throw new Forbidden('role.actor_not_admin', 'not an admin any more');
        },
      ),
    ).rejects.toMatchObject({ code: 'role.actor_not_admin' });
    const last = (await attempts(u.id)).filter((r) => r.action === 'stepup.attempt').at(-1);
    expect(last).toMatchObject({
      outcome: 'refused',
      details: { reason: 'not_allowed', error: 'role.actor_not_admin' },
    });
    await expect(stepup.windowFor(u.id, 'approve')).resolves.toBeNull();
  });

  it('takes a subject long enough for a 2,000-character reason and refuses a longer one', async () => {
    const u = await enrolledUser('long.subject');
    const body = JSON.stringify({ hostname: 'web-01', reason: '"'.repeat(2000), at: { channelId: 'C1' } });
    await expect(
      stepup.createChallenge({ userId: u.id, purpose: 'session', subject: `session:${body}` }),
    ).resolves.toMatchObject({ url: expect.stringContaining('/stepup/') });
    await expect(
      stepup.createChallenge({ userId: u.id, purpose: 'session', subject: 'x'.repeat(16_385) }),
    ).rejects.toMatchObject({ code: 'stepup.invalid', message: expect.stringMatching(/too long/) });
  });

  it('refuses a used link', async () => {
    const u = await enrolledUser('used');
    const created = await link(u.id);
    await stepup.complete({ token: created.token, password: PASSWORD, totpCode: await freshCode(u.secret) });
    await expect(
      stepup.complete({ token: created.token, password: PASSWORD, totpCode: await freshCode(u.secret) }),
    ).rejects.toMatchObject({ code: 'stepup.link_used', message: expect.stringContaining('new link') });
    const last = (await attempts(u.id)).filter((r) => r.action === 'stepup.attempt').at(-1);
    expect(last).toMatchObject({ outcome: 'refused', details: { reason: 'link_used' } });
  });

  it('refuses an expired link', async () => {
    const u = await enrolledUser('expired');
    const created = await link(u.id);
    clock.advance(901_000);
    await expect(stepup.inspectChallenge(created.token)).rejects.toMatchObject({
      code: 'stepup.link_expired',
    });
    await expect(
      stepup.complete({ token: created.token, password: PASSWORD, totpCode: await freshCode(u.secret) }),
    ).rejects.toMatchObject({ code: 'stepup.link_expired' });
  });

  it('refuses a replayed TOTP code, without saying which factor was wrong', async () => {
    const u = await enrolledUser('replay');
    const code = await freshCode(u.secret);
    await stepup.complete({ token: (await link(u.id)).token, password: PASSWORD, totpCode: code });
    const err = await stepup
      .complete({ token: (await link(u.id)).token, password: PASSWORD, totpCode: code })
      .catch((e) => e);
    expect(err).toMatchObject({ code: 'stepup.failed', status: 403 });
    expect(err.message).toMatch(/password or the code/);
  });

  it('locks out after 5 failures, audits it without secrets, and lifts the lock after lockoutSeconds', async () => {
    const u = await enrolledUser('locky');
    const created = await link(u.id);
    const wrongCode = '123456';
    for (let i = 1; i <= 5; i++) {
      const err = await stepup
        .complete({
          token: created.token,
          password: `wrong password ${i}!`,
          totpCode: await freshCode(u.secret),
        })
        .catch((e) => e);
      expect(err).toMatchObject({ code: 'stepup.failed' });
      if (i === 5) expect(err.message).toMatch(/locked until/);
    }
    // Right factors are refused while locked, with the time the lock lifts.
    const locked = await stepup
      .complete({ token: created.token, password: PASSWORD, totpCode: await freshCode(u.secret) })
      .catch((e) => e);
    expect(locked).toMatchObject({
      code: 'stepup.locked',
      status: 429,
      message: expect.stringMatching(/UTC/),
    });
    await expect(
      stepup.complete({ token: created.token, password: PASSWORD, totpCode: wrongCode }),
    ).rejects.toMatchObject({ code: 'stepup.locked' });

    const recs = await attempts(u.id);
    const stepRecs = recs.filter((r) => r.action === 'stepup.attempt');
    expect(stepRecs.filter((r) => (r.details as { reason: string }).reason === 'factors_wrong')).toHaveLength(
      5,
    );
    expect(stepRecs.filter((r) => (r.details as { reason: string }).reason === 'locked')).toHaveLength(2);
    expect(stepRecs.every((r) => r.outcome === 'refused')).toBe(true);
    expect(recs.filter((r) => r.action === 'stepup.lockout')).toEqual([
      expect.objectContaining({
        outcome: 'refused',
        details: expect.objectContaining({ failedAttempts: 5 }),
      }),
    ]);
    const text = JSON.stringify(recs.map((r) => r.details));
    expect(text).not.toMatch(/wrong password|correct horse/);
    expect(text).not.toContain(wrongCode);

    clock.advance(900_000);
    const again = await link(u.id);
    await expect(
      stepup.complete({ token: again.token, password: PASSWORD, totpCode: await freshCode(u.secret) }),
    ).resolves.toMatchObject({ window: { userId: u.id } });
  });

  it('rate-limits attempts per user per minute', async () => {
    const strict = createStepUpService({
      db: tdb.db,
      audit,
      clock,
      secretKey: SECRET_KEY,
      publicUrl: PUBLIC_URL,
      maxAttemptsPerMinute: 3,
      lockoutThreshold: 100,
    });
    const u = await enrolledUser('hasty');
    const created = await strict.createChallenge({ userId: u.id, purpose: 'approve', subject: 'x' });
    clock.advance(61_000); // the enrolment attempt falls out of the last minute
    const bad = { token: created.token, password: 'not the password at all', totpCode: '000000' };
    for (let i = 0; i < 3; i++)
      await expect(strict.complete(bad)).rejects.toMatchObject({ code: 'stepup.failed' });
    await expect(strict.complete(bad)).rejects.toMatchObject({ code: 'stepup.rate_limited', status: 429 });
    clock.advance(61_000);
    await expect(
      strict.complete({ token: created.token, password: PASSWORD, totpCode: await freshCode(u.secret) }),
    ).resolves.toBeTruthy();
  });

  it('gives exactly one success when one link is completed three times at once', async () => {
    const u = await enrolledUser('racer');
    const created = await link(u.id);
    const code = await freshCode(u.secret);
    let confirmed = 0;
    const results = await Promise.allSettled(
      [1, 2, 3].map(() =>
        stepup.complete({ token: created.token, password: PASSWORD, totpCode: code }, async () => {
          confirmed++;
        }),
      ),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results.filter((x) => x.status === 'rejected') as PromiseRejectedResult[]) {
      expect(r.reason).toMatchObject({ code: 'stepup.link_used' });
    }
    expect(confirmed).toBe(1);
    const windows = await tdb.db.select().from(stepUpWindows).where(eq(stepUpWindows.userId, u.id));
    expect(windows).toHaveLength(1);
  });

  it('rolls the step-up back when onConfirmed fails, records it, and burns the code', async () => {
    const u = await enrolledUser('rollback');
    const created = await link(u.id);
    const code = await freshCode(u.secret);
    await expect(
      stepup.complete({ token: created.token, password: PASSWORD, totpCode: code }, async () => {
        throw new Error('approval could not be recorded');
      }),
    ).rejects.toThrow(/could not be recorded/);
    await expect(stepup.windowFor(u.id, 'approve')).resolves.toBeNull();
    await expect(stepup.inspectChallenge(created.token)).resolves.toMatchObject({ userId: u.id });
    const last = (await attempts(u.id)).filter((r) => r.action === 'stepup.attempt').at(-1);
    expect(last).toMatchObject({ outcome: 'failed', details: { reason: 'confirm_failed' } });
    await expect(
      stepup.complete({ token: created.token, password: PASSWORD, totpCode: code }),
    ).rejects.toMatchObject({ code: 'stepup.failed' });
  });

  it('refuses a user whose authenticator was reset, telling them to enrol', async () => {
    const u = await enrolledUser('reset.me');
    const first = await stepup.complete({
      token: (await link(u.id)).token,
      password: PASSWORD,
      totpCode: await freshCode(u.secret),
    });
    const created = await link(u.id);
    await stepup.resetTotp(u.id, null);
    await expect(stepup.windowById(first.window.id)).resolves.toBeNull(); // reset closes open windows
    await expect(
      stepup.complete({ token: created.token, password: PASSWORD, totpCode: await freshCode(u.secret) }),
    ).rejects.toMatchObject({ code: 'stepup.mfa_not_enrolled', message: expect.stringMatching(/enrol/) });
    expect((await audit.list({ actionPrefix: 'totp.reset' })).length).toBeGreaterThan(0);
  });

  it('refuses a TOTP secret copied into another user’s row', async () => {
    const a = await enrolledUser('owner.a');
    const b = await enrolledUser('copier.b');
    await tdb.db.execute(
      sql`update users set totp_secret_enc = (select totp_secret_enc from users where id = ${a.id}) where id = ${b.id}`,
    );
    await expect(
      stepup.complete({
        token: (await link(b.id)).token,
        password: PASSWORD,
        totpCode: await freshCode(a.secret),
      }),
    ).rejects.toMatchObject({ code: 'stepup.failed' });
  });

  it('closes the window of a user who is disabled and refuses their next step-up', async () => {
    const u = await enrolledUser('to.disable');
    const created = await link(u.id);
    const opened = await stepup.complete({
      token: created.token,
      password: PASSWORD,
      totpCode: await freshCode(u.secret),
    });
    const next = await link(u.id);
    await usersSvc.disableUser({ userId: u.id });
    await expect(stepup.windowById(opened.window.id)).resolves.toBeNull();
    await expect(
      stepup.complete({ token: next.token, password: PASSWORD, totpCode: await freshCode(u.secret) }),
    ).rejects.toMatchObject({ code: 'stepup.user_disabled' });
  });

  it('refuses and audits an unknown link', async () => {
    await expect(
      stepup.complete({
        token: newToken(),
        password: PASSWORD,
        totpCode: '123456',
        sourceIp: '198.51.100.7',
      }),
    ).rejects.toMatchObject({ code: 'stepup.link_unknown' });
    const [rec] = await audit.list({ actionPrefix: 'stepup.attempt', limit: 1 });
    expect(rec).toMatchObject({
      actorType: 'anonymous',
      outcome: 'refused',
      details: { reason: 'link_unknown' },
    });
  });
});
