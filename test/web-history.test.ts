// The session history page as a responder reads it: one row per audit record in words (who, what, which
// endpoint, which request, outcome, why), details folded under each row, 50 records a page newest first
// with Older/Newer links that keep the filters, and filters by user, endpoint, request, kind and time.
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actionRequests, auditLog, endpoints, segments, sessions } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { completeStepUp, createWebFixture, type TestUser, type WebFixture } from './helpers/web-stepup.ts';

/** The rows of the activity list, as their HTML. */
const rowsOf = (body: string) => body.split('<li class="event">').slice(1);
/** Visible text of some markup: tags dropped, whitespace folded, entities left as they are. */
const text = (markup: string) =>
  markup
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
const recordNumbers = (body: string) =>
  rowsOf(body).map((r) => Number(/<dt>Record<\/dt><dd>#(\d+)/.exec(r)?.[1]));
/** The first Newer (prev) or Older (next) link on the page, unescaped. */
const link = (body: string, rel: 'prev' | 'next') =>
  [...body.matchAll(/<a rel="(prev|next)" href="([^"]+)"/g)]
    .find((m) => m[1] === rel)?.[2]
    ?.replace(/&amp;/g, '&');

describe.each(drivers)('session history on %s', (driver) => {
  let f: WebFixture;
  let analyst: TestUser;
  let cookies: Record<string, string>;
  let web01: string;
  let db01: string;
  let requestId: string;

  const view = (url: string) => f.app.inject({ method: 'GET', url, cookies });

  beforeAll(async () => {
    f = await createWebFixture(driver);
    analyst = await f.makeUser('uma', { roles: ['active_response'] });
    const [seg] = await f.tdb.db
      .insert(segments)
      .values({ name: 'servers', activeResponseEnabled: true })
      .returning();
    const hosts = await f.tdb.db
      .insert(endpoints)
      .values([
        { hostname: 'web-01', os: 'linux', segmentId: seg!.id },
        { hostname: 'db-01', os: 'linux', segmentId: seg!.id },
      ])
      .returning();
    web01 = hosts[0]!.id;
    db01 = hosts[1]!.id;
    const [request] = await f.tdb.db
      .insert(actionRequests)
      .values({
        ref: 'R-7K3QXM',
        action: 'isolate',
        targets: [{ endpointId: web01, hostname: 'web-01' }],
        digest: 'd'.repeat(64),
        reason: 'C2 beacon',
        caseId: 'IR-42',
        requesterId: analyst.id,
        state: 'completed',
        deliveryTtlSeconds: 3600,
      })
      .returning();
    requestId = request!.id;
    // 120 older fetches on web-01 and db-01, so the activity runs to several pages.
    for (let i = 0; i < 120; i++) {
      await f.audit.append({
        actorType: 'user',
        actorId: analyst.id,
        action: 'file.fetched',
        outcome: 'ok',
        endpointId: i % 2 ? db01 : web01,
        details: { path: `/var/log/app-${i}.log`, sha256: 'ab'.repeat(32) },
      });
    }
    await f.audit.append({
      actorType: 'user',
      actorId: analyst.id,
      action: 'request.created',
      outcome: 'ok',
      requestId,
      details: {
        ref: 'R-7K3QXM',
        action: 'isolate',
        reason: 'C2 beacon',
        caseId: 'IR-42',
        digest: 'd'.repeat(64),
      },
    });
    await f.audit.append({
      actorType: 'agent',
      actorId: web01,
      action: 'delivery.result',
      outcome: 'ok',
      requestId,
      endpointId: web01,
      details: { action: 'isolate', result: { isolated: true, rules: ['drop all but broker'] } },
    });
    await f.audit.append({
      actorType: 'anonymous',
      action: 'stepup.attempt',
      outcome: 'refused',
      details: { reason: 'link_unknown', sourceIp: '203.0.113.9' },
    });
    cookies = (await completeStepUp(f, analyst, 'history', 'history')).cookies;
  });
  afterAll(async () => {
    await f.close();
  });

  it('shows each record as one row in words, with its details folded under it', async () => {
    const res = await view('/history');
    expect(res.statusCode).toBe(200);
    const rows = rowsOf(res.body);
    const created = rows.find((r) => r.includes('asked for isolate'))!;
    expect(text(created.split('<details>')[0]!)).toMatch(
      /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC uma asked for isolate Request R-7K3QXM OK Why C2 beacon \(case IR-42\)/,
    );
    const result = rows.find((r) => r.includes('isolate succeeded'))!;
    expect(text(result.split('<details>')[0]!)).toContain(
      'agent on web-01 isolate succeeded Endpoint web-01 Request R-7K3QXM OK Why C2 beacon (case IR-42)',
    );
    const refused = rows.find((r) => r.includes('identity check did not pass'))!;
    expect(text(refused.split('<details>')[0]!)).toContain('unknown visitor identity check did not pass');
    expect(refused).toContain('class="badge b-refused">Refused<');
    expect(text(refused.split('<details>')[0]!)).toContain('Why link_unknown');
    // Details are labelled fields inside a closed <details>, never a JSON dump of the whole record.
    expect(result).toMatch(/<details><summary>Details<\/summary><dl class="details">/);
    expect(result).not.toMatch(/<details open/);
    expect(text(result)).toContain('Record #');
    expect(result).toContain('<dt>result.isolated</dt><dd><code>true</code></dd>');
    expect(result).toContain('<dt>result.rules</dt><dd><code>drop all but broker</code></dd>');
    expect(res.body).not.toContain('{&quot;action&quot;:&quot;isolate&quot;');
    // Clicking a request or endpoint narrows the list to it.
    expect(created).toContain('href="/history?request=R-7K3QXM"');
    expect(result).toContain('href="/history?endpoint=web-01"');
  });

  it('pages 50 records at a time, newest first, and its Older and Newer links keep the filters', async () => {
    const first = await view('/history?endpoint=web-01&action=file.');
    const firstSeqs = recordNumbers(first.body);
    expect(firstSeqs).toHaveLength(50);
    expect(firstSeqs).toEqual([...firstSeqs].sort((a, b) => b - a));
    expect(rowsOf(first.body).every((r) => text(r).includes('Endpoint web-01'))).toBe(true);
    expect(link(first.body, 'prev')).toBeUndefined();
    const older = link(first.body, 'next')!;
    expect(older).toBe(`/history?endpoint=web-01&action=file.&before=${firstSeqs.at(-1)}`);

    const second = await view(older);
    const secondSeqs = recordNumbers(second.body);
    expect(secondSeqs).toHaveLength(10); // 60 fetches on web-01 in all
    expect(Math.max(...secondSeqs)).toBeLessThan(Math.min(...firstSeqs));
    expect(link(second.body, 'next')).toBeUndefined();
    const newer = link(second.body, 'prev')!;
    expect(newer).toBe(`/history?endpoint=web-01&action=file.&after=${secondSeqs[0]}`);
    // The form still shows the filters on a later page.
    expect(second.body).toContain('id="f-endpoint" name="endpoint" type="text" value="web-01"');
    expect(second.body).toContain('<option value="file." selected>');

    const back = await view(newer);
    expect(recordNumbers(back.body)).toEqual(firstSeqs);
    expect(link(back.body, 'prev')).toBeUndefined();
    expect(link(back.body, 'next')).toBe(older);

    // Past the oldest record: an empty page that still leads back.
    const beyond = await view('/history?endpoint=web-01&before=1');
    expect(rowsOf(beyond.body)).toHaveLength(0);
    expect(beyond.body).toContain('No more records this way.');
    expect(link(beyond.body, 'prev')).toBe('/history?endpoint=web-01&after=0');
    const start = await view(link(beyond.body, 'prev')!);
    expect(start.statusCode).toBe(200);
    expect(Math.min(...recordNumbers(start.body))).toBe(Math.min(...secondSeqs));
  });

  it('keeps the page no taller than 50 rows however much there is', async () => {
    const all = await view('/history');
    expect(rowsOf(all.body)).toHaveLength(50);
    expect(link(all.body, 'next')).toMatch(/^\/history\?before=\d+$/);
  });

  it('filters by request ref, kind of event and user, and says what it could not find', async () => {
    const byRequest = await view('/history?request=r-7k3qxm');
    expect(byRequest.statusCode).toBe(200);
    expect(rowsOf(byRequest.body)).toHaveLength(2);
    expect(byRequest.body).not.toContain('No sessions match'); // sessions are not shown for one request
    const byKind = await view('/history?action=stepup.');
    const kinds = rowsOf(byKind.body).map((r) => /<code>([a-z_.]+)<\/code>/.exec(r)?.[1]);
    expect(kinds.length).toBeGreaterThan(0);
    expect(kinds.every((k) => k?.startsWith('stepup.'))).toBe(true);
    const byUser = await view('/history?user=uma&action=request.');
    expect(rowsOf(byUser.body).map((r) => text(r.split('<details>')[0]!))).toEqual([
      expect.stringContaining('uma asked for isolate'),
    ]);

    const unknown = await view('/history?request=R-NOSUCH');
    expect(unknown.statusCode).toBe(404);
    expect(unknown.body).toContain('No request is named &quot;R-NOSUCH&quot;');
    const malformed = await view('/history?request=7K3QXM');
    expect(malformed.statusCode).toBe(400);
    expect(malformed.body).toContain('a request is named like R-7K3QXM');
    const badPage = await view('/history?before=abc');
    expect(badPage.statusCode).toBe(400);
    expect(badPage.body).toContain('Filter not understood');
  });

  it('audits each view with its filters and page position', async () => {
    await view('/history?endpoint=db-01&before=100');
    const [last] = await f.tdb.db
      .select()
      .from(auditLog)
      .where(eq(auditLog.action, 'history.viewed'))
      .orderBy(auditLog.seq)
      .then((rows) => rows.slice(-1));
    expect(last!.actorId).toBe(analyst.id);
    expect(last!.details).toMatchObject({
      filters: { endpoint: 'db-01', user: null, request: null, action: null },
      page: { before: 100, after: null },
    });
  });
});

describe.each(drivers)('session history for an external organisation on %s', (driver) => {
  let f: WebFixture;
  let uma: TestUser;
  let mel: TestUser;

  beforeAll(async () => {
    f = await createWebFixture(driver);
    uma = await f.makeUser('uma', { roles: ['active_response'] });
    const admin = await f.makeUser('ada', { roles: ['admin'] });
    mel = await f.makeUser('mel', { roles: ['active_response'], org: 'MDR Partner' });
    const [seg] = await f.tdb.db
      .insert(segments)
      .values({ name: 'servers', activeResponseEnabled: true })
      .returning();
    const [web01] = await f.tdb.db
      .insert(endpoints)
      .values({ hostname: 'web-01', os: 'linux', segmentId: seg!.id })
      .returning();
    const inHouse = await f.fetchRequest(uma, [], 'R-INH0US');
    const theirs = await f.fetchRequest(mel, [], 'R-MDR001');
    const script = (body: string) => ({ name: 'triage', sha256: 'ab'.repeat(32), body });
    await f.audit.append({
      actorType: 'user',
      actorId: uma.id,
      action: 'request.created',
      outcome: 'ok',
      requestId: inHouse,
      details: { ref: 'R-INH0US', action: 'run', script: script('print("in-house secret")') },
    });
    await f.audit.append({
      actorType: 'agent',
      actorId: web01!.id,
      action: 'script.executed',
      outcome: 'ok',
      requestId: inHouse,
      endpointId: web01!.id,
      details: { payload: { scriptBody: 'print("in-house run")' } },
    });
    await f.audit.append({
      actorType: 'user',
      actorId: admin.id,
      action: 'script.saved',
      outcome: 'ok',
      details: { name: 'triage', payload: 'print("library body")' },
    });
    await f.audit.append({
      actorType: 'user',
      actorId: mel.id,
      action: 'request.created',
      outcome: 'ok',
      requestId: theirs,
      details: { ref: 'R-MDR001', action: 'run', script: script('print("mdr own")') },
    });
    await f.tdb.db.insert(sessions).values([
      { userId: uma.id, endpointId: web01!.id, reason: 'in-house triage', startedAt: f.clock.now() },
      { userId: mel.id, endpointId: web01!.id, reason: 'mdr triage', startedAt: f.clock.now() },
    ]);
  });
  afterAll(async () => {
    await f.close();
  });

  it("shows an external organisation's user their own requests and sessions only, no other organisation's script bodies", async () => {
    const cookies = (await completeStepUp(f, mel, 'history', 'history')).cookies;
    const page = await f.app.inject({ method: 'GET', url: '/history', cookies });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('R-MDR001');
    expect(page.body).toContain('print(&quot;mdr own&quot;)');
    expect(page.body).toContain('mdr triage');
    for (const hidden of ['R-INH0US', 'in-house secret', 'in-house run', 'library body', 'in-house triage']) {
      expect(page.body).not.toContain(hidden);
    }
    const actors = rowsOf(page.body).map((r) => / UTC (\S+) /.exec(text(r.split('<details>')[0]!))?.[1]);
    expect(actors.length).toBeGreaterThan(0);
    expect(actors.every((a) => a === 'mel')).toBe(true);
    // Naming the other organisation's request or user finds nothing, as if they did not exist.
    const request = await f.app.inject({ method: 'GET', url: '/history?request=R-INH0US', cookies });
    expect(request.statusCode).toBe(404);
    const user = await f.app.inject({ method: 'GET', url: '/history?user=uma', cookies });
    expect(user.statusCode).toBe(404);
    const scripts = await f.app.inject({ method: 'GET', url: '/history?action=script.', cookies });
    expect(scripts.body).not.toContain('print(');
  });

  it('shows in-house people every organisation', async () => {
    const cookies = (await completeStepUp(f, uma, 'history', 'history')).cookies;
    const page = await f.app.inject({ method: 'GET', url: '/history', cookies });
    for (const shown of [
      'R-INH0US',
      'R-MDR001',
      'in-house secret',
      'print(&quot;mdr own&quot;)',
      'mdr triage',
    ]) {
      expect(page.body).toContain(shown);
    }
  });
});
