// A local stand-in for Slack: the Web API methods the adapter calls, in Slack's wire format (HTTP 200 with
// { ok: true, ... } or { ok: false, error }, form or JSON bodies, Bearer token), recording every call. Plus
// helpers that build genuinely signed requests the way Slack signs them (v0 HMAC-SHA256).
import { createHmac } from 'node:crypto';
import formbody from '@fastify/formbody';
import Fastify from 'fastify';
import { type WebSocket, WebSocketServer } from 'ws';
import type { RequestView } from '../../bot/ports.ts';

export interface SlackCall {
  method: string;
  args: Record<string, unknown>;
  seq: number;
  /** When it was answered, by the stand-in's `now` (default the wall clock), in ms. */
  at: number;
}

export interface FakeSlackOptions {
  botToken: string;
  /** xapp- token accepted by apps.connections.open, which then hands out this server's Socket Mode URL. */
  appToken?: string;
  teamId?: string;
  botUserId?: string;
  /** The stand-in's clock for `at` and for rate-limit stretches (default Date.now). */
  now?: () => number;
}

/** Form fields arrive as strings; the client JSON-encodes arrays and objects (blocks), so decode them back. */
function decodeArgs(body: unknown): Record<string, unknown> {
  if (!body || typeof body !== 'object') return {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
    if (typeof v === 'string' && /^[[{]/.test(v)) {
      try {
        out[k] = JSON.parse(v);
        continue;
      } catch {}
    }
    out[k] = v;
  }
  return out;
}

export async function startFakeSlack(opts: FakeSlackOptions) {
  const teamId = opts.teamId ?? 'T0HOME';
  const botUserId = opts.botUserId ?? 'UBOT';
  const calls: SlackCall[] = [];
  const now = opts.now ?? Date.now;
  /** Calls answered with 429 while a rate-limit stretch lasted; not in `calls` (Slack did nothing). */
  const limited: Omit<SlackCall, 'seq'>[] = [];
  let rateLimit: { until: number; retryAfterSec: number } | undefined;
  const waiters = new Set<() => void>();
  const users = new Map<string, { id: string; team_id: string; name: string; real_name: string }>();
  const channels = new Map<string, { id: string; name: string; is_ext_shared: boolean }>();
  let seq = 0;
  let tsCounter = 1_700_000_000_000;
  const nextTs = () => {
    tsCounter += 1;
    return `${Math.floor(tsCounter / 1000)}.${String(tsCounter % 1000).padStart(6, '0')}`;
  };

  // Socket Mode: apps.connections.open hands out this WebSocket URL; Slack greets with `hello`, then sends
  // envelopes the app acknowledges by echoing the envelope_id.
  const wss = opts.appToken ? new WebSocketServer({ host: '127.0.0.1', port: 0 }) : undefined;
  const sockets = new Set<WebSocket>();
  const acks = new Map<string, (msg: Record<string, unknown>) => void>();
  wss?.on('connection', (ws) => {
    sockets.add(ws);
    ws.on('close', () => sockets.delete(ws));
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as { envelope_id?: string };
      if (msg.envelope_id) acks.get(msg.envelope_id)?.(msg);
    });
    ws.send(JSON.stringify({ type: 'hello', num_connections: 1, connection_info: { app_id: 'AAPP' } }));
  });
  if (wss) await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  let envelopeSeq = 0;

  const server = Fastify({ logger: false });
  await server.register(formbody);

  const handlers: Record<string, (a: Record<string, unknown>) => Record<string, unknown>> = {
    'auth.test': () => ({
      url: 'https://fake.slack.test/',
      team: 'Home',
      user: 'ar-bot',
      team_id: teamId,
      user_id: botUserId,
      bot_id: 'BBOT',
    }),
    'chat.postMessage': (a) => {
      if (!a.channel) return { ok: false, error: 'channel_not_found' };
      if (!a.text && !a.blocks) return { ok: false, error: 'no_text' };
      const ts = nextTs();
      return {
        channel: a.channel,
        ts,
        message: { type: 'message', text: a.text, ts, thread_ts: a.thread_ts },
      };
    },
    'chat.update': (a) => {
      if (!a.channel || !a.ts) return { ok: false, error: 'message_not_found' };
      return { channel: a.channel, ts: a.ts, text: a.text };
    },
    'chat.postEphemeral': (a) => {
      if (!a.channel || !a.user) return { ok: false, error: 'user_not_in_channel' };
      return { message_ts: nextTs() };
    },
    'users.info': (a) => {
      const u = users.get(String(a.user));
      return u
        ? { user: { ...u, profile: { real_name: u.real_name, team: u.team_id } } }
        : { ok: false, error: 'user_not_found' };
    },
    'conversations.info': (a) => {
      const c = channels.get(String(a.channel));
      return c ? { channel: c } : { ok: false, error: 'channel_not_found' };
    },
  };

  server.post('/api/:method', async (req, reply) => {
    const { method } = req.params as { method: string };
    const args = decodeArgs(req.body);
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : (args.token as string | undefined);
    if (method === 'apps.connections.open' && wss && token === opts.appToken) {
      calls.push({ method, args, seq: ++seq, at: now() });
      const { port } = wss.address() as { port: number };
      return { ok: true, url: `ws://127.0.0.1:${port}/link` };
    }
    if (token !== opts.botToken) return { ok: false, error: token ? 'invalid_auth' : 'not_authed' };
    if (rateLimit && now() < rateLimit.until && method.startsWith('chat.')) {
      limited.push({ method, args, at: now() });
      return reply
        .code(429)
        .header('retry-after', String(rateLimit.retryAfterSec))
        .send({ ok: false, error: 'ratelimited' });
    }
    calls.push({ method, args, seq: ++seq, at: now() });
    for (const w of [...waiters]) w();
    const handler = handlers[method];
    if (!handler) return { ok: false, error: 'unknown_method' };
    const res = handler(args);
    return 'ok' in res ? res : { ok: true, ...res };
  });

  const address = await server.listen({ host: '127.0.0.1', port: 0 });

  return {
    /** Web API base for the adapter's SLACK_API_URL. */
    apiUrl: `${address}/api/`,
    calls,
    teamId,
    botUserId,
    callsOf: (method: string) => calls.filter((c) => c.method === method),
    limited,
    /**
     * Answers every chat.* call with HTTP 429 and `Retry-After: retryAfterSec` for the next `forMs` (by the
     * stand-in's clock), as Slack does when an app posts faster than its tier allows.
     */
    rateLimitFor(forMs: number, retryAfterSec: number) {
      rateLimit = { until: now() + forMs, retryAfterSec };
    },
    addUser(u: { id: string; team_id: string; name: string; real_name?: string }) {
      users.set(u.id, { ...u, real_name: u.real_name ?? u.name });
    },
    addChannel(c: { id: string; name: string; is_ext_shared?: boolean }) {
      channels.set(c.id, { ...c, is_ext_shared: c.is_ext_shared ?? false });
    },
    /** Resolves with the first recorded call matching `pred` (checked on each new call), or rejects after `ms`. */
    waitFor(pred: (c: SlackCall) => boolean, ms = 10_000): Promise<SlackCall> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = calls.find(pred);
          if (!found) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          const seen = calls.map((c) => `${c.method} ${String(c.args.text ?? '').slice(0, 80)}`).join('\n');
          reject(new Error(`no Slack call matched within ${ms} ms; calls so far:\n${seen}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    /** Open Socket Mode connections. */
    socketCount: () => sockets.size,
    /**
     * Sends a Socket Mode envelope (`slash_commands`, `events_api`, `interactive`) to every connected app
     * and resolves with the first acknowledgement.
     */
    sendEnvelope(type: string, payload: unknown, ms = 10_000): Promise<Record<string, unknown>> {
      const envelopeId = `env-${++envelopeSeq}`;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ack for ${envelopeId} within ${ms} ms`)), ms);
        acks.set(envelopeId, (msg) => {
          clearTimeout(timer);
          acks.delete(envelopeId);
          resolve(msg);
        });
        const frame = JSON.stringify({
          type,
          envelope_id: envelopeId,
          payload,
          accepts_response_payload: type !== 'events_api',
        });
        for (const ws of sockets) ws.send(frame);
      });
    },
    async close() {
      for (const ws of sockets) ws.terminate();
      if (wss) await new Promise<void>((resolve) => wss.close(() => resolve()));
      await server.close();
    },
  };
}

