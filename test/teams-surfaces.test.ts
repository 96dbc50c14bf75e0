// Teams as the composition root mounts it: with TEAMS_* set, attachSurfaces registers the adapter on the
// one Fastify app (POST /api/messages, before it listens), routes the core's 'teams' messages to it, wires
// the audit conversation into the checkpointer, and audits the refusals the adapter makes itself. Microsoft
// is the local stand-in.
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
import { auditLog } from '../db/schema.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import {
  type FakeTeams,
  messageActivity,
  signedActivity,
  startFakeTeams,
  textOf,
} from './helpers/fake-teams.ts';
import { TEST_SECRET_KEY } from './helpers/keys.ts';
import { buildTestPlatform, type TestPlatform } from './helpers/platform.ts';
import {
  CHANNEL,
  CLIENT_ID,
  CLIENT_SECRET,
  HOME_TENANT,
  join as joinConversation,
  people,
  silent,
} from './helpers/teams-setup.ts';

const AUDIT = '19:audit0a1b2c3d@thread.tacv2';

describe.each(drivers)('Teams mounted by the surfaces (%s)', { timeout: 60_000 }, (driver) => {
  let tdb: TestDatabase;
  let tp: TestPlatform;
  let teams: FakeTeams;
  let http: FastifyInstance;
  let dataDir: string;
  let surfaces: { close(): Promise<void> };

  beforeEach(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'ar-teams-surfaces-'));
    teams = await startFakeTeams({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, tenantId: HOME_TENANT });
    tdb = await openTestDatabase(driver);
    tp = await buildTestPlatform(tdb, {
      DATA_DIR: dataDir,
      TEAMS_CLIENT_ID: CLIENT_ID,
      TEAMS_CLIENT_SECRET: CLIENT_SECRET,
      TEAMS_TENANT_ID: HOME_TENANT,
      TEAMS_LOGIN_ENDPOINT: teams.identityUrl,
      TEAMS_OPENID_METADATA_URL: teams.cloud.openIdMetadataUrl,
      TEAMS_SERVICE_URL: teams.serviceUrl,
      TEAMS_AUDIT_CONVERSATION: AUDIT,
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
    await http.ready();
  });
  afterEach(async () => {
    await surfaces.close();
    await http.close();
    await teams.close();
    await tdb.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('serves /api/messages and answers through the core', async () => {
    await tp.platform.users.mapTenant({ platform: 'teams', tenantId: HOME_TENANT, orgName: 'home' });
    const ana = await tp.person('ana', ['active_response']);
    await tp.platform.users.linkChatIdentity({
      userId: ana.id,
      platform: 'teams',
      tenantId: HOME_TENANT,
      chatUserId: people.ana.aadObjectId,
    });
    joinConversation(teams, CHANNEL, people.ana);
    const activity = messageActivity({
      clientId: CLIENT_ID,
      serviceUrl: teams.serviceUrl,
      from: people.ana,
      conversation: CHANNEL,
      text: 'help',
    });
    expect((await http.inject(signedActivity(teams.key, CLIENT_ID, activity))).statusCode).toBe(200);
    const reply = await teams.waitFor((c) => c.kind === 'create' && /isolate/.test(textOf(c)));
    expect(reply.conversationId).toBe(`${CHANNEL.id};messageid=${activity.id}`);
  });

  it('audits a refusal the adapter makes before the core: an account without an Entra identity', async () => {
    const activity = messageActivity({
      clientId: CLIENT_ID,
      serviceUrl: teams.serviceUrl,
      from: { id: '29:1visitor', aadObjectId: '', name: 'Visitor' },
      conversation: CHANNEL,
      text: 'isolate web-01 --reason test',
    });
    (activity.from as { aadObjectId?: string }).aadObjectId = undefined;
    expect((await http.inject(signedActivity(teams.key, CLIENT_ID, activity))).statusCode).toBe(200);
    const rows = await waitForRows(async () =>
      (await tdb.db.select().from(auditLog)).filter((r) => r.action === 'identity.refused'),
    );
    expect(rows[0]!.details).toMatchObject({ reason: 'teams.no_entra_account', platform: 'teams' });
  });

  it('posts each signed checkpoint to the audit conversation after writing it to DATA_DIR', async () => {
    for (let i = 0; i < 3; i++)
      await tp.platform.audit.append({
        actorType: 'system',
        action: 'test.event',
        outcome: 'ok',
        details: { i },
      });
    const head = await tp.platform.audit.head();
    await tp.platform.checkpointer.checkpointNow();
    await tp.platform.checkpointer.idle();

    const line = readFileSync(join(dataDir, 'audit-checkpoints.jsonl'), 'utf8').trim();
    const post = await teams.waitFor((c) => c.kind === 'create' && c.conversationId === AUDIT);
    expect(textOf(post)).toContain(`Audit checkpoint: record ${head!.seq}`);
    expect(textOf(post)).toContain(line);
    const posted = JSON.parse(textOf(post).split('\n').at(-1)!);
    expect(checkpointSignatureValid(posted, checkpointKeysFromSecret(TEST_SECRET_KEY).publicKey)).toBe(true);
  });
});

async function waitForRows<T>(read: () => Promise<T[]>): Promise<T[]> {
  for (let i = 0; i < 100; i++) {
    const rows = await read();
    if (rows.length) return rows;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no rows appeared');
}
