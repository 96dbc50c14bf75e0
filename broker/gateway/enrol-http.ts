// The broker's HTTP requests: `POST /enroll` (a token, no client certificate) and `POST /reenroll` (the
// endpoint's current client certificate, no token). Both take a JSON body of at most 32 KiB, declared as
// `application/json`, and at most 20 attempts a minute from one address. A refusal before the service (bad
// body, wrong content type, missing certificate) is audited like the service's own refusals.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { ZodType } from 'zod';
import type { AuditService } from '../../bot/audit/audit-service.ts';
import { describeZodIssues, isAppError } from '../../bot/errors.ts';
import type { Clock, Logger } from '../../bot/ports.ts';
import {
  type EnrolRequest,
  enrolRequest,
  type ReenrolRequest,
  reenrolRequest,
} from '../enrolment/enrolment-service.ts';

export const MAX_ENROL_BODY = 32 * 1024;
const ATTEMPTS_PER_MINUTE = 20;

export interface EnrolHttpDeps {
  clock: Clock;
  logger: Logger;
  audit: AuditService;
  enrol(req: EnrolRequest, sourceIp: string | undefined): Promise<object>;
  reenrol(
    req: ReenrolRequest,
    caller: { fingerprint: string },
    sourceIp: string | undefined,
  ): Promise<object>;
}

function json(res: ServerResponse, status: number, body: object) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/** The SHA-256 fingerprint of a client certificate our CA issued and that is within its validity. */
function trustedClientFingerprint(socket: TLSSocket): string | undefined {
  const peer = socket.getPeerCertificate?.();
  if (!peer?.raw || !socket.authorized) return undefined;
  return peer.fingerprint256.replaceAll(':', '').toLowerCase();
}

export function createEnrolHttp(deps: EnrolHttpDeps) {
  const { logger } = deps;
  const attempts = new Map<string, { windowStart: number; n: number }>();

  const refuse = async (
    res: ServerResponse,
    status: number,
    code: string,
    message: string,
    ip: string,
    details: Record<string, unknown> = {},
  ) => {
    await deps.audit
      .append({
        actorType: 'anonymous',
        actorId: ip,
        action: 'endpoint.enrolment',
        outcome: 'refused',
        details: { reason: code.replace(/^enrol\./, ''), sourceIp: ip, ...details },
      })
      .catch((e) => logger.error({ err: e }, 'audit of a refused enrolment failed'));
    json(res, status, { error: { code, message } });
  };

  function rateLimited(ip: string): boolean {
    const now = deps.clock.now().getTime();
    const a = attempts.get(ip);
    if (a && now - a.windowStart < 60_000 && a.n >= ATTEMPTS_PER_MINUTE) return true;
    if (!a || now - a.windowStart >= 60_000) {
      if (attempts.size > 10_000) attempts.clear();
      attempts.set(ip, { windowStart: now, n: 1 });
    } else a.n++;
    return false;
  }

  /** Reads and checks the body; answers and returns undefined when it is refused. */
  async function body<T>(req: IncomingMessage, res: ServerResponse, ip: string, schema: ZodType<T>) {
    const type = (req.headers['content-type'] ?? '').split(';', 1)[0]!.trim().toLowerCase();
    if (type !== 'application/json') {
      req.resume();
      await refuse(res, 415, 'enrol.content_type', 'send the body as content-type: application/json', ip, {
        contentType: type.slice(0, 100) || null,
      });
      return undefined;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const read = await new Promise<'complete' | 'too_large' | 'failed'>((resolve) => {
      req.on('data', (c: Buffer) => {
        if (size > MAX_ENROL_BODY) return;
        size += c.length;
        if (size > MAX_ENROL_BODY) resolve('too_large');
        else chunks.push(c);
      });
      req.on('end', () => resolve('complete'));
      req.on('error', () => resolve('failed'));
    });
    if (read === 'too_large') {
      // Answer first, then cut the upload off rather than read the rest of it.
      res.once('finish', () => req.destroy());
      await refuse(res, 413, 'enrol.too_large', `the body is limited to ${MAX_ENROL_BODY} bytes`, ip);
    }
    if (read !== 'complete') return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      await refuse(res, 400, 'enrol.bad_json', 'the body must be JSON', ip);
      return undefined;
    }
    const checked = schema.safeParse(parsed);
    if (!checked.success) {
      await refuse(res, 400, 'enrol.invalid', describeZodIssues(checked.error.issues), ip);
      return undefined;
    }
    return checked.data;
  }

  async function run(res: ServerResponse, call: () => Promise<object>) {
    try {
      json(res, 200, await call());
    } catch (e) {
      if (isAppError(e)) return json(res, e.status, { error: { code: e.code, message: e.message } });
      logger.error({ err: e }, 'enrolment failed');
      json(res, 500, { error: { code: 'internal', message: 'enrolment failed; see the broker log' } });
    }
  }

  /** Handles a request for /enroll or /reenroll; returns false for any other path. */
  return async function handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    if (req.url !== '/enroll' && req.url !== '/reenroll') return false;
    const ip = req.socket.remoteAddress ?? 'unknown';
    if (req.method !== 'POST') {
      json(res, 405, { error: { code: 'method', message: 'use POST' } });
      return true;
    }
    if (rateLimited(ip)) {
      req.resume();
      json(res, 429, {
        error: { code: 'enrol.rate_limited', message: 'too many enrolment attempts; wait a minute' },
      });
      return true;
    }
    if (req.url === '/enroll') {
      const input = await body(req, res, ip, enrolRequest);
      if (input) await run(res, () => deps.enrol(input, ip));
      return true;
    }
    const fingerprint = trustedClientFingerprint(req.socket as TLSSocket);
    if (!fingerprint) {
      req.resume();
      await refuse(
        res,
        403,
        'enrol.certificate_unknown',
        "POST /reenroll needs the endpoint's current, unexpired client certificate; without one, ask an " +
          'admin for a re-enrolment token (endpoint reenroll-token <host>) and use POST /enroll',
        ip,
        { tlsError: String((req.socket as TLSSocket).authorizationError ?? '') || null },
      );
      return true;
    }
    const input = await body(req, res, ip, reenrolRequest);
    if (input) await run(res, () => deps.reenrol(input, { fingerprint }, ip));
    return true;
  };
}
