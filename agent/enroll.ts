// Enrolment: fetch and pin the platform CA, make a key pair and CSR, redeem the single-use token over
// server-authenticated TLS, and store what comes back. The private key never leaves the endpoint.
import { createHash, webcrypto } from 'node:crypto';
import { request } from 'node:https';
import { connect } from 'node:tls';
// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata polyfill first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { AgentState } from './agent-state.ts';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

function pem(der: ArrayBuffer | Buffer, label: string) {
  const b64 = Buffer.from(der as ArrayBuffer)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.trim()}\n-----END ${label}-----\n`;
}

/** Reads the CA the broker presents (the last certificate in its chain) without trusting it yet. */
async function fetchBrokerCa(host: string, port: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect(
      { host, port, servername: host.match(/^[\d.]+$/) ? undefined : host, rejectUnauthorized: false },
      () => {
        let cert = sock.getPeerCertificate(true);
        const seen = new Set<string>();
        while (cert.issuerCertificate && cert.issuerCertificate !== cert && !seen.has(cert.fingerprint256)) {
          seen.add(cert.fingerprint256);
          cert = cert.issuerCertificate;
        }
        sock.end();
        resolve(cert.raw);
      },
    );
    sock.on('error', reject);
    sock.setTimeout(30_000, () => sock.destroy(new Error('the broker did not answer within 30 s')));
  });
}

export interface EnrolOptions {
  token: string;
  broker: string;
  hostname: string;
  os: 'windows' | 'linux' | 'macos';
  osVersion: string;
  agentVersion: string;
  log: (msg: string, extra?: object) => void;
}

export async function enrol(state: AgentState, opts: EnrolOptions) {
  const url = new URL(opts.broker);
  if (url.protocol !== 'wss:') throw new Error(`--broker must be a wss:// URL, got "${opts.broker}"`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || 443);
  const [, pin] = opts.token.split('.', 2);

  const caDer = await fetchBrokerCa(host, port);
  const actualPin = createHash('sha256').update(caDer).digest('base64url');
  if (pin) {
    if (pin !== actualPin) {
      throw new Error(
        'the broker presented a CA that does not match the pin in the enrolment token; refusing to enrol',
      );
    }
  } else {
    // No pin in the token: trust on first use, loudly, so an operator can compare the fingerprint.
    opts.log('enrolment token carries no CA pin; trusting the broker CA on first use', { caPin: actualPin });
  }
  const caPem = pem(caDer, 'CERTIFICATE');

  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${opts.hostname}`,
    keys: keys as unknown as CryptoKeyPairLike,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  } as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]);
  const keyPem = pem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');

  const body = JSON.stringify({
    token: opts.token,
    csr: csr.toString('pem'),
    hostname: opts.hostname,
    os: opts.os,
    osVersion: opts.osVersion,
    agentVersion: opts.agentVersion,
  });
  const res = await new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        path: '/enroll',
        method: 'POST',
        ca: caPem,
        servername: host.match(/^[\d.]+$/) ? undefined : host,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c) => chunks.push(c));
        r.on('end', () => {
          try {
            resolve({ status: r.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
          } catch (e) {
            reject(e);
          }
        });
      },
    );
    req.on('error', reject);
    req.setTimeout(30_000, () =>
      req.destroy(new Error('the broker did not answer the enrolment within 30 s')),
    );
    req.end(body);
  });
  if (res.status !== 200) {
    const err = res.json.error as { code?: string; message?: string } | undefined;
    throw new Error(`enrolment refused (${err?.code ?? res.status}): ${err?.message ?? 'no reason given'}`);
  }
  const r = res.json as {
    endpointId: string;
    certificate: string;
    caCertificate: string;
    signingPublicKey: string;
  };
  if (r.caCertificate.replace(/\s/g, '') !== caPem.replace(/\s/g, '')) {
    throw new Error('the broker returned a CA different from the one it presented; refusing to store it');
  }
  state.saveEnrolment({
    identity: {
      endpointId: r.endpointId,
      broker: opts.broker,
      hostname: opts.hostname,
      os: opts.os,
      enrolledAt: new Date().toISOString(),
    },
    keyPem,
    certPem: r.certificate,
    caPem,
    signingPem: r.signingPublicKey,
  });
  return r.endpointId;
}

type CryptoKeyPairLike = unknown;
