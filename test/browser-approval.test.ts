// The whole approval path through a real browser: a request typed in the console chat, the requester's and
// then the approver's step-up done on the page in Chromium, and the approval showing up in the chat thread.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
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
  desktopContext,
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

  /** A request made as the analyst (with their step-up) and the commander's approve link for it. */
  async function pendingRequest(text: string) {
    t.clock.advance(11 * 60_000); // past both people's step-up windows
    const before = t.chat.transcript.length;
    await t.say('analyst', text);
    const asked = t.chat.transcript.slice(before).find((m) => m.kind === 'private' && m.to === 'analyst');
    if (asked && /\/stepup\//.test(asked.text)) await t.stepUp(t.lastLinkFor('analyst'), analyst);
    const card = t.chat.transcript.slice(before).find((m) => m.kind === 'card');
    expect(card?.view?.state, text).toBe('pending_approval');
    await t.platform.bot.handleDecision(t.ctx('commander'), {
      requestId: card!.view!.ref,
      decision: 'approve',
    });
    return { view: card!.view!, link: t.lastLinkFor('commander') };
  }

  /** Runs `look` on a phone and at a desk (a fresh desktop context, closed afterwards). */
  async function atBothWidths(look: (width: 'phone' | 'desktop', ctx: BrowserContext) => Promise<void>) {
    const desktop = await desktopContext(browser);
    try {
      await look('phone', context);
      await look('desktop', desktop);
    } finally {
      await desktop.close();
    }
  }

  it('shows every parameter of kill, put and run on the approve page, at phone and desktop width', async () => {
    const lib = await t.platform.library.add({
      name: 'remediate.sh',
      source: Readable.from([Buffer.from('#!/bin/sh\necho fixed\n')]),
      actor: { type: 'system', id: 'test' },
    });
    await t.platform.scripts.upsert({
      name: 'sinkhole-domain',
      body: 'import active_response as ar\nprint(ar.params()["domain"])\n',
      paramsSchema: { domain: { type: 'string', required: true } },
    });
    const cases = [
      {
        name: 'kill',
        text: 'kill web-01 coinminer-xmrig-helper --reason "miner seen" --case IR-7 --note "after hours"',
        expected: ['Process name', 'coinminer-xmrig-helper', 'miner seen', 'IR-7', 'after hours'],
      },
      {
        name: 'put',
        text: 'put web-01 remediate.sh /opt/ar/remediate.sh --reason "patch" --ttl 2d',
        expected: ['remediate.sh', `${lib.size} bytes`, lib.sha256, '/opt/ar/remediate.sh', 'up to 2 days'],
      },
      {
        name: 'run',
        text: 'run sinkhole-domain web-01 domain=evil.example --reason "block c2"',
        expected: [
          'sinkhole-domain v1',
          'Parameter domain',
          '"evil.example"',
          'Time limit',
          'Script SHA-256',
        ],
      },
    ];
    for (const c of cases) {
      const { view, link } = await pendingRequest(c.text);
      await atBothWidths(async (width, ctx) => {
        const page = await ctx.newPage();
        await page.goto(`${base}/stepup/${link.split('/').pop()}`);
        const shown = (await page.locator('main').textContent()) ?? '';
        for (const e of c.expected) expect(shown, `${c.name} on ${width}: ${e}`).toContain(e);
        expect(shown).toContain(view.digest);
        // Nothing wider than the screen: long hashes and paths wrap.
        const overflow = await page.evaluate('document.documentElement.scrollWidth - window.innerWidth');
        expect(overflow, `${c.name} on ${width} scrolls sideways`).toBeLessThanOrEqual(0);
        await page.getByText('What the digest covers').click();
        await page.screenshot({ path: artifactPath(`approve-${c.name}-${width}.png`), fullPage: true });
        await page.close();
      });
    }
  });

  it("shows an action group's preview, waves and every endpoint on pages that fit a phone and a desk", async () => {
    await t.endpoint('web-02', 'linux');
    await t.endpoint('web-03', 'linux');
    await t.endpoint('mac-09', 'macos');
    const { link } = await pendingRequest(
      'isolate web-01 web-02 web-03 mac-09 --canary 1 --rate 10/min --reason "c2 beacon" --case IR-12',
    );
    await atBothWidths(async (width, ctx) => {
      const page = await ctx.newPage();
      await page.goto(`${base}/stepup/${link.split('/').pop()}`);
      const shown = (await page.locator('main').textContent()) ?? '';
      expect(shown).toContain('canary of 1 first, the rest only once it succeeded, 10 a minute');
      expect(shown).toContain('OS not supported (1)');
      const overflow = () => page.evaluate('document.documentElement.scrollWidth - window.innerWidth');
      expect(await overflow(), `approve page on ${width} scrolls sideways`).toBeLessThanOrEqual(0);
      await page.screenshot({ path: artifactPath(`approve-group-${width}.png`), fullPage: true });
      await page.locator('a[href$="/endpoints"]').first().click();
      await page.waitForURL(/\/endpoints$/);
      const list = (await page.locator('main').textContent()) ?? '';
      for (const host of ['web-01', 'web-02', 'web-03', 'mac-09']) expect(list).toContain(host);
      expect(await overflow(), `endpoint list on ${width} scrolls sideways`).toBeLessThanOrEqual(0);
      await page.screenshot({ path: artifactPath(`approve-group-endpoints-${width}.png`), fullPage: true });
      await page.close();
    });
  });

  it('lets the approver deny from the page, with a reason that reaches the thread', async () => {
    const { view, link } = await pendingRequest('isolate web-01 --reason "suspected" --case IR-8');
    const page = await context.newPage();
    await page.goto(`${base}/stepup/${link.split('/').pop()}`);
    await page.getByLabel('Password').fill(commander.password);
    await page.getByLabel('Authenticator code').fill(await t.code(commander));
    await page.getByLabel('Reason').fill('wrong host, it is the jump box');
    await submitWith(page, page.getByRole('button', { name: 'Deny' }));
    expect(await page.locator('main').textContent()).toContain(`Denied ${view.ref}`);
    await page.close();
    expect((await t.platform.requests.getView(view.id)).state).toBe('denied');
    await t.chat.waitFor(
      (m) => m.kind === 'thread' && /Denied by commander: wrong host, it is the jump box/.test(m.text),
    );
  });
});
