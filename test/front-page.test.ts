// GET / on the web listener: a page that says what this server is, under the step-up site's CSP, with no
// data and no login; every other unknown path still answers the JSON 404 that API clients expect.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWebFixture, type WebFixture } from './helpers/web-stepup.ts';

describe('front page', () => {
  let f: WebFixture;
  beforeAll(async () => {
    f = await createWebFixture('pglite');
    await f.makeUser('uma');
  });
  afterAll(async () => {
    await f.close();
  });

  it('says what this is, that actions are asked for in chat, and where health and docs are', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(String(res.headers['content-security-policy'])).toContain("script-src 'none'");
    expect(res.body).toContain('<h1>This server runs Active Response</h1>');
    expect(res.body).toContain('Actions are requested in chat');
    expect(res.body).toContain('href="/healthz"');
    expect(res.body).toContain('README.md');
    expect(res.body).not.toMatch(/<form|<script|uma/i);
  });

  it('leaves other unknown paths as a JSON 404', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/no-such-page' });
    expect(res.statusCode).toBe(404);
    expect(res.headers['content-type']).toMatch(/application\/json/);
  });
});
