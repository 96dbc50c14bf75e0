// Real Chromium for the browser tests, through playwright-core and Debian's /usr/bin/chromium (installed by
// .ci/run). When the binary is missing the browser suites skip with a message saying so; nothing else does.
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Locator, type Page } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM_PATH);
export const NO_CHROMIUM_MESSAGE = `browser tests skipped: ${CHROMIUM_PATH} is missing (apt-get install -y chromium)`;

/** Screenshots land here on every run (gitignored) so a person can look at the pages. */
export const ARTIFACTS_DIR = fileURLToPath(new URL('../artifacts/', import.meta.url));

export function artifactPath(name: string): string {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  return `${ARTIFACTS_DIR}${name}`;
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** A phone-sized context: analysts get paged and open the link on their phone. */
export function phoneContext(browser: Browser): Promise<BrowserContext> {
  return browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    acceptDownloads: true,
  });
}

/** A desktop browser window, for pages people also open at their desk (history, the front page). */
export function desktopContext(browser: Browser): Promise<BrowserContext> {
  return browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
}

/**
 * Clicks a submit button and waits for the page it leads to. (Waiting for 'load' alone can resolve on the
 * page that is still showing, before the form's navigation commits.)
 */
export async function submitWith(page: Page, button: Locator): Promise<void> {
  await Promise.all([page.waitForEvent('framenavigated', (f) => f === page.mainFrame()), button.click()]);
  await page.waitForLoadState('load');
}
