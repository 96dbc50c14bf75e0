import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { eq } from 'drizzle-orm';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { files } from '../db/schema.ts';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  enrolAgent,
  scriptDelivery,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const script = (name: string, body: string) => ({ name, body });

describe.each(drivers)('python scripts on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  let agent: AgentProcess;
  let endpointId: string;
  const work = tempDir('ar-py-');
  beforeAll(() => {
    writeFileSync(join(work.dir, 'evidence.log'), 'suspicious things\n'.repeat(1000));
  });
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
    ({ agent, endpointId } = await enrolAgent(tb, tdb, 'py-01', [
      '--run-timeout',
      '3',
      '--max-output-bytes',
      '1000',
    ]));
  });
  afterEach(async () => {
    await agent.kill();
    await tb.stop();
    await tdb.destroy();
  });

  const run = async (
    s: ReturnType<typeof script>,
    args: Record<string, string> = {},
    tamperedBody?: string,
  ) => {
    const d0 = scriptDelivery(s.name, s.body, args);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, ...d0, scriptBody: tamperedBody ?? d0.scriptBody },
    ]);
    return waitFor(async () => {
      const r = await deliveryState(tdb, d!.id);
      return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
    }, 'the script to finish');
  };

  it('runs a script that uploads a file and downloads a library file through the helper module', async () => {
    const lib = randomBytes(50_000);
    const stored = await tb.fileStore.put(Readable.from([lib]));
    await tdb.db.insert(files).values({
      kind: 'library',
      name: 'yara-rules.bin',
      size: stored.size,
      sha256: stored.sha256,
      storageKey: stored.key,
    });
    const dest = join(work.dir, 'rules.bin');
    const body = [
      'import json',
      'import active_response as ar',
      'p = ar.params()',
      'up = ar.upload_file(p["path"])',
      'down = ar.download_file("yara-rules.bin", p["dest"])',
      'ar.progress("done")',
      'print(json.dumps({"uploaded": up, "downloaded": down["sha256"]}))',
    ].join('\n');
    const row = await run(script('collect', body), { path: join(work.dir, 'evidence.log'), dest });
    expect(row.state).toBe('succeeded');
    const out = JSON.parse((row.result as { stdout: string }).stdout);
    const evidence = readFileSync(join(work.dir, 'evidence.log'));
    expect(out.uploaded).toMatchObject({ sha256: sha(evidence), size: evidence.length });
    expect(out.downloaded).toBe(sha(lib));
    expect(sha(readFileSync(dest))).toBe(sha(lib));
    const [file] = await tdb.db.select().from(files).where(eq(files.id, out.uploaded.fileId));
    expect(file).toMatchObject({ kind: 'fetched', name: 'evidence.log', deliveryId: row.id });
    const [executed] = await tb.audit.list({ actionPrefix: 'script.executed' });
    expect(executed!.details).toMatchObject({
      payload: { params: { script: { name: 'collect', sha256: sha(body) } }, scriptBody: body },
    });
  });

  it('caps the output it keeps and says it did', async () => {
    const row = await run(script('noisy', 'print("x" * 100000)\n'));
    expect(row.state).toBe('succeeded');
    expect(row.result).toMatchObject({ stdoutTruncated: true, exitCode: 0 });
    expect((row.result as { stdout: string }).stdout).toHaveLength(1000);
  });

  it('kills a script that runs past the timeout and reports it failed', async () => {
    const row = await run(script('slow', 'import time\ntime.sleep(60)\n'));
    expect(row.state).toBe('failed');
    expect(row.result).toMatchObject({ timedOut: true });
    expect(row.error).toMatch(/longer than 3 s/);
  });

  it('refuses to run script bytes that do not match the approved SHA-256', async () => {
    const s = script('changed', 'print(1)\n');
    const row = await run(s, {}, 'print(2)\n');
    expect(row.state).toBe('failed');
    expect(row.error).toMatch(/do not match the approved SHA-256/);
  });
});
