// Builds the step-up site the way production does (the one Fastify app, the real user and step-up services
// on a real database) for route and browser tests. `bot` defaults to a thin stand-in that only does the
// step-up itself; tests that need approvals to reach chat pass the real bot service.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { generate } from 'otplib';
import { buildHttpApp, type HttpAppOptions } from '../../app/http-app.ts';
import { auditChainKey } from '../../bot/audit/audit-keys.ts';
import { createAuditService } from '../../bot/audit/audit-service.ts';
import type { StepUpOutcome, StepUpPageView } from '../../bot/bot-types.ts';
import { createFileLibrary } from '../../bot/library/file-library.ts';
import type { FileStore, RequestView } from '../../bot/ports.ts';
import { createStepUpService, type StepUpService } from '../../bot/stepup/stepup-service.ts';
import { decodeTotpSecret } from '../../bot/stepup/totp.ts';
import { createUserService } from '../../bot/users/user-service.ts';
import type { ResolvedUser } from '../../bot/users/user-types.ts';
import { createLocalFileStore } from '../../broker/files/local-file-store.ts';
import {
  actionRequests,
  approvals,
  files,
  organizations,
  type Role,
  type StepUpPurpose,
} from '../../db/schema.ts';
import { registerStepUpPages } from '../../web-stepup/stepup-plugin.ts';
import type { StepUpPagesConfig, StepUpPagesDeps } from '../../web-stepup/web-types.ts';
import { WINDOW_COOKIE } from '../../web-stepup/window-cookie.ts';
import { createTestClock } from './clock.ts';
import { type Driver, openTestDatabase, type TestDatabase } from './db.ts';

export const PASSWORD = 'correct horse battery staple';

/** What a page shows for a request bound to an approval link; the real bot reads it from the requests table. */
export function sampleRequestView(over: Partial<RequestView> = {}): RequestView {
  return {
    id: '00000000-0000-4000-8000-000000000001',
    ref: 'R-7K3QXM',
    action: 'run',
    params: {
      script: { name: 'collect-triage', version: 2, sha256: 'ab'.repeat(32) },
      args: { since: '24h' },
      timeoutSeconds: 600,
    },
    scriptName: 'collect-triage',
    scriptSha256: 'ab'.repeat(32),
    targets: ['web-01', 'web-02', 'web-03', 'db-01', 'db-02', 'cache-01', 'cache-02'].map((h, i) => ({
      endpointId: `00000000-0000-4000-8000-00000000010${i}`,
      hostname: h,
    })),
    exclusions: [{ hostname: 'mac-01', reason: 'os not supported' }],
    reason: 'C2 beacon <script>alert(1)</script>',
    caseId: 'IR-42',
    requester: { id: '00000000-0000-4000-8000-000000000002', displayName: 'Ann Analyst', external: false },
    state: 'pending_approval',
    digest: 'd1e2f3a4b5c6d7e8f9a0'.padEnd(64, '0'),
    approvalsRequired: 1,
    inHouseApprovalRequired: false,
    approvals: [],
    createdAt: new Date('2026-11-28T08:59:00Z'),
    ...over,
  };
}

type PageBot = StepUpPagesDeps['bot'];

/** The BotCore contract as far as the pages use it, carried out by the real step-up service alone. */
export function stepUpOnlyBot(stepup: StepUpService, request?: RequestView): PageBot {
  return {
    async describeStepUp(token: string): Promise<StepUpPageView> {
      const challenge = await stepup.inspectChallenge(token);
      const view = challenge.purpose === 'approve' ? request : undefined;
      return {
        challenge,
        request: view,
        summary: `Confirm ${challenge.purpose} as ${challenge.displayName}`,
      };
    },
    async completeStepUp(attempt): Promise<StepUpOutcome> {
      const { window, challenge } = await stepup.complete(attempt);
      return {
        challenge,
        window,
        windowExpiresAt: window.expiresAt,
        message: `Confirmed ${challenge.purpose}.`,
      };
    },
  };
}

