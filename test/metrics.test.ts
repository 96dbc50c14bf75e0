// Prometheus metrics as an operator scrapes them: after one isolate taken end to end (console chat, both
// step-ups on the real web pages, the broker and a real dry-run agent process), every metric has samples;
// and /metrics is never public: the metrics listener serves it on loopback, the web listener only to a
// scraper holding METRICS_TOKEN.
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../app/config.ts';
import { buildHttpApp } from '../app/http-app.ts';
import { createMetricsRegistry } from '../app/metrics.ts';
import { buildMetricsApp, publicMetricsAccess } from '../app/metrics-http.ts';
import { attachSurfaces } from '../app/surfaces.ts';
import { createLocalFileStore } from '../broker/files/local-file-store.ts';
import {
  type AgentProcess,
  enrolAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { buildTestPlatform, type Person, type TestPlatform } from './helpers/platform.ts';
import { formState } from './helpers/web-stepup.ts';

const silent = { info() {}, warn() {}, error() {}, debug() {} };
const TOKEN = 'metrics-token-0123456789abcdef0123456789abcdef';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition. */
function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[k!] = v!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    ?.value;
}

describe.each(drivers)('metrics after one isolate on %s', { timeout: 240_000 }, (driver) => {
  let tdb: TestDatabase;
  let registry: Registry;
  let tp: TestPlatform;
  let tb: TestBroker;
  let web: FastifyInstance;
  let metricsApp: FastifyInstance;
  let agent: AgentProcess | undefined;
  let unfollow: (() => Promise<void>) | undefined;

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    registry = createMetricsRegistry();
    tp = await buildTestPlatform(tdb, {}, { metrics: registry });
    tb = await startTestBroker(tdb, { metrics: registry });
    web = buildHttpApp({ metrics: registry });
    await attachSurfaces({
      http: web,
      platform: tp.platform,
      config: tp.platform.config,
      logger: silent,
      fileStore: tb.fileStore,
      database: tdb,
    });
    await web.ready();
    metricsApp = buildMetricsApp(registry);
    unfollow = await tp.platform.followDeliveries();
  });
  afterEach(async () => {
    await unfollow?.();
    await agent?.kill();
    await metricsApp.close();
    await web.close();
    await tb.stop();
    await tdb.destroy();
  });

  /** Opens the step-up link on the web app and confirms with password and code, as a browser does. */
  async function stepUpOnPage(url: string, p: Person) {
    const path = new URL(url).pathname;
    const page = await web.inject({ method: 'GET', url: path });
    expect(page.statusCode).toBe(200);
    const { token, cookies } = formState(page);
    const done = await web.inject({
      method: 'POST',
      url: path,
      payload: new URLSearchParams({
        _csrf: token!,
        password: p.password,
        code: await tp.code(p),
      }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      cookies,
    });
    expect(done.statusCode).toBe(200);
    return path;
  }

  it('has samples for every metric once an isolate has succeeded', async () => {
    const ana = await tp.person('ana', ['active_response']);
    const ian = await tp.person('ian', ['approver']);
    agent = (await enrolAgent(tb, tdb, 'web-01', ['--dry-run'])).agent;

    await tp.say('ana', 'isolate web-01 --reason "C2 beacon" --case IR-42');
    const linkPaths = [await stepUpOnPage(tp.lastLinkFor('ana'), ana)];
    const card = tp.chat.transcript.find((m) => m.kind === 'card');
    await tp.platform.bot.handleDecision(tp.ctx('ian'), { requestId: card!.view!.ref, decision: 'approve' });
    linkPaths.push(await stepUpOnPage(tp.lastLinkFor('ian'), ian));
    await waitFor(
      async () => (await tp.platform.requests.getView(card!.view!.id)).state === 'completed',
      'the isolate to complete',
      90_000,
    );

    const res = await metricsApp.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    const s = parseExposition(res.body);

    expect(sample(s, 'ar_agents_connected')).toBe(1);
    expect(sample(s, 'ar_deliveries', { state: 'succeeded' })).toBe(1);
    expect(sample(s, 'ar_deliveries', { state: 'queued' })).toBe(0);
    expect(sample(s, 'ar_outbox_depth')).toBe(0);
    expect(sample(s, 'ar_requests', { state: 'completed' })).toBe(1);
    expect(sample(s, 'ar_requests', { state: 'pending_approval' })).toBe(0);
    // Every card edit and thread reply of the request was accepted by chat.
    expect(sample(s, 'ar_chat_outbox', { state: 'sent' })).toBeGreaterThan(0);
    expect(sample(s, 'ar_chat_outbox', { state: 'failed' })).toBe(0);
    // The requester's and the approver's confirmations.
    expect(sample(s, 'ar_stepup_outcomes_total', { outcome: 'ok', reason: 'ok' })).toBe(2);
    expect(sample(s, 'ar_audit_events_total', { action: 'request.created', outcome: 'ok' })).toBe(1);
    expect(sample(s, 'ar_audit_events_total', { action: 'delivery.result', outcome: 'ok' })).toBe(1);
    expect(sample(s, 'ar_audit_events_total', { action: 'approval.recorded', outcome: 'ok' })).toBe(1);
    expect(sample(s, 'ar_delivery_duration_seconds_count', { action: 'isolate', state: 'succeeded' })).toBe(
      1,
    );
    expect(
      sample(s, 'ar_delivery_duration_seconds_sum', { action: 'isolate', state: 'succeeded' }),
    ).toBeGreaterThanOrEqual(0);
    // Two page views and two confirmations, labelled by route pattern: the link tokens never appear.
    expect(
      sample(s, 'ar_http_request_duration_seconds_count', {
        method: 'GET',
        route: '/stepup/:token',
        status_class: '2xx',
      }),
    ).toBe(2);
    expect(
      sample(s, 'ar_http_request_duration_seconds_count', {
        method: 'POST',
        route: '/stepup/:token',
        status_class: '2xx',
      }),
    ).toBe(2);
    for (const path of linkPaths) expect(res.body).not.toContain(path.split('/').pop()!);
    // Node's default metrics.
    expect(sample(s, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(sample(s, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(sample(s, 'nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0);
  });

  it('counts audit records another process wrote, and step-up refusals by reason', async () => {
    const before = parseExposition((await metricsApp.inject({ method: 'GET', url: '/metrics' })).body);
    const created = sample(before, 'ar_audit_events_total', { action: 'user.created', outcome: 'ok' }) ?? 0;
    // A second audit service on the same database stands in for the CLI or a standalone broker.
    await tb.audit.append({
      actorType: 'system',
      actorId: 'cli',
      action: 'user.created',
      outcome: 'ok',
      details: { username: 'zoe' },
    });
    await tb.audit.append({
      actorType: 'anonymous',
      action: 'stepup.attempt',
      outcome: 'refused',
      details: { reason: 'link_unknown' },
    });
    const after = parseExposition((await metricsApp.inject({ method: 'GET', url: '/metrics' })).body);
    expect(sample(after, 'ar_audit_events_total', { action: 'user.created', outcome: 'ok' })).toBe(
      created + 1,
    );
    expect(sample(after, 'ar_stepup_outcomes_total', { outcome: 'refused', reason: 'link_unknown' })).toBe(1);
  });
});

describe.each(drivers)('where /metrics is served (%s)', (driver) => {
  let tdb: TestDatabase;
  let registry: Registry;
  let tp: TestPlatform;
  const apps: FastifyInstance[] = [];
  const files = tempDir('ar-metrics-files-');

  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    registry = createMetricsRegistry();
    tp = await buildTestPlatform(tdb, {}, { metrics: registry });
  });
  afterEach(async () => {
    for (const a of apps.splice(0)) await a.close();
    await tdb.destroy();
  });
  afterAll(() => files.remove());

  it('keeps /metrics off the public web listener when no METRICS_TOKEN is set', async () => {
    const web = buildHttpApp({
      metrics: registry,
      publicMetrics: publicMetricsAccess(undefined, tp.platform.audit),
    });
    apps.push(web);
    const res = await web.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(404);
    expect(res.body).not.toContain('process_cpu');
  });

  it('serves /metrics on the web listener only to the bearer of METRICS_TOKEN, and audits refusals', async () => {
    const web = buildHttpApp({
      metrics: registry,
      publicMetrics: publicMetricsAccess(TOKEN, tp.platform.audit),
    });
    apps.push(web);
    // Next to the step-up pages, as in production (both scopes have their own rate limits).
    await attachSurfaces({
      http: web,
      platform: tp.platform,
      config: tp.platform.config,
      logger: silent,
      fileStore: createLocalFileStore(files.dir),
      database: tdb,
    });
    expect((await web.inject({ method: 'GET', url: '/' })).statusCode).toBe(200);
    const none = await web.inject({ method: 'GET', url: '/metrics' });
    expect(none.statusCode).toBe(401);
    expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(none.body).not.toContain('process_cpu');
    const wrong = await web.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${TOKEN.slice(0, -1)}x` },
    });
    expect(wrong.statusCode).toBe(401);
    const right = await web.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(right.statusCode).toBe(200);
    expect(right.body).toMatch(/^process_cpu_user_seconds_total \d/m);

    const refusals = await tp.platform.audit.list({ actionPrefix: 'metrics.' });
    expect(refusals.map((r) => [r.outcome, (r.details as { reason: string }).reason]).sort()).toEqual([
      ['refused', 'token_missing'],
      ['refused', 'token_wrong'],
    ]);
    // The token itself is never written down.
    expect(JSON.stringify(refusals)).not.toContain(TOKEN.slice(0, 16));
  });

  it('stops answering a caller who keeps trying tokens, so refusals cannot flood the audit log', async () => {
    const access = { ...publicMetricsAccess(TOKEN, tp.platform.audit)!, perMinute: 3 };
    const web = buildHttpApp({ metrics: registry, publicMetrics: access });
    apps.push(web);
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await web.inject({
        method: 'GET',
        url: '/metrics',
        headers: { authorization: `Bearer guess-${i}` },
      });
      codes.push(res.statusCode);
    }
    expect(codes).toEqual([401, 401, 401, 429, 429]);
    expect(await tp.platform.audit.list({ actionPrefix: 'metrics.' })).toHaveLength(3);
  });

  it('serves /metrics on the metrics listener at its default loopback address', async () => {
    const config = loadConfig({});
    expect(config.METRICS_HOST).toBe('127.0.0.1');
    expect(config.METRICS_PORT).toBe(9464);
    const app = buildMetricsApp(registry);
    apps.push(app);
    const url = await app.listen({ host: config.METRICS_HOST, port: 0 });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^# TYPE ar_outbox_depth gauge$/m);
  });

  it('refuses a short METRICS_TOKEN at start, naming the variable and not echoing it', () => {
    expect(() => loadConfig({ METRICS_TOKEN: 'short-secret' })).toThrow(/METRICS_TOKEN must be at least 32/);
    expect(() => loadConfig({ METRICS_TOKEN: 'short-secret' })).not.toThrow(/short-secret/);
  });
});