export type FakeSlack = Awaited<ReturnType<typeof startFakeSlack>>;

// ---- signed requests, as Slack sends them ----

export function slackSignature(secret: string, timestampSec: number, rawBody: string): string {
  return `v0=${createHmac('sha256', secret).update(`v0:${timestampSec}:${rawBody}`).digest('hex')}`;
}

export interface SignedRequest {
  method: 'POST';
  url: string;
  headers: Record<string, string>;
  payload: string;
}

export function signedRequest(
  secret: string,
  body: { form: Record<string, string> } | { json: unknown },
  opts: { timestampSec?: number; retryNum?: number; signature?: string } = {},
): SignedRequest {
  const ts = opts.timestampSec ?? Math.floor(Date.now() / 1000);
  const isForm = 'form' in body;
  const raw = isForm ? new URLSearchParams(body.form).toString() : JSON.stringify(body.json);
  const headers: Record<string, string> = {
    'content-type': isForm ? 'application/x-www-form-urlencoded' : 'application/json',
    'x-slack-request-timestamp': String(ts),
    'x-slack-signature': opts.signature ?? slackSignature(secret, ts, raw),
  };
  if (opts.retryNum !== undefined) {
    headers['x-slack-retry-num'] = String(opts.retryNum);
    headers['x-slack-retry-reason'] = 'http_timeout';
  }
  return { method: 'POST', url: '/slack/events', headers, payload: raw };
}

