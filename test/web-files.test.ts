import { BlobReader, BlobWriter, configure, ZipReader } from '@zip.js/zip.js';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditLog, endpoints, segments, sessions } from '../db/schema.ts';
import { WINDOW_COOKIE } from '../web-stepup/window-cookie.ts';
import { drivers } from './helpers/db.ts';
import { completeStepUp, createWebFixture, type TestUser, type WebFixture } from './helpers/web-stepup.ts';

configure({ useWebWorkers: false });

describe.each(drivers)('evidence downloads and session history on %s', (driver) => {
  let f: WebFixture;
  let analyst: TestUser;
  let approverOnly: TestUser;
  let otherTeam: TestUser;
  let evidenceId: string;
  let otherTeamEvidenceId: string;
  const evidence = Buffer.from('MZ\x90\x00 pretend malware sample\n'.repeat(1000), 'latin1');

  beforeAll(async () => {
    f = await createWebFixture(driver);
    analyst = await f.makeUser('uma', { roles: ['active_response'] });
    approverOnly = await f.makeUser('vic', { roles: ['approver'] });
    otherTeam = await f.makeUser('otto', { roles: ['active_response'] });
    // uma's fetch, which vic did not approve; otto's own fetch is another team's evidence to her.
    evidenceId = await f.storeEvidence(
      'C:\\Users\\bob\\AppData\\evil "dropper".exe',
      evidence,
      'fetched',
      await f.fetchRequest(analyst),
    );
    otherTeamEvidenceId = await f.storeEvidence(
      '/home/eve/.ssh/id_ed25519',
      Buffer.from('another team'),
      'fetched',
      await f.fetchRequest(otherTeam),
    );
    const [seg] = await f.tdb.db
      .insert(segments)
      .values({ name: 'servers', activeResponseEnabled: true })
      .returning();
    const [web01] = await f.tdb.db
      .insert(endpoints)
      .values({ hostname: 'web-01', os: 'linux', segmentId: seg!.id })
      .returning();
    const [db01] = await f.tdb.db
      .insert(endpoints)
      .values({ hostname: 'db-01', os: 'linux', segmentId: seg!.id })
      .returning();
    await f.tdb.db.insert(sessions).values([
      {
        userId: analyst.id,
        endpointId: web01!.id,
        reason: 'triage beacon',
        caseId: 'IR-42',
        startedAt: new Date('2026-11-28T08:00:00Z'),
      },
      {
        userId: analyst.id,
        endpointId: db01!.id,
        reason: 'check db',
        caseId: 'IR-43',
        startedAt: new Date('2026-11-27T08:00:00Z'),
      },
    ]);
    await f.audit.append({
      actorType: 'user',
      actorId: analyst.id,
      action: 'script.executed',
      outcome: 'ok',
      endpointId: web01!.id,
      details: { script: 'collect-triage', sha256: 'cafe'.repeat(16), payload: 'print("hello")' },
    });
  });
  afterAll(async () => {
    await f.close();
  });

  it('explains how to get a download link when there is no step-up window', async () => {
    const res = await f.app.inject({ method: 'GET', url: `/files/${evidenceId}` });
    expect(res.statusCode).toBe(401);
    expect(res.body).toContain('download link the bot posted');
    expect(res.headers['content-type']).toMatch(/text\/html/);
  });

  it('downloads evidence as an AES zip with the password "infected" after a download step-up, audited', async () => {
    const { res, cookie, cookies } = await completeStepUp(f, analyst, 'download', evidenceId);
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain(`<meta http-equiv="refresh" content="1;url=/files/${evidenceId}">`);
    expect(res.body).toContain(`<a href="/files/${evidenceId}">`);
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
    expect(cookie!.maxAge).toBeGreaterThan(0);
    expect(cookie!.maxAge).toBeLessThanOrEqual(600);

    const dl = await f.app.inject({ method: 'GET', url: `/files/${evidenceId}`, cookies });
    expect(dl.statusCode).toBe(200);
    expect(dl.headers['content-type']).toBe('application/zip');
    expect(dl.headers['content-disposition']).toContain('evil _dropper_.exe.zip');
    expect(dl.headers['cache-control']).toBe('no-store');
    const zip = new ZipReader(new BlobReader(new Blob([dl.rawPayload])));
    const [entry] = await zip.getEntries();
    expect(entry).toMatchObject({ filename: 'evil _dropper_.exe', encrypted: true, zipCrypto: false });
    if (!entry || entry.directory) throw new Error('the zip holds no file entry');
    const blob = await entry.getData(new BlobWriter(), { password: 'infected' });
    expect(Buffer.from(await blob.arrayBuffer()).equals(evidence)).toBe(true);
    await expect(entry.getData(new BlobWriter(), { password: 'wrong' })).rejects.toThrow();
    await zip.close();

    const [row] = await f.tdb.db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, 'file.downloaded'), eq(auditLog.actorId, analyst.id)));
    expect(row?.details).toMatchObject({ fileId: evidenceId, size: evidence.length });
    expect((row!.details as { sha256: string }).sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuses a tampered or foreign cookie', async () => {
    const { cookie } = await completeStepUp(f, analyst, 'download', evidenceId);
    const tampered = cookie!.value.replace(/^(.)/, (c) => (c === 'a' ? 'b' : 'a'));
    const res = await f.app.inject({
      method: 'GET',
      url: `/files/${evidenceId}`,
      cookies: { [WINDOW_COOKIE]: tampered },
    });
    expect(res.statusCode).toBe(401);
    const unsigned = await f.app.inject({
      method: 'GET',
      url: `/files/${evidenceId}`,
      cookies: { [WINDOW_COOKIE]: decodeURIComponent(cookie!.value).split('.').slice(0, 2).join('.') },
    });
    expect(unsigned.statusCode).toBe(401);
  });

  it('stops honouring the cookie once the step-up window has expired', async () => {
    const { cookies } = await completeStepUp(f, analyst, 'download', evidenceId);
    f.clock.advance(11 * 60_000);
    const res = await f.app.inject({ method: 'GET', url: `/files/${evidenceId}`, cookies });
    expect(res.statusCode).toBe(401);
  });

  /** The refusals of `user`'s downloads, newest last. */
  async function downloadRefusals(user: TestUser) {
    return f.tdb.db
      .select()
      .from(auditLog)
      .where(
        and(
          eq(auditLog.actorId, user.id),
          eq(auditLog.action, 'file.download'),
          eq(auditLog.outcome, 'refused'),
        ),
      )
      .orderBy(auditLog.seq);
  }

  it('refuses someone who is neither its requester, its approver nor an in-house admin, and audits it', async () => {
    for (const [who, file] of [
      [approverOnly, evidenceId],
      [otherTeam, evidenceId],
      [analyst, otherTeamEvidenceId],
    ] as const) {
      // Even with a step-up made for that very file (a link someone else passed on, say).
      const { cookies } = await completeStepUp(f, who, 'download', file);
      const res = await f.app.inject({ method: 'GET', url: `/files/${file}`, cookies });
      expect(res.statusCode).toBe(403);
      expect(res.body).toContain('only its requester, its approvers and in-house admins');
      expect((await downloadRefusals(who)).at(-1)).toMatchObject({
        details: { reason: 'file.not_yours', fileId: file },
      });
    }
  });

  it('lets the approvers of its request and in-house admins download it', async () => {
    const approver = await f.makeUser('wes', { roles: ['approver'] });
    const admin = await f.makeUser('ada', { roles: ['admin'] });
    const approvedId = await f.storeEvidence(
      'sample.bin',
      Buffer.from('approved sample'),
      'fetched',
      await f.fetchRequest(analyst, [approver]),
    );
    for (const [who, file] of [
      [approver, approvedId],
      [admin, approvedId],
      [admin, otherTeamEvidenceId],
    ] as const) {
      const { cookies } = await completeStepUp(f, who, 'download', file);
      const res = await f.app.inject({ method: 'GET', url: `/files/${file}`, cookies });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('application/zip');
    }
  });

  it('refuses another file, or a history window, where the window was for one download, and audits it', async () => {
    // uma stepped up to read the history, then tries to open a file with that window.
    const history = await completeStepUp(f, analyst, 'history', 'history');
    const viaHistory = await f.app.inject({
      method: 'GET',
      url: `/files/${evidenceId}`,
      cookies: history.cookies,
    });
    expect(viaHistory.statusCode).toBe(401);
    expect(viaHistory.body).toContain('each confirmation opens only what it was for');
    expect((await downloadRefusals(analyst)).at(-1)).toMatchObject({
      details: { reason: 'stepup.wrong_purpose', windowPurpose: 'history' },
    });
    // A download window opens its own file only, even for an in-house admin who may read every file.
    const admin = await f.makeUser('ian', { roles: ['admin'] });
    const one = await completeStepUp(f, admin, 'download', evidenceId);
    const other = await f.app.inject({
      method: 'GET',
      url: `/files/${otherTeamEvidenceId}`,
      cookies: one.cookies,
    });
    expect(other.statusCode).toBe(401);
    expect((await downloadRefusals(admin)).at(-1)).toMatchObject({
      details: { reason: 'stepup.wrong_purpose', windowPurpose: 'download' },
    });
  });

  it('answers unknown ids, non-ids and library files with not found', async () => {
    const missing = '00000000-0000-4000-8000-00000000dead';
    const unknown = await f.app.inject({
      method: 'GET',
      url: `/files/${missing}`,
      cookies: (await completeStepUp(f, analyst, 'download', missing)).cookies,
    });
    expect(unknown.statusCode).toBe(404);
    const { cookies } = await completeStepUp(f, analyst, 'download', evidenceId);
    const notAnId = await f.app.inject({ method: 'GET', url: '/files/..%2F..%2Fsecret.key', cookies });
    expect(notAnId.statusCode).toBe(404);
    expect(notAnId.body).toContain('is not a file id');
    const libraryId = await f.storeEvidence('remediate.ps1', Buffer.from('Write-Host ok'), 'library');
    const library = await f.app.inject({
      method: 'GET',
      url: `/files/${libraryId}`,
      cookies: (await completeStepUp(f, analyst, 'download', libraryId)).cookies,
    });
    expect(library.statusCode).toBe(404);
  });

  it('opens the session history after a history step-up and lists sessions and audit details', async () => {
    const { res, cookies } = await completeStepUp(f, analyst, 'history', 'history');
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe('/history');
    const page = await f.app.inject({ method: 'GET', url: '/history', cookies });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('Session history');
    expect(page.body).toContain('web-01');
    expect(page.body).toContain('db-01');
    expect(page.body).toContain('triage beacon');
    expect(page.body).not.toMatch(/<script/i);
    const scripts = await f.app.inject({ method: 'GET', url: '/history?action=script.', cookies });
    expect(scripts.body).toContain('script.executed');
    expect(scripts.body).toContain('cafe'.repeat(16));
    expect(scripts.body).toContain('print(&quot;hello&quot;)');
    expect(scripts.body).not.toMatch(/<script/i);
    const viewed = await f.tdb.db.select().from(auditLog).where(eq(auditLog.action, 'history.viewed'));
    expect(viewed.length).toBeGreaterThan(0);
  });

  it('filters history by user, endpoint and time', async () => {
    const { cookies } = await completeStepUp(f, analyst, 'history', 'history');
    const byEndpoint = await f.app.inject({ method: 'GET', url: '/history?endpoint=web-01', cookies });
    expect(byEndpoint.body).toContain('triage beacon');
    expect(byEndpoint.body).not.toContain('check db');
    const byTime = await f.app.inject({
      method: 'GET',
      url: '/history?from=2026-11-27T00:00&to=2026-11-27T23:59',
      cookies,
    });
    expect(byTime.body).toContain('check db');
    expect(byTime.body).not.toContain('triage beacon');
    const byUser = await f.app.inject({ method: 'GET', url: '/history?user=vic', cookies });
    expect(byUser.statusCode).toBe(200);
    expect(byUser.body).toContain('No sessions match.');
  });

  it('explains a filter it cannot read, quoting what was typed', async () => {
    const { cookies } = await completeStepUp(f, analyst, 'history', 'history');
    const badTime = await f.app.inject({ method: 'GET', url: '/history?from=yesterday', cookies });
    expect(badTime.statusCode).toBe(400);
    expect(badTime.body).toContain('&quot;yesterday&quot; is not a time');
    const badUser = await f.app.inject({ method: 'GET', url: '/history?user=nobody', cookies });
    expect(badUser.statusCode).toBe(404);
    expect(badUser.body).toContain('No user is named &quot;nobody&quot;');
    const badHost = await f.app.inject({ method: 'GET', url: '/history?endpoint=%3Cimg%3E', cookies });
    expect(badHost.statusCode).toBe(400);
    expect(badHost.body).not.toContain('<img>');
  });

  it('refuses history without a window or without the Active Response role', async () => {
    const none = await f.app.inject({ method: 'GET', url: '/history' });
    expect(none.statusCode).toBe(401);
    expect(none.body).toContain('step-up link');
    const { cookies } = await completeStepUp(f, approverOnly, 'history', 'history');
    const res = await f.app.inject({ method: 'GET', url: '/history', cookies });
    expect(res.statusCode).toBe(403);
  });
});
