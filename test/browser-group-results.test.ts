// An action group's results page in real Chromium, at a desk (1280 px) and on a phone (390 px): every one of
// 300 endpoints is listed, the page never runs off the side of a phone (the table scrolls on its own), and
// the state filter works by a tap; the Action Groups list reads the same on both. Screenshots go to test/artifacts/ (git-ignored) for a person to look at.
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  artifactPath,
  desktopContext,
  hasChromium,
  launchChromium,
  NO_CHROMIUM_MESSAGE,
  phoneContext,
  submitWith,
} from './helpers/browser.ts';
import { seedFinishedGroup } from './helpers/group-results.ts';
import { codeAt, createWebFixture, PASSWORD, type TestUser, type WebFixture } from './helpers/web-stepup.ts';

if (!hasChromium) console.warn(NO_CHROMIUM_MESSAGE);

describe.skipIf(!hasChromium)('action group results page in Chromium', { timeout: 180_000 }, () => {
  let f: WebFixture;
  let browser: Browser;
  let base: string;
  let analyst: TestUser;

  beforeAll(async () => {
    f = await createWebFixture('pglite');
    base = await f.app.listen({ host: '127.0.0.1', port: 0 });
    browser = await launchChromium();
    analyst = await f.makeUser('hal', { roles: ['active_response'] });
    await seedFinishedGroup(f, analyst.id, 'R-GRP300', 300);
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await f?.close();
  });

  /** Steps up for the history in `context`, then opens the group's results. */
  async function results(context: BrowserContext, step: number): Promise<Page> {
    const page = await context.newPage();
    await page.goto(`${base}/stepup/${await f.link(analyst, 'history', 'history')}`);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByLabel('Authenticator code').fill(await codeAt(analyst.secret!, f.clock.now(), step));
    await submitWith(page, page.getByRole('button', { name: 'Confirm' }));
    await page.goto(`${base}/groups/R-GRP300`);
    return page;
  }
  const overflow = (page: Page) =>
    page.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth');

  it('lists every endpoint at a desk and filters by state', async () => {
    const desk = await desktopContext(browser);
    const page = await results(desk, 0);
    expect(await page.locator('table.results tbody tr').count()).toBe(300);
    expect(await overflow(page)).toBe(0);
    await page.screenshot({ path: artifactPath('group-results-desktop.png') });
    await page.getByRole('link', { name: 'failed (30)' }).click();
    await page.waitForURL(/state=failed/);
    expect(await page.locator('table.results tbody tr').count()).toBe(30);
    await page.screenshot({ path: artifactPath('group-results-desktop-failed.png') });
    // The Action Groups list, in the same stepped-up session: the group is there and links its results.
    await page.goto(`${base}/groups`);
    await expect(page.getByRole('link', { name: 'R-GRP300' }).count()).resolves.toBeGreaterThan(0);
    expect(await overflow(page)).toBe(0);
    await page.screenshot({ path: artifactPath('groups-list-desktop.png'), fullPage: true });
    await desk.close();
  });

  it('reads on a phone without sideways scrolling of the page', async () => {
    const phone = await phoneContext(browser);
    const page = await results(phone, 1);
    expect(await page.locator('table.results tbody tr').count()).toBe(300);
    expect(await overflow(page)).toBe(0);
    await page.screenshot({ path: artifactPath('group-results-phone.png') });
    await page.goto(`${base}/groups`);
    await expect(page.getByRole('link', { name: 'R-GRP300' }).count()).resolves.toBeGreaterThan(0);
    expect(await overflow(page)).toBe(0);
    await page.screenshot({ path: artifactPath('groups-list-phone.png'), fullPage: true });
    await phone.close();
  });
});
