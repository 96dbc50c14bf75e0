// The versioned script library: adding a name again makes the next version, versions never change, a
// request pins its version and SHA-256, parameters are checked against the version's JSON Schema (Ajv)
// before anything is stored, and an approval or step-up for one version never approves another.
import { count, eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { parseCommand } from '../bot/commands/command-parser.ts';
import { AppError } from '../bot/errors.ts';
import { createPolicy } from '../bot/policy/policy-service.ts';
import { createRequestService } from '../bot/requests/request-service.ts';
import { createScriptLibrary } from '../bot/scripts/script-library.ts';
import { bindTo } from '../bot/stepup/stepup-binding.ts';
import type { ResolvedUser } from '../bot/users/user-types.ts';
import { actionRequests, approvals, deliveries, scripts } from '../db/schema.ts';
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

const SCHEMA = {
  type: 'object',
  properties: {
    domain: { type: 'string', pattern: '^[a-z0-9.-]+$', maxLength: 253 },
    depth: { type: 'integer', minimum: 1, maximum: 5 },
    mode: { enum: ['quick', 'full'] },
  },
  required: ['domain'],
};

describe.each(drivers)('script versions on %s', (driver) => {
  let tdb: TestDatabase;
  let f: Fixtures;
  let clock: ReturnType<typeof createTestClock>;
  let analyst: ResolvedUser;
  let ic: ResolvedUser;

  function services() {
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    const library = createScriptLibrary({ db: tdb.db, audit, maxScriptBytes: 1024 * 1024 });
    const requests = createRequestService({
      db: tdb.db,
      audit,
      clock,
      policy: createPolicy(),
      dispatcher: createTableDispatcher(),
    });
    return { library, requests };
  }
  const create = (svc: ReturnType<typeof services>, text: string) =>
    svc.requests.createRequest(analyst, parseCommand(text), chatContext(), { requesterStepUpValid: true });
  const rows = async (t: typeof actionRequests | typeof approvals | typeof deliveries) =>
    Number((await tdb.db.select({ n: count() }).from(t))[0]!.n);

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    clock = createTestClock();
    f = createFixtures(tdb.db, clock);
    analyst = await f.user('analyst', { roles: ['active_response'] });
    ic = await f.user('commander', { roles: ['approver'] });
    const prod = await f.segment('prod', true);
    await f.endpoint('web-01', prod.id);
  }, 120_000);
  afterEach(async () => {
    await tdb.destroy();
  });

  it('adds the next version under an existing name, keeps each version as it was, and refuses to change one', async () => {
    const { library } = services();
    const v1 = await library.add({ name: 'sinkhole', body: 'print(1)\n', paramsSchema: SCHEMA });
    const same = await library.add({ name: 'sinkhole', body: 'print(1)\n', paramsSchema: SCHEMA });
    expect(same.id).toBe(v1.id);
    const v2 = await library.add({
      name: 'sinkhole',
      body: 'print(2)\n',
      paramsSchema: SCHEMA,
      timeoutSeconds: 30,
    });
    expect([v1.version, v2.version]).toEqual([1, 2]);
    expect((await library.show('sinkhole', 1)).row.body).toBe('print(1)\n');
    expect((await library.show('sinkhole')).row).toMatchObject({ version: 2, timeoutSeconds: 30 });
    await expect(
      tdb.db.update(scripts).set({ body: 'print("evil")\n' }).where(eq(scripts.id, v1.id)),
    ).rejects.toMatchObject({
      cause: expect.objectContaining({ message: expect.stringMatching(/immutable/) }),
    });
    await expect(tdb.db.delete(scripts).where(eq(scripts.id, v1.id))).rejects.toMatchObject({
      cause: expect.objectContaining({ message: expect.stringMatching(/cannot be deleted/) }),
    });
    expect((await library.show('sinkhole', 1)).row.body).toBe('print(1)\n');
    expect(
      (
        await failure(
          library.add({
            name: 'bad',
            body: 'x',
            paramsSchema: { type: 'object', properties: { d: { type: 'strnig' } } },
          }),
        )
      ).code,
    ).toBe('script.params_schema');
  });

  it('refuses a parameter schema violation before anything is stored, naming the parameter and the rule', async () => {
    const svc = services();
    await svc.library.add({ name: 'sinkhole', body: 'print(1)\n', paramsSchema: SCHEMA });
    const before = await rows(actionRequests);
    const cases: [string, string][] = [
      ['domain=EVIL!', 'domain: must match the pattern ^[a-z0-9.-]+$'],
      ['domain=a.example depth=9', 'depth: must be at most 5'],
      ['domain=a.example depth=two', 'depth: must be a whole number'],
      ['domain=a.example mode=slow', 'mode: must be one of "quick", "full"'],
      ['depth=2', 'domain: required, but not given (add domain=<value>)'],
      ['domain=a.example colour=red', 'colour: the script has no such parameter'],
    ];
    for (const [args, words] of cases) {
      const err = await failure(create(svc, `run sinkhole web-01 ${args} --reason block`));
      expect(err.code).toMatch(/^request\.(bad|missing|unknown)_param$/);
      expect(err.message).toContain(words);
    }
    expect(await rows(actionRequests)).toBe(before);
    const ok = await create(svc, 'run sinkhole web-01 domain=a.example depth=3 --reason block');
    expect(ok.request.params).toMatchObject({ args: { domain: 'a.example', depth: 3 } });
  });

  it('does not carry an approval or a step-up for v1 over to a request for v2', async () => {
    const svc = services();
    await svc.library.add({ name: 'fix', body: 'print("v1")\n' });
    const r1 = (await create(svc, 'run fix web-01 --reason patch')).request;
    expect(r1.params).toMatchObject({ script: { name: 'fix', version: 1 } });
    const w1 = await f.stepUpWindow(ic.id, { purpose: 'approve', subject: bindTo.request(r1.id, r1.digest) });

    await svc.library.add({ name: 'fix', body: 'print("v2")\n' });
    const r2 = (await create(svc, 'run fix web-01 --reason patch')).request;
    expect(r2.params).toMatchObject({ script: { name: 'fix', version: 2 } });
    expect(r2.digest).not.toBe(r1.digest);
    expect(r2.state).toBe('pending_approval');

    // The window opened to approve v1 approves nothing else, at either digest.
    for (const digest of [r2.digest, r1.digest]) {
      const err = await failure(
        svc.requests.decide({
          requestId: r2.id,
          approver: ic,
          decision: 'approve',
          digest,
          stepUpWindowId: w1,
        }),
      );
      expect(['approval.stepup_required', 'request.digest_changed']).toContain(err.code);
    }
    expect(await rows(approvals)).toBe(0);

    // v1's approval dispatches v1's bytes; r2 is still waiting for an approval of its own.
    const a1 = await svc.requests.decide({
      requestId: r1.id,
      approver: ic,
      decision: 'approve',
      digest: r1.digest,
      stepUpWindowId: w1,
    });
    expect(a1.request.state).toBe('dispatched');
    const [d1] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, r1.id));
    expect((d1!.payload as { scriptBody: string }).scriptBody).toBe('print("v1")\n');
    expect(await svc.requests.getView(r2.id)).toMatchObject({ state: 'pending_approval', approvals: [] });

    const w2 = await f.stepUpWindow(ic.id, { purpose: 'approve', subject: bindTo.request(r2.id, r2.digest) });
    await svc.requests.decide({
      requestId: r2.id,
      approver: ic,
      decision: 'approve',
      digest: r2.digest,
      stepUpWindowId: w2,
    });
    const [d2] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, r2.id));
    expect((d2!.payload as { scriptBody: string }).scriptBody).toBe('print("v2")\n');
  });

  it('disables a script: run no longer finds it and a pending request for it does not dispatch', async () => {
    const svc = services();
    await svc.library.add({ name: 'fix', body: 'print("v1")\n' });
    const r1 = (await create(svc, 'run fix web-01 --reason patch')).request;
    expect(await svc.library.disable('fix')).toBe(1);
    expect((await failure(create(svc, 'run fix web-01 --reason patch'))).code).toBe('request.unknown_script');
    const w = await f.stepUpWindow(ic.id, { purpose: 'approve', subject: bindTo.request(r1.id, r1.digest) });
    const err = await failure(
      svc.requests.decide({
        requestId: r1.id,
        approver: ic,
        decision: 'approve',
        digest: r1.digest,
        stepUpWindowId: w,
      }),
    );
    expect(err.code).toBe('request.script_disabled');
    expect(await rows(deliveries)).toBe(0);
  });
});
