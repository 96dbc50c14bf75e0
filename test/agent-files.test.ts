import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { files } from '../db/schema.ts';
import {
  type AgentProcess,
  deliveryState,
  dispatch,
  enrolAgent,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.each(drivers)('file transfers on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  const agents: AgentProcess[] = [];
  const work = tempDir('ar-files-');
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.kill();
    await tb.stop();
    await tdb.destroy();
  });

  const done = (id: string) =>
    waitFor(async () => {
      const r = await deliveryState(tdb, id);
      return ['succeeded', 'failed'].includes(r.state) ? r : undefined;
    }, 'the delivery to finish');

  async function libraryFile(name: string, content: Buffer) {
    const stored = await tb.fileStore.put(Readable.from([content]));
    const [row] = await tdb.db
      .insert(files)
      .values({ kind: 'library', name, size: stored.size, sha256: stored.sha256, storageKey: stored.key })
      .returning();
    return { ...stored, ref: { id: row!.id, name, size: stored.size, sha256: stored.sha256 } };
  }

  it('fetches a file in chunks into the store with the same SHA-256 on both ends', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'files-01');
    agents.push(agent);
    const content = randomBytes(1024 * 1024 + 123);
    const path = join(work.dir, 'evil.bin');
    writeFileSync(path, content);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'fetch', params: { path } },
    ]);
    const row = await done(d!.id);
    expect(row.state).toBe('succeeded');
    const result = row.result as { fileId: string; sha256: string; size: number };
    expect(result).toMatchObject({ sha256: sha(content), size: content.length });
    const [file] = await tdb.db.select().from(files).where(eq(files.id, result.fileId));
    expect(file).toMatchObject({
      kind: 'fetched',
      name: 'evil.bin',
      sourcePath: path,
      sha256: sha(content),
      deliveryId: d!.id,
      endpointId,
    });
    const stored = Buffer.concat(await ((await tb.fileStore.open(file!.storageKey)) as Readable).toArray());
    expect(sha(stored)).toBe(sha(content));
    expect(await tb.audit.list({ actionPrefix: 'file.uploaded' })).toHaveLength(1);
  });

  it('puts a library file on the endpoint, verified and written atomically', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'files-02');
    agents.push(agent);
    const content = randomBytes(300_000);
    const lib = await libraryFile('remediate.bin', content);
    const dest = join(work.dir, 'remediate-copy.bin');
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'put', params: { file: lib.ref, destPath: dest } },
    ]);
    const row = await done(d!.id);
    expect(row.state).toBe('succeeded');
    expect(row.result).toMatchObject({ sha256: sha(content), size: content.length, path: dest });
    expect(sha(readFileSync(dest))).toBe(sha(content));
    expect(await tb.audit.list({ actionPrefix: 'file.downloaded' })).toHaveLength(1);
  });

  it('refuses to keep a put file whose bytes no longer match the library SHA-256', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'files-03');
    agents.push(agent);
    const stored = await libraryFile('tampered.bin', randomBytes(200_000));
    writeFileSync(join(tb.dataDir, 'files', stored.key), randomBytes(200_000));
    const dest = join(work.dir, 'tampered-copy.bin');
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'put', params: { file: stored.ref, destPath: dest } },
    ]);
    const row = await done(d!.id);
    expect(row.state).toBe('failed');
    expect(row.error).toMatch(/SHA-256/);
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(work.dir).filter((n) => n.includes('ar-partial'))).toEqual([]);
  });

  it('does not follow a symlink out of the allowed root', async () => {
    const root = tempDir('ar-root-');
    writeFileSync(join(work.dir, 'outside.txt'), 'secret');
    symlinkSync(join(work.dir, 'outside.txt'), join(root.dir, 'link.txt'));
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'files-04', ['--allowed-root', root.dir]);
    agents.push(agent);
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'fetch', params: { path: join(root.dir, 'link.txt') } },
    ]);
    const row = await done(d!.id);
    expect(row.state).toBe('failed');
    expect(row.error).toMatch(/outside the allowed root/);
    expect(await tdb.db.select().from(files)).toEqual([]);
  });

  it('reports a fetch cut by a disconnect as failed and keeps no partial file', async () => {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, 'files-05', [
      '--upload-rate',
      '262144',
    ]);
    agents.push(agent);
    const path = join(work.dir, 'big.bin');
    writeFileSync(path, randomBytes(8 * 1024 * 1024));
    const [d] = await dispatch(tdb, tb.broker.dispatcher, tb.clock, [
      { endpointId, action: 'fetch', params: { path } },
    ]);
    const store = join(tb.dataDir, 'files');
    await waitFor(
      () => existsSync(store) && readdirSync(store).some((n) => n.startsWith('.partial-')),
      'the upload to start',
    );
    await agent.kill();
    await waitFor(() => readdirSync(store).length === 0, 'the partial file to be removed');
    await waitFor(
      async () =>
        (await tb.audit.list({ actionPrefix: 'file.uploaded' })).some((r) => r.outcome === 'failed'),
      'the failed upload audit',
    );
    const again = spawnAgent({ stateDir });
    agents.push(again);
    const row = await done(d!.id);
    expect(row.state).toBe('failed');
    expect(row.error).toMatch(/interrupted/);
    expect(await tdb.db.select().from(files)).toEqual([]);
  });
});
