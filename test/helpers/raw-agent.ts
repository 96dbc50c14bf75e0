// A hand-driven agent connection with a real enrolled agent's certificate, to send what no good agent sends
// and to see every frame the broker answers with.
import 'reflect-metadata';
import { createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import WebSocket from 'ws';
import { PROTOCOL_VERSION } from '../../protocol/frames.ts';
import { type TestBroker, waitFor } from './agents.ts';

export type Frame = Record<string, unknown>;

/** A fresh ack nonce, as an agent makes one. */
export const nonce = () => randomBytes(16).toString('base64url');

/**
 * Opens /agent with the certificate in `stateDir`. By default it says the hello a good agent says (the
 * enrolled host name, this protocol version) and waits for welcome; `hello: false` sends nothing, and an
 * object replaces fields of the hello.
 */
export async function rawClient(
  tb: TestBroker,
  stateDir: string,
  opts: { hello?: false | Partial<Frame> } = {},
) {
  const f = (n: string) => readFileSync(join(stateDir, n), 'utf8');
  const ws = new WebSocket(`${tb.url}/agent`, {
    key: f('key.pem'),
    cert: f('cert.pem'),
    ca: f('ca.pem'),
    perMessageDeflate: false,
  });
  const frames: Frame[] = [];
  let closed: { code: number; reason: string } | undefined;
  ws.on('message', (d, bin) => {
    if (!bin) frames.push(JSON.parse(d.toString()));
  });
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() };
  });
  ws.on('error', () => {});
  await new Promise((r) => ws.once('open', r));
  const send = (o: unknown) => ws.send(typeof o === 'string' ? o : JSON.stringify(o));
  const next = (pred: (f: Frame) => boolean, what: string) => waitFor(() => frames.find(pred), what);
  const hostname = JSON.parse(f('identity.json')).hostname as string;
  if (opts.hello !== false) {
    send({
      type: 'hello',
      v: PROTOCOL_VERSION,
      hostname,
      os: 'linux',
      osVersion: 'x',
      agentVersion: '1.0.0',
      capabilities: [],
      isolated: false,
      ...opts.hello,
    });
    if (opts.hello === undefined) await next((fr) => fr.type === 'welcome', 'welcome');
  }
  return {
    ws,
    frames,
    send,
    next,
    hostname,
    closed: () => closed,
    signingKey: createPublicKey(f('signing-pub.pem')),
    /** Sends a ping and waits for its pong: every frame sent before it has been handled. */
    async settle() {
      const t = Math.random();
      send({ type: 'ping', t });
      await next((fr) => fr.type === 'pong' && fr.t === t, 'the pong');
    },
  };
}

export type RawClient = Awaited<ReturnType<typeof rawClient>>;

/** A fresh P-256 key and a CSR signed with it, as an agent makes them at enrolment. */
export async function keyAndCsr(cn: string) {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${cn}`,
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  } as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]);
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trim()}\n-----END PRIVATE KEY-----\n`;
  return { keyPem, csrPem: csr.toString('pem') };
}

/** POSTs a body to the broker (`/enroll`, `/reenroll`) as any HTTP client could, and returns its answer. */
export function postToBroker(
  tb: TestBroker,
  path: string,
  body: unknown,
  opts: { contentType?: string; client?: { key: string; cert: string } } = {},
): Promise<{
  status: number;
  json: { error?: { code: string; message: string } } & Record<string, unknown>;
}> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: tb.port,
        path,
        method: 'POST',
        agent: false,
        ca: tb.broker.pki.caPem,
        servername: 'localhost',
        ...opts.client,
        headers: { 'content-type': opts.contentType ?? 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) }),
        );
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}
