import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AuditService, createAuditService } from '../bot/audit/audit-service.ts';
import type { ChatIdentity } from '../bot/ports.ts';
import { createUserService, requireRole, type UserService } from '../bot/users/user-service.ts';
import { roleGrants, users as usersTable } from '../db/schema.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { testChainKey } from './helpers/keys.ts';

const PASSWORD = 'correct horse battery staple';
const SECRET_KEY = Buffer.alloc(32, 7);

describe.each(drivers)('users, organisations and chat identities on %s', (driver) => {
  let tdb: TestDatabase;
  let audit: AuditService;
  let svc: UserService;
  const clock = createTestClock();
  let mdrAnalystId: string;

  beforeAll(async () => {
    tdb = await openTestDatabase(driver);
    audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    svc = createUserService({ db: tdb.db, audit, clock, secretKey: SECRET_KEY });
    await svc.ensureHomeOrganization();
    await svc.createOrganization({ name: 'mdr-co', external: true, allowedRoles: ['active_response'] });
    await svc.mapTenant({ platform: 'slack', tenantId: 'T-HOME', orgName: 'home' });
    await svc.mapTenant({ platform: 'slack', tenantId: 'T-MDR', orgName: 'mdr-co' });
    const mdr = await svc.createUser({
      username: 'mdr.analyst',
      displayName: 'MDR Analyst',
      password: PASSWORD,
      orgName: 'mdr-co',
    });
    mdrAnalystId = mdr.id;
  });
  afterAll(async () => {
    await tdb.destroy();
  });

  async function refusals(actorId: string) {
    return (await audit.list({ actorId })).filter((r) => r.action === 'identity.refused');
  }

  it('creates a user in the home organisation with no roles and no MFA yet, audited without the password', async () => {
    const u = await svc.createUser({
      username: 'Alice',
      displayName: 'Alice Analyst',
      email: 'alice@example.com',
      password: PASSWORD,
    });
    expect(u).toMatchObject({
      username: 'alice',
      orgName: 'home',
      external: false,
      roles: [],
      mfaEnrolled: false,
      disabled: false,
    });
    const [row] = await tdb.db.select().from(usersTable).where(eq(usersTable.id, u.id));
    expect(row!.passwordHash).toMatch(/^\$argon2id\$v=19\$m=65536,p=1,t=3\$/);
    const [rec] = (await audit.list({ actionPrefix: 'user.created' })).filter(
      (r) => r.details && JSON.stringify(r.details).includes(u.id),
    );
    expect(rec).toMatchObject({ outcome: 'ok', action: 'user.created' });
    expect(JSON.stringify(rec!.details)).not.toContain(PASSWORD);
  });

  it('refuses a duplicate username', async () => {
    await svc.createUser({ username: 'bob', displayName: 'Bob', password: PASSWORD });
    await expect(
      svc.createUser({ username: 'bob', displayName: 'Bob 2', password: PASSWORD }),
    ).rejects.toMatchObject({
      code: 'user.exists',
    });
  });

  it('refuses a malformed username and a short password, saying what was wrong', async () => {
    await expect(
      svc.createUser({ username: 'bad name!', displayName: 'X', password: PASSWORD }),
    ).rejects.toMatchObject({ code: 'user.invalid_input', message: expect.stringContaining('username') });
    await expect(
      svc.createUser({ username: 'shorty', displayName: 'S', password: 'short' }),
    ).rejects.toMatchObject({
      code: 'password.policy',
      message: expect.stringContaining('at least 12'),
    });
    await expect(svc.getUser('shorty')).rejects.toMatchObject({ code: 'user.not_found' });
  });

  it('finds a user by id or by username and refuses an unknown one', async () => {
    const u = await svc.createUser({ username: 'carol', displayName: 'Carol', password: PASSWORD });
    await expect(svc.getUser(u.id)).resolves.toMatchObject({ username: 'carol' });
    await expect(svc.getUser('CAROL')).resolves.toMatchObject({ id: u.id });
    await expect(svc.getUser('nobody')).rejects.toMatchObject({ code: 'user.not_found' });
    expect((await svc.listUsers()).map((x) => x.username)).toContain('carol');
  });

  it('resolves a linked chat identity in a mapped tenant', async () => {
    const u = await svc.createUser({ username: 'dave', displayName: 'Dave', password: PASSWORD });
    await svc.linkChatIdentity({ userId: u.id, platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-DAVE' });
    await expect(
      svc.resolveChatIdentity({ platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-DAVE' }),
    ).resolves.toMatchObject({ id: u.id, orgName: 'home' });
    const mdr = await svc.getUser(mdrAnalystId);
    expect(mdr.external).toBe(true);
  });

  it('refuses an unmapped tenant, telling them an admin must connect it, and audits the refusal', async () => {
    const who: ChatIdentity = { platform: 'teams', tenantId: 'tenant-x', chatUserId: 'aad-1' };
    await expect(svc.resolveChatIdentity(who)).rejects.toMatchObject({
      code: 'identity.tenant_unmapped',
      status: 403,
      message: expect.stringMatching(/not connected.*admin/),
    });
    const [rec] = await refusals('teams:tenant-x:aad-1');
    expect(rec).toMatchObject({
      actorType: 'chat',
      outcome: 'refused',
      details: { reason: 'identity.tenant_unmapped' },
    });
  });

  it('refuses an unknown chat user, naming the identity an admin must link, and audits it', async () => {
    const who: ChatIdentity = { platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-404' };
    await expect(svc.resolveChatIdentity(who)).rejects.toMatchObject({
      code: 'identity.unknown',
      message: expect.stringContaining('slack:T-HOME:U-404'),
    });
    expect(await refusals('slack:T-HOME:U-404')).toHaveLength(1);
  });

  it('refuses a disabled user and audits it', async () => {
    const u = await svc.createUser({ username: 'erin', displayName: 'Erin', password: PASSWORD });
    await svc.linkChatIdentity({ userId: u.id, platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-ERIN' });
    await svc.disableUser({ userId: u.id });
    await expect(
      svc.resolveChatIdentity({ platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-ERIN' }),
    ).rejects.toMatchObject({ code: 'identity.disabled' });
    const [rec] = await refusals('slack:T-HOME:U-ERIN');
    expect(rec).toMatchObject({ outcome: 'refused', details: { reason: 'identity.disabled', userId: u.id } });
    expect((await audit.list({ actionPrefix: 'user.disabled' })).length).toBe(1);
  });

  it('refuses a user whose organisation is not the tenant’s organisation', async () => {
    // Linked while the tenant was unmapped, then the tenant was mapped to another organisation.
    const u = await svc.createUser({ username: 'frank', displayName: 'Frank', password: PASSWORD });
    await svc.linkChatIdentity({
      userId: u.id,
      platform: 'slack',
      tenantId: 'T-LATER',
      chatUserId: 'U-FRANK',
    });
    await svc.mapTenant({ platform: 'slack', tenantId: 'T-LATER', orgName: 'mdr-co' });
    await expect(
      svc.resolveChatIdentity({ platform: 'slack', tenantId: 'T-LATER', chatUserId: 'U-FRANK' }),
    ).rejects.toMatchObject({ code: 'identity.org_mismatch', status: 403 });
    expect(await refusals('slack:T-LATER:U-FRANK')).toHaveLength(1);
    // Linking straight into a tenant of another organisation is refused up front.
    await expect(
      svc.linkChatIdentity({ userId: u.id, platform: 'slack', tenantId: 'T-MDR', chatUserId: 'U-FRANK2' }),
    ).rejects.toMatchObject({ code: 'identity.org_mismatch' });
  });

  it('refuses to link one chat identity to two users, and re-mapping a tenant elsewhere', async () => {
    const g = await svc.createUser({ username: 'gina', displayName: 'Gina', password: PASSWORD });
    const h = await svc.createUser({ username: 'hank', displayName: 'Hank', password: PASSWORD });
    await svc.linkChatIdentity({ userId: g.id, platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-G' });
    await expect(
      svc.linkChatIdentity({ userId: g.id, platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-G' }),
    ).resolves.toMatchObject({ changed: false });
    await expect(
      svc.linkChatIdentity({ userId: h.id, platform: 'slack', tenantId: 'T-HOME', chatUserId: 'U-G' }),
    ).rejects.toMatchObject({ code: 'identity.linked_elsewhere' });
    await expect(
      svc.mapTenant({ platform: 'slack', tenantId: 'T-HOME', orgName: 'mdr-co' }),
    ).rejects.toMatchObject({
      code: 'tenant.mapped_elsewhere',
    });
    expect((await audit.list({ actionPrefix: 'tenant.mapped' })).length).toBeGreaterThanOrEqual(2);
  });

  it('refuses a role outside the organisation’s allowed roles and stores nothing', async () => {
    await expect(
      svc.grantRole({ actorId: null, userId: mdrAnalystId, role: 'approver' }),
    ).rejects.toMatchObject({
      code: 'role.not_allowed_for_org',
      message: expect.stringContaining('mdr-co'),
    });
    const grants = await tdb.db.select().from(roleGrants).where(eq(roleGrants.userId, mdrAnalystId));
    expect(grants).toHaveLength(0);
    await expect(svc.grantRole({ userId: mdrAnalystId, role: 'active_response' })).resolves.toMatchObject({
      changed: true,
      user: { roles: ['active_response'] },
    });
  });

  it('refuses a role change whose actor is not an enabled admin when it is applied, and audits it', async () => {
    const demoted = await svc.createUser({ username: 'dora', displayName: 'Dora', password: PASSWORD });
    const target = await svc.createUser({ username: 'kit', displayName: 'Kit', password: PASSWORD });
    await svc.grantRole({ userId: demoted.id, role: 'admin' });
    await svc.grantRole({ userId: target.id, role: 'approver' });
    await svc.revokeRole({ userId: demoted.id, role: 'admin' });
    for (const change of [
      () => svc.grantRole({ actorId: demoted.id, userId: target.id, role: 'admin' }),
      () => svc.revokeRole({ actorId: demoted.id, userId: target.id, role: 'approver' }),
    ]) {
      await expect(change()).rejects.toMatchObject({ code: 'role.actor_not_admin' });
    }
    expect((await svc.getUser(target.id)).roles).toEqual(['approver']);
    const refused = (await audit.list({ actorId: demoted.id })).filter(
      (r) => r.action === 'role.change_refused',
    );
    expect(refused.map((r) => [r.outcome, (r.details as { kind: string }).kind])).toEqual([
      ['refused', 'revoke'],
      ['refused', 'grant'],
    ]);
  });

  it('grants and revokes roles with audit records; granting twice is a no-op', async () => {
    const admin = await svc.createUser({ username: 'ivy.admin', displayName: 'Ivy', password: PASSWORD });
    await svc.grantRole({ userId: admin.id, role: 'admin' }); // by the CLI: no actor
    const u = await svc.createUser({ username: 'jack', displayName: 'Jack', password: PASSWORD });
    const first = await svc.grantRole({ actorId: admin.id, userId: 'jack', role: 'approver' });
    expect(first).toMatchObject({ changed: true, user: { roles: ['approver'] } });
    await expect(svc.grantRole({ actorId: admin.id, userId: u.id, role: 'approver' })).resolves.toMatchObject(
      {
        changed: false,
      },
    );
    const granted = (await audit.list({ actorId: admin.id })).filter((r) => r.action === 'role.granted');
    expect(granted).toHaveLength(1);
    expect(granted[0]).toMatchObject({
      actorType: 'user',
      outcome: 'ok',
      details: { userId: u.id, role: 'approver' },
    });

    const revoked = await svc.revokeRole({ actorId: admin.id, userId: u.id, role: 'approver' });
    expect(revoked).toMatchObject({ changed: true, user: { roles: [] } });
    await expect(
      svc.revokeRole({ actorId: admin.id, userId: u.id, role: 'approver' }),
    ).resolves.toMatchObject({
      changed: false,
    });
    const rev = (await audit.list({ actorId: admin.id })).filter((r) => r.action === 'role.revoked');
    expect(rev).toHaveLength(1);
    // A revoked role can be granted again.
    await expect(svc.grantRole({ actorId: admin.id, userId: u.id, role: 'approver' })).resolves.toMatchObject(
      {
        changed: true,
      },
    );
  });

  it('keeps one active grant when two admins grant the same role at once', async () => {
    const u = await svc.createUser({ username: 'kim', displayName: 'Kim', password: PASSWORD });
    const results = await Promise.all([
      svc.grantRole({ userId: u.id, role: 'active_response' }),
      svc.grantRole({ userId: u.id, role: 'active_response' }),
    ]);
    expect(results.filter((r) => r.changed)).toHaveLength(1);
    expect((await svc.getUser(u.id)).roles).toEqual(['active_response']);
  });

  it('requireRole explains which role is missing', async () => {
    const u = await svc.getUser('carol');
    expect(() => requireRole(u, 'approver')).toThrow(expect.objectContaining({ code: 'policy.no_role' }));
    expect(() => requireRole(u, 'approver')).toThrow(/approver/);
  });

  it('refuses unknown roles and platforms with a message listing the valid ones', async () => {
    await expect(svc.grantRole({ userId: 'carol', role: 'root' as never })).rejects.toMatchObject({
      code: 'user.invalid_input',
      message: expect.stringContaining('active_response'),
    });
    await expect(
      svc.linkChatIdentity({ userId: 'carol', platform: 'irc', tenantId: 'x', chatUserId: 'y' }),
    ).rejects.toMatchObject({ message: expect.stringContaining('slack') });
  });

  it('changes a password, audited without the password', async () => {
    await svc.setPassword({ userId: 'carol', password: 'another long passphrase' });
    const [rec] = await audit.list({ actionPrefix: 'user.password_set' });
    expect(JSON.stringify(rec)).not.toContain('another long passphrase');
  });
});