let triggerCounter = 0;

/** The form body of a slash command invocation. */
export function slashCommand(p: {
  text: string;
  user: string;
  team: string;
  channel: string;
  command?: string;
  triggerId?: string;
}) {
  return {
    form: {
      token: 'legacy-verification-token',
      team_id: p.team,
      team_domain: 'home',
      channel_id: p.channel,
      channel_name: 'incident',
      user_id: p.user,
      user_name: p.user.toLowerCase(),
      command: p.command ?? '/ar',
      text: p.text,
      api_app_id: 'AAPP',
      is_enterprise_install: 'false',
      response_url: 'https://hooks.slack.test/commands/1',
      trigger_id: p.triggerId ?? `trig-${++triggerCounter}`,
    },
  };
}

/** An Events API app_mention callback. `userTeam` differs from `team` for a Slack Connect user. */
export function appMention(p: {
  text: string;
  user: string;
  team: string;
  userTeam?: string;
  channel: string;
  eventId: string;
  threadTs?: string;
}) {
  return {
    json: {
      token: 'legacy-verification-token',
      team_id: p.team,
      api_app_id: 'AAPP',
      type: 'event_callback',
      event_id: p.eventId,
      event_time: Math.floor(Date.now() / 1000),
      authorizations: [
        { team_id: p.team, user_id: 'UBOT', is_bot: true, enterprise_id: null, is_enterprise_install: false },
      ],
      event: {
        type: 'app_mention',
        user: p.user,
        user_team: p.userTeam ?? p.team,
        text: p.text,
        channel: p.channel,
        ts: '1700000000.000100',
        thread_ts: p.threadTs,
        event_ts: '1700000000.000100',
      },
    },
  };
}

/** A block_actions click on a card button, form-encoded with the JSON in `payload` as Slack sends it. */
export function buttonClick(p: {
  actionId: string;
  value: string;
  user: string;
  userTeam: string;
  team: string;
  channel: string;
  messageTs: string;
  actionTs?: string;
}) {
  const payload = {
    type: 'block_actions',
    user: { id: p.user, username: p.user.toLowerCase(), name: p.user.toLowerCase(), team_id: p.userTeam },
    api_app_id: 'AAPP',
    token: 'legacy-verification-token',
    container: { type: 'message', message_ts: p.messageTs, channel_id: p.channel, is_ephemeral: false },
    trigger_id: `trig-${++triggerCounter}`,
    team: { id: p.team, domain: 'home' },
    is_enterprise_install: false,
    channel: { id: p.channel, name: 'incident' },
    message: { type: 'message', ts: p.messageTs, text: 'card' },
    response_url: 'https://hooks.slack.test/actions/1',
    actions: [
      {
        type: 'button',
        action_id: p.actionId,
        block_id: 'ar_decision',
        value: p.value,
        text: { type: 'plain_text', text: 'Approve' },
        action_ts:
          p.actionTs ?? `${Math.floor(Date.now() / 1000)}.${String(++triggerCounter).padStart(6, '0')}`,
      },
    ],
  };
  return { form: { payload: JSON.stringify(payload) } };
}

/** A pending request card as the core would show it, for rendering tests. */
export function sampleRequestView(over: Partial<RequestView> = {}): RequestView {
  return {
    id: '6f1c2d9e-0000-4000-8000-000000000001',
    ref: 'R-7K3QXM',
    action: 'isolate',
    params: {},
    targets: [
      { endpointId: 'e1', hostname: 'web-01' },
      { endpointId: 'e2', hostname: 'web-02' },
    ],
    exclusions: [{ hostname: 'db-01', reason: 'segment has Active Response disabled' }],
    reason: 'C2 beacon <script>',
    caseId: 'IR-42',
    requester: { id: 'u1', displayName: 'Ana Analyst', external: false },
    state: 'pending_approval',
    digest: 'abcdef0123456789abcdef',
    approvalsRequired: 1,
    inHouseApprovalRequired: false,
    approvals: [],
    createdAt: new Date('2026-11-28T09:00:00Z'),
    ...over,
  };
}
