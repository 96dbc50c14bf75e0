import { count, sql } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { parseCommand } from '../bot/commands/command-parser.ts';
import { AppError } from '../bot/errors.ts';
import { createPolicy } from '../bot/policy/policy-service.ts';
import { PLATFORM_MAX_TARGETS } from '../bot/requests/request-builder.ts';
import { createRequestService } from '../bot/requests/request-service.ts';
import type { ResolvedUser } from '../bot/users/user-types.ts';
import { actionRequests } from '../db/schema.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { chatContext, createFixtures, createTableDispatcher, type Fixtures } from './helpers/fixtures.ts';
import { testChainKey } from './helpers/keys.ts';

async function failure(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AppError) return e;
    throw e;
  }
  throw new Error('expected the call to fail');
}

describe('target selectors in the grammar', () => {
  it('parses os: and all beside hosts and segments, and names a wrong OS', () => {
    expect(parseCommand('processes web-01 segment:prod os:Linux os:windows all')).toMatchObject({
      kind: 'processes',
      hosts: ['web-01'],
      segments: ['prod'],
      oses: ['linux', 'windows'],
      all: true,
    });
    expect(parseCommand('run triage os:linux since=1h')).toMatchObject({
      script: 'triage',
      hosts: [],
      oses: ['linux'],
      params: { since: '1h' },
    });
    expect(parseCommand('isolate all --reason outbreak')).toMatchObject({ hosts: [], all: true });
    expect(() => parseCommand('processes os:beos')).toThrow(/os:beos is not an OS/);
  });
});

describe.each(drivers)('target selection on %s', (driver) => {
  let tdb: TestDatabase;
  let f: Fixtures;
  let analyst: ResolvedUser;
  let clock: ReturnType<typeof createTestClock>;

  function service(maxTargets?: number) {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    return createRequestService({
      db: tdb.db,
      audit,
      clock,
      policy: createPolicy({ readOnlyApprovalAbove: 1000 }),
      dispatcher: createTableDispatcher(),
      maxTargets,
    });
  }
  const create = (svc: ReturnType<typeof service>, text: string) =>
    svc.createRequest(analyst, parseCommand(text), chatContext(), { requesterStepUpValid: true });
  const hosts = (r: { targets: { hostname: string }[] }) => r.targets.map((t) => t.hostname);
  const excluded = (r: { exclusions: { hostname: string }[] }) => r.exclusions.map((x) => x.hostname).sort();

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    clock = createTestClock();
    f = createFixtures(tdb.db, clock);
    analyst = await f.user('analyst', { roles: ['active_response'] });
    const prod = await f.segment('prod', true);
    const corp = await f.segment('corp', true);
    const lab = await f.segment('lab', false);
    await f.endpoint('web-01', prod.id);
    await f.endpoint('web-02', prod.id, { os: 'windows' });
    await f.endpoint('mac-01', prod.id, { os: 'macos' });
    await f.endpoint('desk-01', corp.id, { os: 'windows' });
    await f.endpoint('lab-01', lab.id);
    // Slow on a loaded machine: the first test of a worker migrates the database it copies from.
  }, 120_000);
  afterEach(async () => {
    await tdb.destroy();
  });

  it('all selects every endpoint of the Active Response-enabled segments only', async () => {
    const { request } = await create(service(), 'processes all');
    expect(hosts(request)).toEqual(['desk-01', 'web-01', 'web-02']);
    expect(request.exclusions).toEqual([
      expect.objectContaining({
        hostname: 'mac-01',
        reason: expect.stringMatching(/macOS is not supported/),
      }),
    ]);
  });

  it('os: alone selects that OS across enabled segments, and narrows a segment when combined', async () => {
    const svc = service();
    expect(hosts((await create(svc, 'processes os:windows')).request)).toEqual(['desk-01', 'web-02']);
    expect(hosts((await create(svc, 'processes segment:prod os:windows')).request)).toEqual(['web-02']);
    // A named host is taken as named; os: narrows only the group selectors.
    const mixed = (await create(svc, 'processes lab-01 web-01 segment:corp os:linux')).request;
    expect(hosts(mixed)).toEqual(['web-01']);
    expect(excluded(mixed)).toEqual(['lab-01', 'segment:corp']);
    expect(mixed.exclusions.find((x) => x.hostname === 'segment:corp')?.reason).toBe(
      'segment corp has no enrolled linux endpoints',
    );
    // A disabled segment named outright is listed, each endpoint excluded with the reason.
    const lab = await failure(create(svc, 'processes segment:lab'));
    expect(lab.code).toBe('request.no_targets');
    expect(lab.message).toMatch(/lab-01: segment lab does not have Active Response enabled/);
  });

  it('refuses a selection above the limit with the count and the limit, storing nothing', async () => {
    const err = await failure(create(service(2), 'processes all'));
    expect(err.code).toBe('request.too_many_targets');
    expect(err.message).toBe(
      'That selects 4 endpoints; one request may target at most 2. Narrow the selection (segment:<name>, os:<name>, or fewer hosts).',
    );
    expect((await tdb.db.select({ n: count() }).from(actionRequests))[0]!.n).toBe(0);
  });

  it('counts before loading: 100,001 endpoints are refused at the platform limit of 100,000', async () => {
    expect(PLATFORM_MAX_TARGETS).toBe(100_000);
    const fleet = await f.segment('fleet', true);
    await tdb.db.execute(
      sql`insert into endpoints (hostname, os, segment_id)
          select 'f-' || g, 'linux', ${fleet.id}::uuid from generate_series(1, 100001) g`,
    );
    const err = await failure(create(service(), 'processes segment:fleet'));
    expect(err.code).toBe('request.too_many_targets');
    expect(err.message).toMatch(/^That selects 100,001 endpoints; one request may target at most 100,000\./);
  }, 120_000);
});
