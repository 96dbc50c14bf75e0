// Enrolment: fetch and pin the platform CA, make a key pair and CSR, redeem the single-use token over
// server-authenticated TLS, and store what comes back. Re-enrolment with the current key (`reenrolWithKey`)
// makes a new key pair and proves the old one over mutual TLS instead of a token. The private key never
// leaves the endpoint.
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

type Answer = { endpointId: string; certificate: string; caCertificate: string; signingPublicKey: string };

async function newKeyAndCsr(hostname: string) {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${hostname}`,
    keys: keys as unknown as CryptoKeyPairLike,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  } as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]);
  const keyPem = pem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { keyPem, csrPem: csr.toString('pem') };
}

/** POSTs JSON over TLS verified against `caPem`, with the client certificate when `client` is given. */
async function post(
  url: URL,
  path: string,
  caPem: string,
  body: object,
  client?: { key: string; cert: string },
): Promise<Answer> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const text = JSON.stringify(body);
  const res = await new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
    const req = request(
      {
        host,
        port: Number(url.port || 443),
        path,
        method: 'POST',
        agent: false,
        ca: caPem,
        ...client,
        servername: host.match(/^[\d.]+$/) || host.includes(':') ? undefined : host,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
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
    req.end(text);
  });
  if (res.status !== 200) {
    const err = res.json.error as { code?: string; message?: string } | undefined;
    throw new Error(`enrolment refused (${err?.code ?? res.status}): ${err?.message ?? 'no reason given'}`);
  }
  const r = res.json as Answer;
  if (r.caCertificate.replace(/\s/g, '') !== caPem.replace(/\s/g, '')) {
    throw new Error('the broker returned a CA different from the one it presented; refusing to store it');
  }
  return r;
}

function brokerUrl(broker: string): URL {
  const url = new URL(broker);
  if (url.protocol !== 'wss:') throw new Error(`--broker must be a wss:// URL, got "${broker}"`);
  return url;
}

/**
 * Enrols with a token: a new endpoint's token, or a re-enrolment token for this endpoint (then the key,
 * certificate and identity are replaced; the journal and isolation state stay).
 */
export async function enrol(state: AgentState, opts: EnrolOptions) {
  const url = brokerUrl(opts.broker);
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
  const { keyPem, csrPem } = await newKeyAndCsr(opts.hostname);
  const r = await post(url, '/enroll', caPem, {
    token: opts.token,
    csr: csrPem,
    hostname: opts.hostname,
    os: opts.os,
    osVersion: opts.osVersion,
    agentVersion: opts.agentVersion,
  });
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

/**
 * Re-enrols an enrolled agent with a new key pair, proving the current key over mutual TLS (no token). The
 * broker refuses it for a revoked endpoint or an expired certificate; those need a re-enrolment token.
 */
export async function reenrolWithKey(
  state: AgentState,
  opts: Omit<EnrolOptions, 'token' | 'broker' | 'hostname'>,
) {
  const identity = state.identity();
  const tls = state.tls();
  const { keyPem, csrPem } = await newKeyAndCsr(identity.hostname);
  const r = await post(
    brokerUrl(identity.broker),
    '/reenroll',
    tls.ca,
    {
      csr: csrPem,
      hostname: identity.hostname,
      os: opts.os,
      osVersion: opts.osVersion,
      agentVersion: opts.agentVersion,
    },
    { key: tls.key, cert: tls.cert },
  );
  if (r.endpointId !== identity.endpointId) {
    throw new Error(
      `the broker answered for endpoint ${r.endpointId}, not this one (${identity.endpointId})`,
    );
  }
  state.saveEnrolment({
    identity: { ...identity, os: opts.os, enrolledAt: new Date().toISOString() },
    keyPem,
    certPem: r.certificate,
    caPem: tls.ca,
    signingPem: r.signingPublicKey,
  });
  return r.endpointId;
}

type CryptoKeyPairLike = unknown;
