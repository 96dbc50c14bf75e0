// The `endpoint` admin commands as an operator reads them: the agent hint names where the broker really
// listens, a token without a CA pin says so, and re-enrolment tokens and lifting a revocation are audited.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../app/config.ts';
import { createCliContext } from '../cli/cli-context.ts';
import { findCommand, runCliCommand } from '../cli/cli-runner.ts';
import type { CliIo } from '../cli/cli-types.ts';
import { enrolAgent, seedSegment, startTestBroker, type TestBroker, tempDir } from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { TEST_SECRET_KEY } from './helpers/keys.ts';

describe.each(drivers)('endpoint commands on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker | undefined;
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    await seedSegment(tdb, 'servers');
  });
  afterEach(async () => {
    await tb?.stop();
    tb = undefined;
    await tdb.destroy();
  });

  /** Runs one command as the CLI would, in a shell whose environment is `env` (BROKER_PORT unset). */
  async function cli(env: Record<string, string>, ...argv: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const io: CliIo = {
      out: (l) => void out.push(l),
      err: (l) => void err.push(l),
      write: async (c) => void out.push(c),
      readLine: async () => undefined,
      resolvePath: (p) => p,
    };
    const ctx = createCliContext({ config: loadConfig(env), database: tdb, secretKey: TEST_SECRET_KEY, io });
    const found = findCommand(argv, io);
    const code = typeof found === 'number' ? found : await runCliCommand(found, ctx);
    return { code, out: out.join('\n'), err: err.join('\n') };
  }

  it('prints the port the broker listens on, not the default, whatever this shell sets', async () => {
    tb = await startTestBroker(tdb);
    expect(tb.port).not.toBe(8443);
    const r = await cli({ DATA_DIR: tb.dataDir }, 'endpoint', 'enroll-token', '--segment', 'servers');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`--broker wss://localhost:${tb.port}$`, 'm'));
    expect(r.out).toMatch(/--enroll art_[\w-]{32}\.[\w-]{43} /);
    expect(r.out).not.toMatch(/no CA pin/);
  });

  it('says when a token carries no CA pin because no broker has started yet', async () => {
    const { dir: dataDir, remove } = tempDir('ar-cli-');
    const r = await cli(
      { DATA_DIR: dataDir, BROKER_PORT: '9443', BROKER_PUBLIC_HOST: 'broker.example' },
      'endpoint',
      'enroll-token',
      '--segment',
      'servers',
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/--enroll art_[\w-]{32} --broker wss:\/\/broker\.example:9443$/m);
    expect(r.out).toMatch(/no broker has started with this DATA_DIR yet, so the token carries no CA pin/);
    remove();
  });

  it('makes a re-enrolment token for an enrolled host only, and lifts a revocation, each audited', async () => {
    tb = await startTestBroker(tdb);
    const env = { DATA_DIR: tb.dataDir };
    const unknown = await cli(env, 'endpoint', 'reenroll-token', 'nope-01');
    expect(unknown).toMatchObject({ code: 1 });
    expect(unknown.err).toMatch(/there is no endpoint named "nope-01" \(endpoint\.unknown\)/);

    const { agent } = await enrolAgent(tb, tdb, 'Web-11');
    await agent.kill();
    expect((await cli(env, 'endpoint', 'revoke', 'web-11')).out).toMatch(/endpoint reenroll-token web-11/);
    const token = await cli(env, 'endpoint', 'reenroll-token', 'WEB-11', '--ttl', '2h');
    expect(token.out).toMatch(/Re-enrolment token for web-11 only/);
    expect(token.out).toMatch(/--hostname web-11 --reenroll$/m);
    expect(token.out).toMatch(/web-11 is revoked and stays revoked.*endpoint unrevoke web-11/);
    const lifted = await cli(env, 'endpoint', 'unrevoke', 'web-11');
    expect(lifted.out).toMatch(
      /Warning: it was not re-enrolled since, so the very certificate that was revoked/,
    );
    expect((await cli(env, 'endpoint', 'unrevoke', 'web-11')).out).toMatch(/not revoked; nothing changed/);

    const created = await tb.audit.list({ actionPrefix: 'enrolment.token_created' });
    expect(created[0]!.details).toMatchObject({ purpose: 'reenrol', hostname: 'web-11', revoked: true });
    expect(await tb.audit.list({ actionPrefix: 'endpoint.unrevoked' })).toMatchObject([
      { details: { hostname: 'web-11', certificateReplaced: false } },
    ]);
  });
});
