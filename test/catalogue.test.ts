// The action catalogue (protocol/actions.ts) is the only source of an action's parameters: what the request
// side builds from a chat command and puts in the outbox must parse with the very function the agent runs
// each delivery through, for every action; and a delivery whose parameters drift (a renamed field) is
// refused by that function, so the server and the agent cannot disagree silently again.
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AGENT_VERSION } from '../agent/version.ts';
import { createAuditService } from '../bot/audit/audit-service.ts';
import { parseCommand } from '../bot/commands/command-parser.ts';
import { ACTION_KINDS } from '../bot/commands/command-types.ts';
import { createPolicy } from '../bot/policy/policy-service.ts';
import { createRequestService } from '../bot/requests/request-service.ts';
import { bindTo } from '../bot/stepup/stepup-binding.ts';
import { deliveries } from '../db/schema.ts';
import { ACTION_NAMES, ACTIONS, parseDelivery } from '../protocol/actions.ts';
import { compareVersions } from '../protocol/semver.ts';
import { createTestClock } from './helpers/clock.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { chatContext, createFixtures, createTableDispatcher } from './helpers/fixtures.ts';
import { testChainKey } from './helpers/keys.ts';

/** One chat command per action, as a person types it. */
const COMMANDS: Record<(typeof ACTION_NAMES)[number], string> = {
  isolate: 'isolate web-01 --reason "c2"',
  unisolate: 'unisolate web-01 --reason "clean"',
  kill: 'kill web-01 coinminer-xmrig-helper --reason "miner"',
  fetch: 'fetch web-01 /var/log/auth.log',
  put: 'put web-01 fix.sh /opt/fix.sh --reason "patch"',
  run: 'run hostinfo web-01 depth=3 --reason "look"',
  processes: 'processes web-01 --match ssh',
};

describe('the action catalogue', () => {
  it('has a chat command for every action, and the reference agent implements every one', () => {
    expect([...ACTION_KINDS].sort()).toEqual([...ACTION_NAMES].sort());
    for (const name of ACTION_NAMES) {
      expect(compareVersions(AGENT_VERSION, ACTIONS[name].minAgentVersion), name).toBeGreaterThanOrEqual(0);
    }
  });

  it('refuses a delivery whose parameter names drifted from the catalogue, naming the field', () => {
    const base = {
      requestId: crypto.randomUUID(),
      ref: 'R-7K3QXM',
      digest: 'a'.repeat(64),
      hostname: 'web-01',
    };
    const drifted = [
      ['kill', { name: 'sshd' }],
      ['kill', { pid: 42, processName: 'sshd' }],
      ['put', { file: 'fix.sh', path: '/opt/fix.sh' }],
      ['fetch', { file: '/etc/passwd' }],
      ['run', { script: { name: 'x', version: 1, sha256: 'b'.repeat(64) }, params: {}, timeoutSeconds: 60 }],
    ] as const;
    for (const [action, params] of drifted) {
      const parsed = parseDelivery(action, { ...base, params, scriptBody: 'print(1)' });
      expect(parsed.ok, `${action} ${JSON.stringify(params)}`).toBe(false);
      if (!parsed.ok) expect(parsed.error).toMatch(new RegExp(`the ${action} parameters are not valid`));
    }
    expect(parseDelivery('kill', { ...base, params: { processName: 'sshd' } }).ok).toBe(true);
  });
});

describe.each(drivers)('what the request side sends, parsed as the agent parses it, on %s', (driver) => {
  let tdb: TestDatabase;
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
  });
  afterEach(async () => {
    await tdb.destroy();
  });

  it('parses every action the builder dispatched, with exactly the approved parameters', async () => {
    const clock = createTestClock();
    const f = createFixtures(tdb.db, clock);
    const audit = createAuditService({ db: tdb.db, clock, chainKey: testChainKey });
    const dispatcher = createTableDispatcher();
    const svc = createRequestService({ db: tdb.db, audit, clock, policy: createPolicy(), dispatcher });
    const analyst = await f.user('ana', { roles: ['active_response'] });
    const ic = await f.user('ian', { roles: ['approver'] });
    const seg = await f.segment('servers');
    await f.endpoint('web-01', seg.id, { agentVersion: AGENT_VERSION });
    await f.libraryFile('fix.sh', '#!/bin/sh\n');
    await f.script('hostinfo', 'print(1)\n', { params: { depth: { type: 'integer', required: true } } });

    for (const name of ACTION_NAMES) {
      let res = await svc.createRequest(analyst, parseCommand(COMMANDS[name]), chatContext(), {
        requesterStepUpValid: true,
      });
      if (res.request.state === 'pending_approval') {
        const decided = await svc.decide({
          requestId: res.request.id,
          approver: ic,
          decision: 'approve',
          digest: res.request.digest,
          stepUpWindowId: await f.stepUpWindow(ic.id, {
            purpose: 'approve',
            subject: bindTo.request(res.request.id, res.request.digest),
          }),
        });
        res = { ...res, request: decided.request };
      }
      expect(res.request.state, name).toBe('dispatched');
      const [row] = await tdb.db.select().from(deliveries).where(eq(deliveries.requestId, res.request.id));
      const parsed = parseDelivery(row!.action, row!.payload);
      expect(parsed, name).toMatchObject({
        ok: true,
        delivery: { action: name, params: res.request.params },
      });
    }
  });
});
