// An action group's results page after a step-up: every endpoint of a 300-endpoint group with its state,
// exit code, duration and first lines of output; the state filter; one endpoint's full output; and the CSV
// of the table, with every endpoint in it. Without a window opened for it the page tells how to get one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actionGroups, actionRequests } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { seedFinishedGroup } from './helpers/group-results.ts';
import { completeStepUp, createWebFixture, type TestUser, type WebFixture } from './helpers/web-stepup.ts';

const N = 300;
const rowsOf = (body: string) => body.split('<tr class="state-').slice(1);

describe.each(drivers)('action group results page on %s', { timeout: 180_000 }, (driver) => {
  let f: WebFixture;
  let analyst: TestUser;
  let cookies: Record<string, string>;
  let failedId: string;

  beforeAll(async () => {
    f = await createWebFixture(driver);
    analyst = await f.makeUser('uma', { roles: ['active_response'] });
    failedId = (await seedFinishedGroup(f, analyst.id, 'R-GRP300', N)).deliveryIds[0]!;

    cookies = (await completeStepUp(f, analyst, 'history', 'history')).cookies;
  }, 180_000);
  afterAll(async () => {
    await f?.close();
  });

  it('lists every endpoint with its state, exit code, duration and first lines', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/groups/R-GRP300', cookies });
    expect(res.statusCode).toBe(200);
    const rows = rowsOf(res.body);
    expect(rows).toHaveLength(N);
    expect(rows[0]).toContain('host-001');
    expect(rows[0]).toMatch(/<td>failed<\/td><td>1<\/td><td>1\.2 s<\/td>/);
    expect(rows[0]).toContain('report of host-001');
    expect(rows[0]).toContain('more line');
    expect(rows[0]).toContain(`/groups/R-GRP300/output/${failedId}`);
    expect(res.body).toContain('failed (30)');
    expect(res.body).toContain('succeeded (270)');
  });

  it('filters by state', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/groups/R-GRP300?state=failed', cookies });
    const rows = rowsOf(res.body);
    expect(rows).toHaveLength(30);
    expect(rows.every((r) => r.startsWith('failed'))).toBe(true);
  });

  it('exports every endpoint as CSV, and serves one endpoint full output', async () => {
    const csv = await f.app.inject({ method: 'GET', url: '/groups/R-GRP300/results.csv', cookies });
    expect(csv.statusCode).toBe(200);
    expect(csv.headers['content-type']).toContain('text/csv');
    const lines = csv.body.trim().split('\r\n');
    expect(lines[0]).toBe('endpoint,state,exit_code,duration_ms,first_lines');
    const hosts = new Set(
      lines
        .slice(1)
        .filter((l) => /^host-\d{3},/.test(l))
        .map((l) => l.split(',')[0]),
    );
    expect(hosts.size).toBe(N);
    expect(csv.body).toContain('host-001,failed,1,1200,"report of host-001');
    const out = await f.app.inject({ method: 'GET', url: `/groups/R-GRP300/output/${failedId}`, cookies });
    expect(out.statusCode).toBe(200);
    expect(out.body).toContain('--- stderr ---\npermission denied, ok');
    expect(out.body.split('line\n').length).toBe(21);
  });

  it('lists the action groups, filtered by state and paged 50 at a time', async () => {
    const [one] = await f.tdb.db.select().from(actionRequests);
    for (let i = 0; i < 55; i++) {
      const [r] = await f.tdb.db
        .insert(actionRequests)
        .values({ ...one!, id: undefined, ref: `R-PAGE${String(i).padStart(2, '0')}`, caseId: 'IR-77' })
        .returning();
      await f.tdb.db.insert(actionGroups).values({ requestId: r!.id, state: i === 0 ? 'halted' : 'running' });
    }
    const first = await f.app.inject({ method: 'GET', url: '/groups', cookies });
    expect(first.statusCode).toBe(200);
    expect(first.body).toContain('56 groups');
    expect(first.body.split('<tr class="group">').length - 1).toBe(50);
    expect(first.body).toContain('<a rel="next" href="/groups?page=2">');
    const second = await f.app.inject({ method: 'GET', url: '/groups?page=2', cookies });
    expect(second.body.split('<tr class="group">').length - 1).toBe(6);
    const halted = await f.app.inject({ method: 'GET', url: '/groups?state=halted', cookies });
    const rows = halted.body.split('<tr class="group">').slice(1);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toContain('R-PAGE00');
    expect(rows[0]).toContain('run collect');
    expect(rows[0]).toContain('IR-77');
    expect(rows[0]).toContain(analyst.displayName);
  });

  it('asks for a step-up without a window, and audits each view', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/groups/R-GRP300' });
    expect(res.statusCode).toBe(401);
    expect(res.body).toContain('history');
    const viewed = await f.audit.list({ actionPrefix: 'group.results' });
    expect(viewed.length).toBeGreaterThanOrEqual(2);
  });
});
