// The broker's one port: HTTPS with optional client certificates. `POST /enroll` is server-authenticated
// only (the agent has no certificate yet), `POST /reenroll` needs the endpoint's current certificate
// (enrol-http.ts); `/agent` upgrades to a WebSocket only for a certificate from our CA that maps to a live,
// unrevoked, unexpired endpoint. Anything else is destroyed before a frame is read.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import type { Clock, Logger } from '../../bot/ports.ts';
import { MAX_WS_PAYLOAD } from '../../protocol/frames.ts';
import type { Pki } from '../pki/pki.ts';
import type { EndpointPresence } from './endpoint-presence.ts';
import { createEnrolHttp, type EnrolHttpDeps } from './enrol-http.ts';
import type { createRefusalAudit } from './refusal-audit.ts';

export interface GatewayDeps extends EnrolHttpDeps {
  pki: Pki;
  clock: Clock;
  logger: Logger;
  /** Fingerprint → endpoint; batched by the broker. */
  lookup(fingerprint: string): Promise<Awaited<ReturnType<EndpointPresence['byFingerprints']>>[number]>;
  refusals: ReturnType<typeof createRefusalAudit>;
  onAgent(
    ws: import('ws').WebSocket,
    ident: { endpointId: string; hostname: string; remoteAddress: string; fingerprint: string },
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

  const enrolHttp = createEnrolHttp(deps);

  server.on('request', async (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/healthz' && req.method === 'GET') return json(res, 200, { ok: true });
    try {
      if (await enrolHttp(req, res)) return;
    } catch (e) {
      logger.error({ err: e }, 'enrolment request failed');
      if (!res.headersSent) json(res, 500, { error: { code: 'internal', message: 'see the broker log' } });
      return;
    }
    json(res, 404, { error: { code: 'not_found', message: 'unknown path' } });
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
        deps.onAgent(ws, { endpointId: ep.id, hostname: ep.hostname, remoteAddress, fingerprint }),
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
