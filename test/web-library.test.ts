// The library upload page: opened only by a step-up made for it, by someone who may add files; the file
// streams into the store while it is hashed; a wrong expected SHA-256, a file over the cap or a form without
// its CSRF token stores nothing; every attempt is audited.
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditLog, files } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { sha256 } from './helpers/fixtures.ts';
import {
  completeStepUp,
  createWebFixture,
  formState,
  type TestUser,
  type WebFixture,
} from './helpers/web-stepup.ts';

/** A multipart/form-data body with the fields first and the file last, as the page's form sends it. */
function multipart(fields: Record<string, string>, file?: { name: string; data: Buffer }) {
  const boundary = `----ar${Math.random().toString(16).slice(2)}`;
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  }
  if (file) {
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${file.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      file.data,
      Buffer.from('\r\n'),
    );
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

describe.each(drivers)('library upload page on %s', (driver) => {
  let f: WebFixture;
  let analyst: TestUser;
  let approverOnly: TestUser;

  beforeAll(async () => {
    f = await createWebFixture(driver);
    analyst = await f.makeUser('ula', { roles: ['active_response'] });
    approverOnly = await f.makeUser('vera', { roles: ['approver'] });
  });
  afterAll(async () => {
    await f.close();
  });

  /** The upload form (and its CSRF token and cookies) for a window cookie. */
  async function form(cookies: Record<string, string>) {
    const page = await f.app.inject({ method: 'GET', url: '/library/upload', cookies });
    const state = formState(page);
    return { page, csrf: state.token!, cookies: { ...cookies, ...state.cookies } };
  }

  const upload = (cookies: Record<string, string>, body: ReturnType<typeof multipart>) =>
    f.app.inject({
      method: 'POST',
      url: '/library/upload',
      payload: body.payload,
      headers: { 'content-type': body.contentType },
      cookies,
    });

  const libraryRows = () => f.tdb.db.select().from(files).where(eq(files.kind, 'library'));

  it('explains how to get there without a step-up', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/library/upload' });
    expect(res.statusCode).toBe(401);
    expect(res.body).toContain('Type &quot;upload&quot; to the bot');
  });

  it('adds a file after an upload step-up and shows the SHA-256 it computed, audited', async () => {
    const { res, cookies } = await completeStepUp(f, analyst, 'upload', 'library');
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe('/library/upload');
    const { page, csrf, cookies: jar } = await form(cookies);
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('enctype="multipart/form-data"');
    expect(page.body).not.toMatch(/<script/i);
    const data = Buffer.from('#!/bin/sh\necho remediated\n'.repeat(100));
    const done = await upload(
      jar,
      multipart(
        { _csrf: csrf, name: 'remediate.sh', sha256: sha256(data.toString()).toUpperCase() },
        {
          name: 'local-name.sh',
          data,
        },
      ),
    );
    expect(done.statusCode).toBe(200);
    expect(done.body).toContain(sha256(data.toString()));
    expect(done.body).toContain('matches the one you expected');
    expect(await libraryRows()).toEqual([
      expect.objectContaining({ name: 'remediate.sh', size: data.length, sha256: sha256(data.toString()) }),
    ]);
    const [added] = await f.tdb.db.select().from(auditLog).where(eq(auditLog.action, 'library.file_added'));
    expect(added).toMatchObject({ outcome: 'ok', actorId: analyst.id });
  });

  it('refuses bytes that do not hash to the expected SHA-256, a file over the cap, and a form without its token', async () => {
    const before = (await libraryRows()).length;
    const { cookies } = await completeStepUp(f, analyst, 'upload', 'library');
    const { csrf, cookies: jar } = await form(cookies);
    const data = Buffer.from('not what was expected');
    const wrong = await upload(
      jar,
      multipart({ _csrf: csrf, sha256: 'ab'.repeat(32) }, { name: 'x.sh', data }),
    );
    expect(wrong.statusCode).toBe(400);
    expect(wrong.body).toContain(`hash to ${sha256(data.toString())}, not the expected ${'ab'.repeat(32)}`);

    const big = await upload(
      jar,
      multipart({ _csrf: csrf }, { name: 'big.bin', data: Buffer.alloc(2 * 1024 * 1024, 7) }),
    );
    expect(big.statusCode).toBe(413);
    expect(big.body).toContain('nothing was stored');

    const forged = await upload(jar, multipart({ name: 'forged.sh' }, { name: 'forged.sh', data }));
    expect(forged.statusCode).toBe(403);
    expect(await libraryRows()).toHaveLength(before);
    const refused = await f.tdb.db.select().from(auditLog).where(eq(auditLog.action, 'library.file_added'));
    expect(refused.filter((r) => r.outcome === 'refused').length).toBeGreaterThanOrEqual(2);
  });

  it('is not opened by a history window, nor for someone who may not add files', async () => {
    const history = await completeStepUp(f, analyst, 'history', 'history');
    const viaHistory = await f.app.inject({
      method: 'GET',
      url: '/library/upload',
      cookies: history.cookies,
    });
    expect(viaHistory.statusCode).toBe(401);
    expect(viaHistory.body).toContain('was for something else');

    const { cookies } = await completeStepUp(f, approverOnly, 'upload', 'library');
    const res = await f.app.inject({ method: 'GET', url: '/library/upload', cookies });
    expect(res.statusCode).toBe(403);
    const [refused] = await f.tdb.db
      .select()
      .from(auditLog)
      .where(eq(auditLog.actorId, approverOnly.id))
      .orderBy(auditLog.seq);
    expect(refused).toBeDefined();
  });
});
