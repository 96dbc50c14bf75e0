// The step-up and enrolment pages in real Chromium on a phone-sized screen: what a person sees and types.
import { readFile } from 'node:fs/promises';
import { BlobReader, BlobWriter, ZipReader } from '@zip.js/zip.js';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeTotpSecret } from '../bot/stepup/totp.ts';
import { endpoints, segments, sessions } from '../db/schema.ts';
import {
  artifactPath,
  hasChromium,
  launchChromium,
  NO_CHROMIUM_MESSAGE,
  phoneContext,
  submitWith,
} from './helpers/browser.ts';
import {
  codeAt,
  createWebFixture,
  PASSWORD,
  sampleRequestView,
  type TestUser,
  type WebFixture,
} from './helpers/web-stepup.ts';

if (!hasChromium) console.warn(NO_CHROMIUM_MESSAGE);

describe.skipIf(!hasChromium)('step-up pages in Chromium', () => {
  let f: WebFixture;
  let browser: Browser;
  let context: BrowserContext;
  let base: string;
  let approver: TestUser;
  const cspViolations: string[] = [];

  beforeAll(async () => {
    f = await createWebFixture('pglite', { request: sampleRequestView(), lockoutThreshold: 3 });
    const address = await f.app.listen({ host: '127.0.0.1', port: 0 });
    base = address;
    browser = await launchChromium();
    context = await phoneContext(browser);
    approver = await f.makeUser('carol', { roles: ['approver'] });
  });
  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await f?.close();
  });

  async function open(path: string): Promise<Page> {
    const page = await context.newPage();
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    await page.goto(`${base}${path}`);
    return page;
  }

  async function fillAndSubmit(page: Page, password: string, code: string) {
    await page.getByLabel('Password').fill(password);
    await page.getByLabel('Authenticator code').fill(code);
    // Approval pages offer Approve (and Deny); every other step-up page has one Confirm button.
    await submitWith(page, page.getByRole('button', { name: /^(Confirm|Approve)$/ }));
  }

  const nextStep = () => f.clock.advance(30_000);

  it('enrols an authenticator: password first, then the secret from the page and the current code', async () => {
    const user = await f.makeUser('kim', { enrol: false });
    const page = await open(`/enrol/${await f.link(user, 'enrol_totp', 'enrol')}`);
    await expect(page.getByRole('heading', { level: 1 }).textContent()).resolves.toContain('two-factor');
    // The link alone shows no secret: the page asks for the password first.
    expect(await page.locator('figure.qr svg').count()).toBe(0);
    expect(await page.locator('#totp-secret').count()).toBe(0);
    await page.getByLabel('Password').fill('not my password');
    await submitWith(page, page.getByRole('button', { name: 'Continue' }));
    await expect(page.getByRole('alert').textContent()).resolves.toContain('That password was not accepted');
    expect(await page.locator('#totp-secret').count()).toBe(0);
    await page.getByLabel('Password').fill(PASSWORD);
    await submitWith(page, page.getByRole('button', { name: 'Continue' }));
    expect(await page.locator('figure.qr svg').isVisible()).toBe(true);
    const box = await page.locator('figure.qr svg').boundingBox();
    expect(box!.width).toBeGreaterThan(150); // big enough to scan from another screen
    const shown = (await page.locator('#totp-secret').textContent())!.replace(/\s+/g, '');
    expect(shown).toMatch(/^[A-Z2-7]{32}$/);
    await page.screenshot({ path: artifactPath('enrol-page.png'), fullPage: true });

    await page.getByLabel('Authenticator code').fill(await codeAt(decodeTotpSecret(shown), f.clock.now()));
    await submitWith(page, page.getByRole('button', { name: 'Finish setup' }));
    await expect(page.locator('h1').textContent()).resolves.toContain('Two-factor authentication is set up');
    expect((await f.users.getUser(user.id)).mfaEnrolled).toBe(true);
    await page.close();
  });

  it('completes a step-up with password and code and says to return to chat', async () => {
    nextStep();
    const page = await open(`/stepup/${await f.link(approver, 'approve', 'digest')}`);
    const text = await page.locator('main').textContent();
    expect(text).toContain('7 endpoints: web-01, web-02, web-03, db-01, db-02, cache-01, cache-02');
    expect(text).toContain('IR-42');
    expect(text).toContain('C2 beacon <script>alert(1)</script>'); // shown as text, not run
    // The stylesheet loaded (same origin, allowed by the CSP): the button is styled.
    // (A string expression: the tests compile without the DOM lib.)
    const bg = await page.evaluate("getComputedStyle(document.querySelector('button')).backgroundColor");
    expect(bg).toBe('rgb(31, 111, 235)');
    await page.screenshot({ path: artifactPath('stepup-page.png'), fullPage: true });

    await fillAndSubmit(page, PASSWORD, await codeAt(approver.secret!, f.clock.now()));
    expect(await page.locator('h1').textContent()).toBe('Done');
    expect(await page.locator('main').textContent()).toContain('return to Slack or Teams');
    await page.screenshot({ path: artifactPath('stepup-done.png'), fullPage: true });
    await page.close();
  });

  it('refuses a wrong password and a wrong code with the same words and keeps the form', async () => {
    nextStep();
    const page = await open(`/stepup/${await f.link(approver, 'approve', 'digest')}`);
    await fillAndSubmit(page, 'a wrong password entirely', await codeAt(approver.secret!, f.clock.now()));
    const first = await page.getByRole('alert').textContent();
    expect(first).toContain('The password or the code was not accepted');
    await page.screenshot({ path: artifactPath('stepup-failed.png'), fullPage: true });
    await fillAndSubmit(page, PASSWORD, '000000');
    const second = await page.getByRole('alert').textContent();
    expect(second?.split('.')[0]).toBe(first?.split('.')[0]);
    expect(await page.getByLabel('Password').isVisible()).toBe(true);
    // Clear the failures so the lockout test below starts from zero.
    await fillAndSubmit(page, PASSWORD, await codeAt(approver.secret!, f.clock.now()));
    expect(await page.locator('h1').textContent()).toBe('Done');
    await page.close();
  });

  it('refuses a code that was already used', async () => {
    nextStep();
    const code = await codeAt(approver.secret!, f.clock.now());
    const first = await open(`/stepup/${await f.link(approver, 'approve', 'digest')}`);
    await fillAndSubmit(first, PASSWORD, code);
    expect(await first.locator('h1').textContent()).toBe('Done');
    const second = await open(`/stepup/${await f.link(approver, 'approve', 'digest')}`);
    await fillAndSubmit(second, PASSWORD, code);
    expect(await second.getByRole('alert').textContent()).toContain('not accepted');
    await first.close();
    await second.close();
  });

  it('says a used link was used and offers no form', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const page = await open(`/stepup/${token}`);
    await fillAndSubmit(page, PASSWORD, await codeAt(approver.secret!, f.clock.now()));
    await page.goto(`${base}/stepup/${token}`);
    expect(await page.locator('h1').textContent()).toBe('This link has already been used');
    expect(await page.locator('form').count()).toBe(0);
    await page.close();
  });

  it('says an expired link expired and offers no form', async () => {
    const token = await f.link(approver, 'approve', 'digest');
    f.clock.advance(16 * 60_000);
    const page = await open(`/stepup/${token}`);
    expect(await page.locator('h1').textContent()).toBe('This link has expired');
    expect(await page.locator('form').count()).toBe(0);
    await page.close();
  });

  it('locks out after repeated failures and says until when', async () => {
    const user = await f.makeUser('lou', { roles: ['approver'] });
    const page = await open(`/stepup/${await f.link(user, 'approve', 'digest')}`);
    for (const pw of ['wrong one here', 'wrong two here', 'wrong three here']) {
      await fillAndSubmit(page, pw, await codeAt(user.secret!, f.clock.now()));
    }
    expect(await page.getByRole('alert').textContent()).toMatch(
      /locked until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/,
    );
    await fillAndSubmit(page, PASSWORD, await codeAt(user.secret!, f.clock.now()));
    expect(await page.locator('h1').textContent()).toBe('Locked for now');
    expect(await page.locator('form').count()).toBe(0);
    await page.close();
  });

  it('refuses a form posted without its CSRF token', async () => {
    nextStep();
    const token = await f.link(approver, 'approve', 'digest');
    const page = await open(`/stepup/${token}`);
    await page.locator('input[name="_csrf"]').evaluate((el) => el.remove());
    await fillAndSubmit(page, PASSWORD, await codeAt(approver.secret!, f.clock.now()));
    expect(await page.locator('h1').textContent()).toBe('This form has expired');
    // Nothing was confirmed: the link still opens its form.
    await page.goto(`${base}/stepup/${token}`);
    expect(await page.getByLabel('Password').isVisible()).toBe(true);
    await page.close();
  });

  it('downloads evidence as a password-protected zip after a download step-up', async () => {
    const analyst = await f.makeUser('ada', { roles: ['active_response'] });
    const sample = Buffer.from('MZ pretend sample\n'.repeat(500));
    const fileId = await f.storeEvidence(
      '/tmp/dropper.exe',
      sample,
      'fetched',
      await f.fetchRequest(analyst),
    );
    const page = await open(`/stepup/${await f.link(analyst, 'download', fileId)}`);
    expect(await page.locator('h1').textContent()).toBe('Download evidence');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByLabel('Authenticator code').fill(await codeAt(analyst.secret!, f.clock.now()));
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Confirm' }).click(),
    ]);
    expect(download.suggestedFilename()).toBe('dropper.exe.zip');
    expect(await page.locator('h1').textContent()).toBe('Your download is starting');
    const zip = new ZipReader(new BlobReader(new Blob([await readFile((await download.path())!)])));
    const [entry] = await zip.getEntries();
    if (!entry || entry.directory) throw new Error('the zip holds no file entry');
    const data = await entry.getData(new BlobWriter(), { password: 'infected' });
    expect(Buffer.from(await data.arrayBuffer()).equals(sample)).toBe(true);
    await zip.close();
    await page.close();
  });

  it('opens the session history after a history step-up and filters it with the form', async () => {
    const analyst = await f.makeUser('hal', { roles: ['active_response'] });
    const [seg] = await f.tdb.db
      .insert(segments)
      .values({ name: 'servers', activeResponseEnabled: true })
      .returning();
    const hosts = await f.tdb.db
      .insert(endpoints)
      .values([
        { hostname: 'web-01', os: 'linux', segmentId: seg!.id },
        { hostname: 'db-01', os: 'linux', segmentId: seg!.id },
      ])
      .returning();
    await f.tdb.db.insert(sessions).values(
      hosts.map((h, i) => ({
        userId: analyst.id,
        endpointId: h.id,
        reason: `look at ${h.hostname}`,
        caseId: `IR-4${i}`,
        startedAt: new Date(f.clock.now().getTime() - (i + 1) * 3600_000),
      })),
    );
    await f.audit.append({
      actorType: 'user',
      actorId: analyst.id,
      action: 'file.fetched',
      outcome: 'ok',
      endpointId: hosts[0]!.id,
      details: { path: '/tmp/x.bin', sha256: 'be'.repeat(32), size: 1234 },
    });
    const page = await open(`/stepup/${await f.link(analyst, 'history', 'history')}`);
    await fillAndSubmit(page, PASSWORD, await codeAt(analyst.secret!, f.clock.now()));
    expect(page.url()).toBe(`${base}/history`);
    expect(await page.locator('h1').textContent()).toBe('Session history');
    expect(await page.locator('main').textContent()).toContain('be'.repeat(32));
    await page.screenshot({ path: artifactPath('history-page.png') });
    await page.getByLabel('Endpoint').fill('db-01');
    await submitWith(page, page.getByRole('button', { name: 'Filter' }));
    expect(page.url()).toContain('endpoint=db-01');
    const text = await page.locator('main').textContent();
    expect(text).toContain('look at db-01');
    expect(text).not.toContain('look at web-01');
    await page.close();
  });

  it('raised no Content-Security-Policy violation on any page', () => {
    expect(cspViolations).toEqual([]);
  });
});
