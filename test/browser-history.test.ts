// The session history page and the front page in real Chromium, on a phone (390 px) and a desk (1280 px):
// nothing runs off the side, a row's details open without script, the page stays short, and paging works.
// Screenshots go to test/artifacts/ (git-ignored) for a person to look at.
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actionRequests, endpoints, segments, sessions } from '../db/schema.ts';
import {
  artifactPath,
  desktopContext,
  hasChromium,
  launchChromium,
  NO_CHROMIUM_MESSAGE,
  phoneContext,
  submitWith,
} from './helpers/browser.ts';
import { codeAt, createWebFixture, PASSWORD, type TestUser, type WebFixture } from './helpers/web-stepup.ts';

if (!hasChromium) console.warn(NO_CHROMIUM_MESSAGE);

const SCRIPT = `import ar\n\nfor proc in ar.processes():\n    if proc.name == "beacon.exe":\n        ar.report(proc.pid, proc.cmdline)\n`;

describe.skipIf(!hasChromium)('history and front page in Chromium', () => {
  let f: WebFixture;
  let browser: Browser;
  let phone: BrowserContext;
  let desk: BrowserContext;
  let base: string;
  let analyst: TestUser;
  const cspViolations: string[] = [];

  /** Who did what, as the platform records an isolate of web-01 and a script run, plus earlier fetches. */
  async function seedHistory() {
    const approver = await f.makeUser('ian', { roles: ['approver'] });
    const [seg] = await f.tdb.db
      .insert(segments)
      .values({ name: 'servers', activeResponseEnabled: true })
      .returning();
    const [web01, db01] = await f.tdb.db
      .insert(endpoints)
      .values([
        { hostname: 'web-01', os: 'linux', segmentId: seg!.id },
        { hostname: 'db-01.internal.example.com', os: 'linux', segmentId: seg!.id },
      ])
      .returning();
    await f.tdb.db.insert(sessions).values({
      userId: analyst.id,
      endpointId: web01!.id,
      reason: 'look at the beacon',
      caseId: 'IR-42',
      startedAt: new Date(f.clock.now().getTime() - 3600_000),
    });
    for (let i = 0; i < 60; i++) {
      await f.audit.append({
        actorType: 'user',
        actorId: analyst.id,
        action: 'file.fetched',
        outcome: 'ok',
        endpointId: i % 2 ? db01!.id : web01!.id,
        details: { path: `/var/log/nginx/access-${i}.log`, sha256: 'be'.repeat(32), size: 1234 + i },
      });
    }
    const [req] = await f.tdb.db
      .insert(actionRequests)
      .values({
        ref: 'R-7K3QXM',
        action: 'isolate',
        targets: [{ endpointId: web01!.id, hostname: 'web-01' }],
        digest: 'd1e2f3a4'.repeat(8),
        reason: 'C2 beacon to 198.51.100.7 seen by the EDR',
        caseId: 'IR-42',
        requesterId: analyst.id,
        state: 'completed',
        deliveryTtlSeconds: 3600,
      })
      .returning();
    const r = req!.id;
    const steps: Parameters<WebFixture['audit']['append']>[0][] = [
      {
        actorType: 'user',
        actorId: analyst.id,
        action: 'request.created',
        outcome: 'ok',
        requestId: r,
        details: {
          ref: 'R-7K3QXM',
          action: 'isolate',
          targets: [{ endpointId: web01!.id, hostname: 'web-01' }],
          reason: req!.reason,
          caseId: 'IR-42',
          digest: req!.digest,
        },
      },
      {
        actorType: 'anonymous',
        action: 'stepup.attempt',
        outcome: 'refused',
        details: { reason: 'link_unknown', sourceIp: '203.0.113.9', userAgent: 'curl/8.5.0' },
      },
      {
        actorType: 'user',
        actorId: approver.id,
        action: 'approval.recorded',
        outcome: 'ok',
        requestId: r,
        details: { ref: 'R-7K3QXM', digest: req!.digest, external: false },
      },
      {
        actorType: 'system',
        actorId: 'broker-eu-1',
        action: 'delivery.sent',
        outcome: 'ok',
        requestId: r,
        endpointId: web01!.id,
        details: { deliveries: [{ id: '6f1c0e1e-4a55-4a0b-9d6e-0c2b1d7a9e11', attempt: 1 }] },
      },
      {
        actorType: 'agent',
        actorId: web01!.id,
        action: 'delivery.result',
        outcome: 'ok',
        requestId: r,
        endpointId: web01!.id,
        details: { action: 'isolate', result: { isolated: true, allowed: ['broker:8443'] }, error: null },
      },
      {
        actorType: 'agent',
        actorId: db01!.id,
        action: 'script.executed',
        outcome: 'failed',
        endpointId: db01!.id,
        details: { payload: { script: SCRIPT, params: { limit: 10 } }, error: 'beacon.exe not found' },
      },
    ];
    for (const s of steps) await f.audit.append(s);
  }

  beforeAll(async () => {
    f = await createWebFixture('pglite');
    base = await f.app.listen({ host: '127.0.0.1', port: 0 });
    browser = await launchChromium();
    phone = await phoneContext(browser);
    desk = await desktopContext(browser);
    analyst = await f.makeUser('hal', { roles: ['active_response'] });
    await seedHistory();
  });
  afterAll(async () => {
    await phone?.close();
    await desk?.close();
    await browser?.close();
    await f?.close();
  });

  async function open(context: BrowserContext, path: string): Promise<Page> {
    const page = await context.newPage();
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    await page.goto(`${base}${path}`);
    return page;
  }
  /** Nothing is wider than the screen: no sideways scrolling on a phone. */
  const overflow = (page: Page) =>
    page.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth');
  const height = (page: Page) => page.evaluate('document.documentElement.scrollHeight') as Promise<number>;

  it('reads on a phone: rows in words, no sideways scrolling, details open on a tap, 50 rows a page', async () => {
    const page = await open(phone, `/stepup/${await f.link(analyst, 'history', 'history')}`);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByLabel('Authenticator code').fill(await codeAt(analyst.secret!, f.clock.now()));
    await submitWith(page, page.getByRole('button', { name: 'Confirm' }));
    expect(page.url()).toBe(`${base}/history`);
    expect(await overflow(page)).toBe(0);
    expect(await page.locator('li.event').count()).toBe(50);
    // 50 rows stay a few screens tall, not tens of thousands of pixels.
    expect(await height(page)).toBeLessThan(50 * 200);
    const row = page.locator('li.event', { hasText: 'asked for isolate' });
    expect(await row.locator('.ev-why').textContent()).toContain('C2 beacon to 198.51.100.7');
    expect(await row.locator('dl.details').isVisible()).toBe(false);
    await page.screenshot({ path: artifactPath('history-phone.png') });

    const script = page.locator('li.event', { hasText: 'ran a script' });
    await script.locator('summary').click();
    expect(await script.locator('dl.details').isVisible()).toBe(true);
    expect(await script.locator('dl.details').textContent()).toContain('beacon.exe not found');
    expect(await overflow(page)).toBe(0);
    await script.scrollIntoViewIfNeeded();
    await page.screenshot({ path: artifactPath('history-phone-details.png') });

    await submitWith(page, page.getByRole('link', { name: 'Older →' }).first());
    expect(page.url()).toMatch(/\/history\?before=\d+$/);
    expect(await page.locator('li.event').count()).toBeGreaterThan(0);
    expect(await overflow(page)).toBe(0);
    await page.screenshot({ path: artifactPath('history-phone-older.png'), fullPage: true });
    await submitWith(page, page.getByRole('link', { name: '← Newer' }).first());
    expect(await page.locator('li.event', { hasText: 'asked for isolate' }).count()).toBe(1);

    await page.getByLabel('Endpoint').fill('web-01');
    await submitWith(page, page.getByRole('button', { name: 'Filter' }));
    expect(page.url()).toContain('endpoint=web-01');
    expect(await page.locator('ul.sessions').textContent()).toContain('look at the beacon');
    await page.getByLabel('Kind of event').selectOption('file.');
    await submitWith(page, page.getByRole('button', { name: 'Filter' }));
    expect(page.url()).toContain('endpoint=web-01&request=&action=file.');
    expect(await page.locator('li.event').count()).toBe(30);
    expect(await overflow(page)).toBe(0);
    await page.screenshot({ path: artifactPath('history-phone-filtered.png'), fullPage: true });
    // The window cookie carries over to the desk test below.
    await desk.addCookies(await phone.cookies());
    await page.close();
  });

  it('reads at a desk: one line per record under column headings', async () => {
    const page = await open(desk, '/history');
    expect(await overflow(page)).toBe(0);
    expect(await page.locator('.events-head').isVisible()).toBe(true);
    // The who, what, endpoint, request and outcome of a record sit on one line.
    const row = page.locator('li.event', { hasText: 'isolate succeeded' });
    const tops = await Promise.all(
      ['.ev-when', '.ev-who', '.ev-what', '.ev-endpoint', '.ev-request', '.ev-outcome'].map(
        async (c) => (await row.locator(c).boundingBox())!.y,
      ),
    );
    expect(Math.max(...tops) - Math.min(...tops)).toBeLessThan(8);
    await page.screenshot({ path: artifactPath('history-desktop.png') });
    await page.locator('li.event', { hasText: 'ran a script' }).locator('summary').click();
    await page.locator('li.event', { hasText: 'ran a script' }).scrollIntoViewIfNeeded();
    await page.screenshot({ path: artifactPath('history-desktop-details.png') });
    await page.close();
  });

  it('shows a front page at / that says what this is and links to the health check', async () => {
    for (const [name, context] of [
      ['phone', phone],
      ['desktop', desk],
    ] as const) {
      const page = await open(context, '/');
      expect(await page.locator('h1').textContent()).toBe('This server runs Active Response');
      expect(await page.locator('main').textContent()).toContain('Actions are requested in chat');
      expect(await page.locator('main').textContent()).toContain('README.md');
      expect(await overflow(page)).toBe(0);
      await page.screenshot({ path: artifactPath(`front-${name}.png`), fullPage: true });
      const health = await page.request.get(
        `${base}${await page.getByRole('link', { name: 'Health check' }).getAttribute('href')}`,
      );
      expect(await health.json()).toEqual({ status: 'ok', checks: {} });
      await page.close();
    }
  });

  it('raised no Content-Security-Policy violation on any page', () => {
    expect(cspViolations).toEqual([]);
  });
});
