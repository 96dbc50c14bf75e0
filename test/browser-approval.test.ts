// The whole approval path through a real browser: a request typed in the console chat, the requester's and
// then the approver's step-up done on the page in Chromium, and the approval showing up in the chat thread.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHttpApp } from '../app/http-app.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import { actionRequests, approvals } from '../db/schema.ts';
import { registerStepUpPages } from '../web-stepup/stepup-plugin.ts';
import {
  artifactPath,
  hasChromium,
  launchChromium,
  NO_CHROMIUM_MESSAGE,
  phoneContext,
  submitWith,
} from './helpers/browser.ts';
import { openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';

if (!hasChromium) console.warn(NO_CHROMIUM_MESSAGE);

describe.skipIf(!hasChromium)('approval through the step-up page in Chromium', () => {
  let tdb: TestDatabase;
  let t: TestPlatform;
  let app: FastifyInstance;
  let browser: Browser;
  let context: BrowserContext;
  let base: string;
  let dir: string;
  let analyst: Person;
  let commander: Person;

  beforeAll(async () => {
    tdb = await openTestDatabase('pglite');
    t = await buildTestPlatform(tdb);
    analyst = await t.person('analyst', ['active_response']);
    commander = await t.person('commander', ['active_response', 'approver']);
    await t.endpoint('web-01', 'linux');
    dir = await mkdtemp(join(tmpdir(), 'ar-web-approval-'));
    app = buildHttpApp({ logger: false });
    await registerStepUpPages(app, {
      bot: t.platform.bot,
      stepup: t.platform.stepup,
      users: t.platform.users,
      audit: t.platform.audit,
      fileStore: createLocalFileStore(dir),
      library: t.platform.library,
      db: t.platform.db,
      clock: t.clock,
      config: {
        publicUrl: 'http://ar.test',
        secureCookies: false,
        secretKey: t.platform.secretKey,
        maxLibraryFileBytes: 1024 * 1024,
      },
    });
    base = await app.listen({ host: '127.0.0.1', port: 0 });
    browser = await launchChromium();
    context = await phoneContext(browser);
  });
  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await app?.close();
    await tdb?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Opens a link the bot sent privately on this server, and confirms with the person's factors. */
  async function confirmInBrowser(link: string, person: Person): Promise<Page> {
    const token = link.split('/').pop()!;
    const page = await context.newPage();
    await page.goto(`${base}/stepup/${token}`);
    await page.getByLabel('Password').fill(person.password);
    await page.getByLabel('Authenticator code').fill(await t.code(person));
    await submitWith(page, page.getByRole('button', { name: 'Confirm' }));
    return page;
  }

  it('carries an approval made on the page to the request and the chat thread', async () => {
    await t.say('analyst', 'isolate web-01 --reason "C2 beacon" --case IR-42');
    const confirm = await confirmInBrowser(t.lastLinkFor('analyst'), analyst);
    expect(await confirm.locator('h1').textContent()).toBe('Done');
    await confirm.close();
    const card = t.chat.transcript.find((m) => m.kind === 'card');
    expect(card?.view?.state).toBe('pending_approval');

    t.clock.advance(30_000);
    await t.platform.bot.handleDecision(t.ctx('commander'), {
      requestId: card!.view!.ref,
      decision: 'approve',
    });
    const link = t.lastLinkFor('commander');
    const page = await context.newPage();
    await page.goto(`${base}/stepup/${link.split('/').pop()}`);
    const shown = await page.locator('main').textContent();
    expect(shown).toContain('Approve this request');
    expect(shown).toContain('web-01');
    expect(shown).toContain('C2 beacon');
    expect(shown).toContain('IR-42');
    expect(shown).toContain(card!.view!.digest);
    await page.screenshot({ path: artifactPath('stepup-approve-page.png'), fullPage: true });
    await page.getByLabel('Password').fill(commander.password);
    await page.getByLabel('Authenticator code').fill(await t.code(commander));
    await submitWith(page, page.getByRole('button', { name: 'Approve' }));
    expect(await page.locator('h1').textContent()).toBe('Done');
    expect(await page.locator('main').textContent()).toContain(`Approved ${card!.view!.ref}`);
    await page.close();

    // The approval is recorded against the digest and the chat thread hears about it.
    const [request] = await tdb.db
      .select()
      .from(actionRequests)
      .where(eq(actionRequests.ref, card!.view!.ref));
    const rows = await tdb.db.select().from(approvals).where(eq(approvals.requestId, request!.id));
    expect(rows).toEqual([
      expect.objectContaining({ approverId: commander.id, decision: 'approve', digest: request!.digest }),
    ]);
    const thread = await t.chat.waitFor(
      (m) => m.kind === 'thread' && m.threadId === card!.messageId && /approved/i.test(m.text),
    );
    expect(thread.text).toMatch(/commander/);
    expect(['approved', 'dispatched']).toContain(card!.view!.state);
  });
});
