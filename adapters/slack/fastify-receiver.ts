// A Bolt Receiver mounted on the shared Fastify app at POST /slack/events: commands, events and
// interactivity all arrive there. Bolt's own verifySlackRequest checks the v0 signature over the raw bytes
// (so this route parses its own body), stale or future timestamps are refused with 401 before anything
// runs, and the HTTP response goes out the moment a listener calls ack(); the listener's work continues.
import { parse as parseQuery } from 'node:querystring';
import {
  type App,
  type Receiver,
  type ReceiverEvent,
  ReceiverMultipleAckError,
  verifySlackRequest,
} from '@slack/bolt';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from '../../bot/ports.ts';

/** Slack's documented replay window. verifySlackRequest only refuses old stamps; we refuse future ones too. */
const MAX_SKEW_SECONDS = 5 * 60;
/** Slack's payloads are small; anything near this is not from Slack. */
const BODY_LIMIT = 1024 * 1024;
/** Slack gives up after 3 s; if no listener acked by then the request is answered so Slack does not retry. */
const ACK_DEADLINE_MS = 2500;

export interface FastifyReceiverOptions {
  signingSecret: string;
  path?: string;
  logger: Logger;
  /** Milliseconds since the epoch; injected so tests can check the stale-timestamp rule. */
  nowMs?: () => number;
}

type AckBody = string | Record<string, unknown> | undefined;

export class FastifyReceiver implements Receiver {
  private app?: App;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly now: () => number;

  constructor(private readonly opts: FastifyReceiverOptions) {
    this.now = opts.nowMs ?? Date.now;
  }

  init(app: App): void {
    this.app = app;
  }

  /** The route lives on the shared server, which the composition root starts; nothing to listen on here. */
  start(): Promise<void> {
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  /** Adds the route in an encapsulated plugin, so the raw-body parser applies to this path only. */
  mount(fastify: FastifyInstance): void {
    const path = this.opts.path ?? '/slack/events';
    fastify.register(async (scope) => {
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: BODY_LIMIT }, (_req, body, done) =>
        done(null, body),
      );
      scope.post(path, (req, reply) => this.handle(req.headers, req.body, reply));
    });
  }

  private async handle(
    headers: Record<string, string | string[] | undefined>,
    body: unknown,
    reply: FastifyReply,
  ) {
    const raw = Buffer.isBuffer(body) ? body.toString('utf8') : '';
    const contentType = String(headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();

    // Slack's SSL probe is not signed; it is answered without looking at anything else and runs nothing.
    if (contentType === 'application/x-www-form-urlencoded' && parseQuery(raw).ssl_check === '1') {
      return reply.status(200).send();
    }
    const refusal = this.verify(headers, raw);
    if (refusal) {
      this.opts.logger.warn({ reason: refusal }, 'refused a Slack request');
      return reply.status(401).send({ error: 'slack.unauthenticated', message: refusal });
    }

    let payload: Record<string, unknown>;
    try {
      payload = parseBody(contentType, raw);
    } catch {
      return reply
        .status(400)
        .send({ error: 'slack.bad_body', message: 'body is neither Slack form data nor JSON' });
    }
    if (payload.type === 'url_verification') return { challenge: String(payload.challenge ?? '') };

    const app = this.app;
    if (!app)
      return reply.status(503).send({ error: 'slack.not_ready', message: 'Slack app is not initialised' });

    const retry = headers['x-slack-retry-num'];
    const retryNum = typeof retry === 'string' ? Number.parseInt(retry, 10) : undefined;
    const retryReason =
      typeof headers['x-slack-retry-reason'] === 'string' ? headers['x-slack-retry-reason'] : undefined;

    const answer = await new Promise<AckBody>((resolve) => {
      let acked = false;
      const deadline = setTimeout(() => {
        if (acked) return;
        acked = true;
        this.opts.logger.warn({ type: payload.type }, 'no Slack listener acked within the deadline');
        resolve(undefined);
      }, ACK_DEADLINE_MS);
      deadline.unref();
      const event: ReceiverEvent = {
        body: payload,
        retryNum: Number.isNaN(retryNum) ? undefined : retryNum,
        retryReason,
        ack: async (response?: AckBody) => {
          if (acked) throw new ReceiverMultipleAckError();
          acked = true;
          clearTimeout(deadline);
          resolve(response);
        },
      };
      const work = app
        .processEvent(event)
        .catch((err) => this.opts.logger.error({ err }, 'Slack event processing failed'))
        .finally(() => {
          this.inflight.delete(work);
          // Nothing matched (or a listener failed before acking): answer now rather than at the deadline.
          if (!acked) {
            acked = true;
            clearTimeout(deadline);
            resolve(undefined);
          }
        });
      this.inflight.add(work);
    });

    if (answer === undefined || answer === '') return reply.status(200).send();
    if (typeof answer === 'string') return reply.status(200).type('text/plain').send(answer);
    return reply.status(200).send(answer);
  }

  /** Returns why the request is refused, or undefined when it is genuinely from Slack and fresh. */
  private verify(headers: Record<string, string | string[] | undefined>, raw: string): string | undefined {
    const signature = headers['x-slack-signature'];
    const stamp = headers['x-slack-request-timestamp'];
    if (typeof signature !== 'string' || typeof stamp !== 'string') return 'missing Slack signature headers';
    const ts = Number(stamp);
    if (!Number.isInteger(ts)) return 'x-slack-request-timestamp is not a number';
    const nowMs = this.now();
    if (ts - Math.floor(nowMs / 1000) > MAX_SKEW_SECONDS) return 'request timestamp is in the future';
    try {
      verifySlackRequest({
        signingSecret: this.opts.signingSecret,
        body: raw,
        headers: { 'x-slack-signature': signature, 'x-slack-request-timestamp': ts },
        nowMilliseconds: nowMs,
      });
    } catch (err) {
      return /stale/.test((err as Error).message)
        ? 'request timestamp is older than 5 minutes'
        : 'signature mismatch';
    }
    return undefined;
  }
}

function parseBody(contentType: string, raw: string): Record<string, unknown> {
  if (contentType === 'application/x-www-form-urlencoded') {
    const form = parseQuery(raw);
    // Interactivity sends one form field, `payload`, holding JSON; slash commands are plain form fields.
    if (typeof form.payload === 'string') return JSON.parse(form.payload) as Record<string, unknown>;
    return Object.fromEntries(Object.entries(form).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v]));
  }
  const parsed: unknown = JSON.parse(raw);
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
  return parsed as Record<string, unknown>;
}
