// The real service graph (app/platform.ts) on a test database with a console chat and a test clock, plus
// people created through the real user and step-up services (argon2 passwords, enrolled TOTP).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'otplib';
import type { Registry } from 'prom-client';
import { type ConsoleChat, createConsoleChat } from '../../adapters/console/console-chat.ts';
import { consoleContext } from '../../adapters/console/console-session.ts';
import { loadConfig } from '../../app/config.ts';
import { createPlatform, type Platform } from '../../app/platform.ts';
import type { FileStore, Timers } from '../../bot/ports.ts';
import { createSegmentService } from '../../bot/segments/segment-service.ts';
import { createLocalFileStore } from '../../broker/files/local-file-store.ts';
import { endpoints, type Os, type Role } from '../../db/schema.ts';
import { createTestClock } from './clock.ts';
import type { TestDatabase } from './db.ts';
import { TEST_SECRET_KEY } from './keys.ts';

export interface Person {
  name: string;
  id: string;
  password: string;
  totpSecret: string;
}

const silent = { info() {}, warn() {}, error() {}, debug() {} };

export async function buildTestPlatform(
  tdb: TestDatabase,
  env: Record<string, string> = {},
  opts: {
    metrics?: Registry;
    /**
     * Where the test clock starts (default a fixed date). Tests with real agents start it at wall time:
     * the broker checks delivery expiry against its own clock.
     */
    startAt?: Date;
    /** The file store to share with a test broker (so `put` finds library files). */
    fileStore?: FileStore;
    /** Timers of the group progress edits and paced waves (default: the system's). */
    timers?: Timers;
  } = {},
) {
  const clock = createTestClock(opts.startAt);
  const config = loadConfig({ PUBLIC_URL: 'http://ar.test', ...env });
  const platform: Platform = createPlatform({
    config,
    database: tdb,
    logger: silent,
    clock,
    secretKey: TEST_SECRET_KEY,
    fileStore: opts.fileStore ?? createLocalFileStore(mkdtempSync(join(tmpdir(), 'ar-files-'))),
    metrics: opts.metrics,
    timers: opts.timers,
  });
  const consoleChat: ConsoleChat = createConsoleChat();
  platform.router.register('console', consoleChat.chat);
  await platform.users.ensureHomeOrganization();
  await platform.users.mapTenant({ platform: 'console', tenantId: 'local', orgName: 'home' });
  let seq = 0;

  const code = (p: Person) =>
    generate({ secret: p.totpSecret, epoch: Math.floor(clock.now().getTime() / 1000) });

  return {
    platform,
    clock,
    chat: consoleChat,
    tdb,

    async person(name: string, roles: Role[], opts: { org?: string } = {}): Promise<Person> {
      const password = `correct horse ${name} battery`;
      const u = await platform.users.createUser({
        username: name,
        displayName: name,
        password,
        orgName: opts.org,
      });
      for (const role of roles) await platform.users.grantRole({ userId: u.id, role });
      const { secret } = await platform.stepup.startTotpEnrolment(u.id);
      clock.advance(-30_000);
      await platform.stepup.confirmTotpEnrolment(
        u.id,
        await generate({ secret, epoch: Math.floor(clock.now().getTime() / 1000) }),
      );
      clock.advance(30_000);
      const tenant = opts.org ? `tenant-${opts.org}` : 'local';
      await platform.users.linkChatIdentity({
        userId: u.id,
        platform: 'console',
        tenantId: tenant,
        chatUserId: name,
      });
      return { name, id: u.id, password, totpSecret: secret };
    },

    async endpoint(hostname: string, os: Os = 'linux', segment = 'servers', agentVersion = '2.0.0') {
      const segments = createSegmentService({ db: tdb.db, audit: platform.audit, clock });
      const seg = await segments.get(segment).catch(() => segments.create({ name: segment, enabled: true }));
      const [row] = await tdb.db
        .insert(endpoints)
        .values({ hostname, os, agentVersion, segmentId: seg.id })
        .returning();
      return row!;
    },

    /** A console context for `name` typing in #incident, with a fresh event id. */
    ctx(name: string, tenantId = 'local') {
      const c = consoleContext(name, ++seq);
      c.identity.tenantId = tenantId;
      return c;
    },

    say(name: string, text: string, tenantId = 'local') {
      return platform.bot.handleCommand(this.ctx(name, tenantId), text);
    },

    code,

    /** Completes a step-up link the way the page does: password + the current TOTP code. */
    async stepUp(url: string, p: Person) {
      const token = url.split('/').pop()!;
      return platform.bot.completeStepUp({
        token,
        password: p.password,
        totpCode: await code(p),
        sourceIp: '127.0.0.1',
        userAgent: 'vitest',
      });
    },

    /** The newest step-up link privately sent to `name`. */
    lastLinkFor(name: string): string {
      const msg = [...consoleChat.transcript]
        .reverse()
        .find((m) => m.kind === 'private' && m.to === name && /\/stepup\//.test(m.text));
      const url = msg?.text.match(/https?:\/\/\S+\/stepup\/[A-Za-z0-9_-]+/)?.[0];
      if (!url) throw new Error(`no step-up link was sent to ${name}`);
      return url;
    },
  };
}

export type TestPlatform = Awaited<ReturnType<typeof buildTestPlatform>>;