export interface WebFixture {
  tdb: TestDatabase;
  app: FastifyInstance;
  clock: ReturnType<typeof createTestClock>;
  users: ReturnType<typeof createUserService>;
  stepup: StepUpService;
  audit: ReturnType<typeof createAuditService>;
  fileStore: FileStore;
  secretKey: Buffer;
  /** A user with roles and an enrolled authenticator; in organisation `org` (created first) when given. */
  makeUser(username: string, opts?: { roles?: Role[]; enrol?: boolean; org?: string }): Promise<TestUser>;
  link(user: { id: string }, purpose: StepUpPurpose, subject?: string, requestId?: string): Promise<string>;
  /** A fetched-evidence row with its bytes in the file store (of request `requestId`); returns the file id. */
  storeEvidence(
    name: string,
    bytes: Buffer,
    kind?: 'fetched' | 'library',
    requestId?: string,
  ): Promise<string>;
  /**
   * A completed fetch request asked for by `requester` and approved by `approvers`, for evidence and audit
   * records to belong to; returns its id. `ref` defaults to a fresh R-XXXXXX.
   */
  fetchRequest(requester: TestUser, approvers?: TestUser[], ref?: string): Promise<string>;
  close(): Promise<void>;
}

export interface TestUser extends ResolvedUser {
  secret?: Uint8Array;
}

export interface WebFixtureOptions {
  config?: Partial<StepUpPagesConfig>;
  bot?: (parts: Pick<WebFixture, 'tdb' | 'clock' | 'users' | 'stepup' | 'audit' | 'secretKey'>) => PageBot;
  request?: RequestView;
  publicUrl?: string;
  lockoutThreshold?: number;
  /** A pino logger for the app (default: none), for tests that read what gets logged. */
  logger?: import('fastify').FastifyBaseLogger;
  /** Server options as production passes them from config (trustProxy, timeouts). */
  http?: Omit<HttpAppOptions, 'logger'>;
}

/** The TOTP code for the test clock's time, `steps` periods away. */
export function codeAt(secret: Uint8Array, when: Date, steps = 0): Promise<string> {
  return generate({ secret, epoch: Math.floor(when.getTime() / 1000) + steps * 30 });
}

