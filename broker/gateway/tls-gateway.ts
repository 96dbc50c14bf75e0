// The broker's one port: HTTPS with optional client certificates. `POST /enroll` is server-authenticated
// only (the agent has no certificate yet); `/agent` upgrades to a WebSocket only for a certificate from our
// CA that maps to a live, unrevoked, unexpired endpoint. Anything else is destroyed before a frame is read.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import { describeZodIssues, isAppError } from '../../bot/errors.ts';
import type { Clock, Logger } from '../../bot/ports.ts';
import { MAX_WS_PAYLOAD } from '../../protocol/frames.ts';
import { type EnrolRequest, enrolRequest } from '../enrolment/enrolment-service.ts';
import type { Pki } from '../pki/pki.ts';
import type { EndpointPresence } from './endpoint-presence.ts';
import type { createRefusalAudit } from './refusal-audit.ts';

const MAX_ENROL_BODY = 32 * 1024;

export interface GatewayDeps {
  pki: Pki;
  clock: Clock;
  logger: Logger;
  /** Fingerprint → endpoint; batched by the broker. */
  lookup(fingerprint: string): ReturnType<EndpointPresence['byFingerprint']>;
  refusals: ReturnType<typeof createRefusalAudit>;
  enrol(req: EnrolRequest, sourceIp: string | undefined): Promise<object>;
  onAgent(
    ws: import('ws').WebSocket,
    ident: { endpointId: string; hostname: string; remoteAddress: string },
  ): void;
}

function json(res: ServerResponse, status: number, body: object) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

export function createTlsGateway(deps: GatewayDeps): { server: Server; wss: WebSocketServer } {
  const { pki, logger } = deps;
  const server = createServer({
    key: pki.serverKeyPem,
    cert: pki.serverCertChainPem,
    ca: pki.caPem,
    requestCert: true,
    // Decided per path below: /enroll must work without a client certificate.
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_WS_PAYLOAD });

  const enrolAttempts = new Map<string, { windowStart: number; n: number }>();

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const ip = req.socket.remoteAddress ?? 'unknown';
    if (req.url === '/healthz' && req.method === 'GET') return json(res, 200, { ok: true });
    if (req.url !== '/enroll')
      return json(res, 404, { error: { code: 'not_found', message: 'unknown path' } });
    if (req.method !== 'POST') return json(res, 405, { error: { code: 'method', message: 'use POST' } });
    const now = deps.clock.now().getTime();
    const a = enrolAttempts.get(ip);
    if (a && now - a.windowStart < 60_000 && a.n >= 20) {
      return json(res, 429, {
        error: { code: 'enrol.rate_limited', message: 'too many enrolment attempts; wait a minute' },
      });
    }
    if (!a || now - a.windowStart >= 60_000) enrolAttempts.set(ip, { windowStart: now, n: 1 });
    else a.n++;
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_ENROL_BODY) {
        json(res, 413, {
          error: { code: 'enrol.too_large', message: `the body is limited to ${MAX_ENROL_BODY} bytes` },
        });
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', async () => {
      if (size > MAX_ENROL_BODY) return;
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return json(res, 400, { error: { code: 'enrol.bad_json', message: 'the body must be JSON' } });
      }
      const parsed = enrolRequest.safeParse(body);
      if (!parsed.success) {
        return json(res, 400, {
          error: { code: 'enrol.invalid', message: describeZodIssues(parsed.error.issues) },
        });
      }
      try {
        json(res, 200, await deps.enrol(parsed.data, ip));
      } catch (e) {
        if (isAppError(e)) return json(res, e.status, { error: { code: e.code, message: e.message } });
        logger.error({ err: e }, 'enrolment failed');
        json(res, 500, { error: { code: 'internal', message: 'enrolment failed; see the broker log' } });
      }
    });
  });

  server.on('upgrade', async (req: IncomingMessage, socket: TLSSocket, head: Buffer) => {
    const remoteAddress = socket.remoteAddress ?? 'unknown';
    const refuse = async (reason: string, details: Record<string, unknown> = {}) => {
      socket.destroy();
      await deps.refusals.refused(reason, remoteAddress, details);
    };
    try {
      if (req.url !== '/agent') return await refuse('unknown_path', { path: (req.url ?? '').slice(0, 100) });
      const peer = socket.getPeerCertificate();
      if (!peer?.raw) return await refuse('no_certificate');
      if (!socket.authorized) {
        const err = String(socket.authorizationError ?? '');
        return await refuse(err === 'CERT_HAS_EXPIRED' ? 'expired' : 'untrusted_certificate', {
          tlsError: err,
        });
      }
      const fingerprint = peer.fingerprint256.replaceAll(':', '').toLowerCase();
      const ep = await deps.lookup(fingerprint);
      if (!ep) return await refuse('unknown_certificate', { fingerprint });
      if (ep.revokedAt) return await refuse('revoked', { endpointId: ep.id, hostname: ep.hostname });
      if (ep.certNotAfter && ep.certNotAfter.getTime() <= deps.clock.now().getTime()) {
        return await refuse('expired', { endpointId: ep.id, hostname: ep.hostname });
      }
      wss.handleUpgrade(req, socket, head, (ws) =>
        deps.onAgent(ws, { endpointId: ep.id, hostname: ep.hostname, remoteAddress }),
      );
    } catch (e) {
      logger.error({ err: e }, 'agent upgrade failed');
      socket.destroy();
    }
  });

  server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
    void deps.refusals.refused('tls_handshake_failed', socket.remoteAddress ?? 'unknown', {
      tlsError: err.code ?? err.message,
    });
  });

  return { server, wss };
}
