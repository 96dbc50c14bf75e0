// The Slack audit channel as an anchor: with SLACK_AUDIT_CHANNEL set, the surfaces wire the Slack adapter's
// sink into the platform's checkpointer, and each signed checkpoint is posted there with its exact JSON line
// after it was written to DATA_DIR. Slack is the local stand-in, which records every Web API call.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildHttpApp } from '../app/http-app.ts';
import { attachSurfaces } from '../app/surfaces.ts';
import { checkpointSignatureValid } from '../bot/audit/audit-checkpoint.ts';
import { checkpointKeysFromSecret } from '../bot/audit/audit-keys.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { type FakeSlack, startFakeSlack } from './helpers/fake-slack.ts';
import { TEST_SECRET_KEY } from './helpers/keys.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';

const TOKEN = 'xoxb-test-token';
const silent = { info() {}, warn() {}, error() {}, debug() {} };

describe.each(drivers)('audit checkpoints in the Slack audit channel (%s)', (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let slack: FakeSlack;
  let http: FastifyInstance;
  let dataDir: string;
  let surfaces: { close(): Promise<void> };

  beforeEach(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'ar-audit-slack-'));
    slack = await startFakeSlack({ botToken: TOKEN });
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb, {
      DATA_DIR: dataDir,
      SLACK_SIGNING_SECRET: 'test-signing-secret',
      SLACK_BOT_TOKEN: TOKEN,
      SLACK_API_URL: slack.apiUrl,
      SLACK_AUDIT_CHANNEL: 'C0AUDIT',
    });
    http = buildHttpApp();
    surfaces = await attachSurfaces({
      http,
      platform: tp.platform,
      config: tp.platform.config,
      logger: silent,
      fileStore: createLocalFileStore(join(dataDir, 'files')),
      database: tdb,
    });
  });
  afterEach(async () => {
    await surfaces.close();
    await http.close();
    await slack.close();
    await tdb.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('posts each signed checkpoint to the audit channel after writing it to DATA_DIR', async () => {
    for (let i = 0; i < 3; i++)
      await tp.platform.audit.append({
        actorType: 'system',
        action: 'test.event',
        outcome: 'ok',
        details: { i },
      });
    const head = await tp.platform.audit.head();
    const cp = await tp.platform.checkpointer.checkpointNow();
    expect(cp).toMatchObject({ seq: head!.seq, hash: head!.hash });
    await tp.platform.checkpointer.idle();

    const line = readFileSync(join(dataDir, 'audit-checkpoints.jsonl'), 'utf8').trim();
    const [post] = slack.callsOf('chat.postMessage');
    expect(post!.args.channel).toBe('C0AUDIT');
    expect(post!.args.text).toContain(`Audit checkpoint: record ${head!.seq}`);
    expect(post!.args.text).toContain(line);
    // What the channel holds is checkable on its own, with the public key alone.
    const posted = JSON.parse(String(post!.args.text).match(/```(.*)```/)![1]!);
    expect(checkpointSignatureValid(posted, checkpointKeysFromSecret(TEST_SECRET_KEY).publicKey)).toBe(true);
  });
});