export async function createWebFixture(driver: Driver, opts: WebFixtureOptions = {}): Promise<WebFixture> {
  const tdb = await openTestDatabase(driver);
  const clock = createTestClock();
  const secretKey = randomBytes(32);
  const publicUrl = opts.publicUrl ?? 'http://localhost:8080';
  const audit = createAuditService({ db: tdb.db, clock, chainKey: auditChainKey(secretKey) });
  const users = createUserService({ db: tdb.db, audit, clock, secretKey });
  const stepup = createStepUpService({
    db: tdb.db,
    audit,
    clock,
    secretKey,
    publicUrl,
    lockoutThreshold: opts.lockoutThreshold ?? 3,
    lockoutSeconds: 900,
    maxAttemptsPerMinute: 100,
  });
  const dir = await mkdtemp(join(tmpdir(), 'ar-web-files-'));
  const fileStore = createLocalFileStore(dir);
  const parts = { tdb, clock, users, stepup, audit, secretKey };
  const app = buildHttpApp({ ...opts.http, logger: opts.logger ?? false });
  await registerStepUpPages(app, {
    bot: opts.bot ? opts.bot(parts) : stepUpOnlyBot(stepup, opts.request),
    stepup,
    users,
    audit,
    fileStore,
    library: createFileLibrary({ db: tdb.db, audit, fileStore, maxFileBytes: 1024 * 1024 }),
    db: tdb.db,
    clock,
    config: {
      publicUrl,
      secureCookies: publicUrl.startsWith('https://'),
      secretKey,
      rateLimitPerIp: 1000,
      rateLimitPerUser: 1000,
      maxLibraryFileBytes: 1024 * 1024,
      ...opts.config,
    },
  });
  await app.ready();

  return {
    ...parts,
    app,
    fileStore,
    async makeUser(username, o = {}) {
      if (o.org && !(await tdb.db.select().from(organizations).where(eq(organizations.name, o.org))).length) {
        await users.createOrganization({
          name: o.org,
          external: true,
          allowedRoles: ['active_response', 'approver'],
        });
      }
      const user = await users.createUser({
        username,
        displayName: `${username[0]!.toUpperCase()}${username.slice(1)} Tester`,
        password: PASSWORD,
        orgName: o.org,
      });
      for (const role of o.roles ?? ['active_response']) await users.grantRole({ userId: user.id, role });
      let secret: Uint8Array | undefined;
      if (o.enrol !== false) {
        const started = await stepup.startTotpEnrolment(user.id);
        secret = decodeTotpSecret(started.secret);
        await stepup.confirmTotpEnrolment(user.id, await codeAt(secret, clock.now()), {});
        // The enrolment code is used up; the next test code comes from the next time step.
        clock.advance(30_000);
      }
      return { ...(await users.getUser(user.id)), secret };
    },
    async link(user, purpose, subject = 'subject', requestId) {
      return (await stepup.createChallenge({ userId: user.id, purpose, subject, requestId })).token;
    },
    async storeEvidence(name, bytes, kind = 'fetched', requestId) {
      const put = await fileStore.put(Readable.from([bytes]));
      const [row] = await tdb.db
        .insert(files)
        .values({ kind, name, size: put.size, sha256: put.sha256, storageKey: put.key, requestId })
        .returning({ id: files.id });
      return row!.id;
    },
    async fetchRequest(requester, approvers = [], ref) {
      const digest = randomBytes(32).toString('hex');
      const [row] = await tdb.db
        .insert(actionRequests)
        .values({
          ref: ref ?? `R-${randomBytes(4).toString('hex').toUpperCase().slice(0, 6)}`,
          action: 'fetch',
          params: { path: '/tmp/sample.bin' },
          targets: [],
          digest,
          reason: 'collect the sample',
          requesterId: requester.id,
          requesterExternal: requester.external,
          state: 'completed',
          deliveryTtlSeconds: 3600,
        })
        .returning({ id: actionRequests.id });
      for (const a of approvers) {
        await tdb.db.insert(approvals).values({
          requestId: row!.id,
          approverId: a.id,
          digest,
          decision: 'approve',
          approverExternal: a.external,
        });
      }
      return row!.id;
    },
    async close() {
      await app.close();
      await tdb.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The CSRF cookie and token a page handed out, ready to post back. */
export function formState(res: { body: string; cookies: { name: string; value: string }[] }) {
  const token = /name="_csrf" value="([^"]+)"/.exec(res.body)?.[1];
  const cookies = Object.fromEntries(res.cookies.map((c) => [c.name, c.value]));
  return { token, cookies };
}

/**
 * Completes a step-up link of `purpose` for `user` through the real page (its form, CSRF token and the code for the
 * test clock's time, 30 s on so no code is reused) and returns the answer, the window cookie it set (if any) and a
 * cookie jar holding it.
 */
export async function completeStepUp(f: WebFixture, user: TestUser, purpose: StepUpPurpose, subject: string) {
  f.clock.advance(30_000);
  const token = await f.link(user, purpose, subject);
  const page = await f.app.inject({ method: 'GET', url: `/stepup/${token}` });
  const { token: csrf, cookies } = formState(page);
  const res = await f.app.inject({
    method: 'POST',
    url: `/stepup/${token}`,
    payload: new URLSearchParams({
      _csrf: csrf!,
      password: PASSWORD,
      code: await codeAt(user.secret!, f.clock.now()),
    }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    cookies,
  });
  const cookie = res.cookies.find((c) => c.name === WINDOW_COOKIE);
  const jar: Record<string, string> = cookie ? { [WINDOW_COOKIE]: cookie.value } : {};
  return { res, cookie, cookies: jar };
}
