// The platform's own certificate authority. Keys live under DATA_DIR/pki (private keys mode 0600) unless a
// directory is given by config. The CA (ECDSA P-256) signs the broker's server certificate and the agents'
// client certificates; a separate Ed25519 key signs deliveries so an agent can check where an action came
// from even if the TLS layer were ever terminated elsewhere.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  webcrypto,
} from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata polyfill first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { canonicalJson } from '../../bot/canonical-json.ts';
import type { signedProceedFields } from '../../protocol/frames.ts';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto;
x509.cryptoProvider.set(crypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN_ALG = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface PkiOptions {
  /** Directory for ca.key, ca.pem, server.*, signing.key. */
  dir: string;
  /** Names the server certificate must carry (BROKER_PUBLIC_HOST); localhost and 127.0.0.1 are added. */
  serverNames: string[];
  /** Client certificate lifetime in days (default 365). */
  clientCertDays?: number;
}

export interface IssuedCert {
  pem: string;
  fingerprint: string;
  serial: string;
  notAfter: Date;
}

/** SHA-256 of a certificate's DER, lower-case hex: how an agent is identified. */
export function certFingerprint(pemOrDer: string | Buffer): string {
  const der = typeof pemOrDer === 'string' ? new x509.X509Certificate(pemOrDer).rawData : pemOrDer;
  return createHash('sha256')
    .update(Buffer.from(der as ArrayBuffer))
    .digest('hex');
}

/** The CA certificate's pin as an agent receives it in an enrolment token: base64url SHA-256 of its DER. */
export function caPin(caPem: string): string {
  return Buffer.from(certFingerprint(caPem), 'hex').toString('base64url');
}

function writeSecret(file: string, text: string) {
  // 'wx' so two brokers starting on one shared directory never overwrite each other's freshly made key.
  writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.trim()}\n-----END ${label}-----\n`;
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return toPem(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function importEcKey(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' });
  return crypto.subtle.importKey('pkcs8', der, EC, false, ['sign']);
}

function serialHex(): string {
  // Positive 128-bit serial: the first nibble stays below 8 so DER never reads it as negative.
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = b[0]! & 0x7f;
  return Buffer.from(b).toString('hex');
}

/** Reads the CA certificate PEM from a PKI directory, for the CLI that prints enrolment tokens. */
export function readCaCertificatePem(dir: string): string | undefined {
  const f = join(dir, 'ca.pem');
  return existsSync(f) ? readFileSync(f, 'utf8') : undefined;
}

export async function loadOrCreatePki(opts: PkiOptions) {
  const { dir } = opts;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => join(dir, n);

  if (!existsSync(f('ca.pem'))) {
    const keys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = new Date();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serialHex(),
      name: 'CN=Active Response Platform CA',
      notBefore: new Date(now.getTime() - 3600_000),
      notAfter: new Date(now.getTime() + 10 * 365 * 86400_000),
      signingAlgorithm: SIGN_ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    try {
      writeSecret(f('ca.key'), await exportKeyPem(keys.privateKey));
      writeFileSync(f('ca.pem'), `${cert.toString('pem').trim()}\n`, { flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // Another broker won the race and is writing ca.pem right after its ca.key: wait for it.
      for (let i = 0; i < 100 && !existsSync(f('ca.pem')); i++) await new Promise((r) => setTimeout(r, 50));
    }
  }
  if (!existsSync(f('signing.key'))) {
    const { privateKey } = generateKeyPairSync('ed25519');
    try {
      writeSecret(f('signing.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }

  const caPem = readFileSync(f('ca.pem'), 'utf8');
  const caCert = new x509.X509Certificate(caPem);
  const caKey = await importEcKey(readFileSync(f('ca.key'), 'utf8'));
  const signingKey = createPrivateKey(readFileSync(f('signing.key'), 'utf8'));
  const signingPublicKeyPem = createPublicKey(signingKey).export({ format: 'pem', type: 'spki' }) as string;

  async function issue(params: {
    subject: string;
    publicKey: CryptoKey | x509.PublicKey;
    notBefore: Date;
    notAfter: Date;
    server: boolean;
    names?: string[];
  }): Promise<IssuedCert> {
    const serial = serialHex();
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(
        [params.server ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ];
    if (params.names?.length) {
      extensions.push(
        new x509.SubjectAlternativeNameExtension(
          params.names.map((n) => ({ type: isIP(n) ? ('ip' as const) : ('dns' as const), value: n })),
          false,
        ),
      );
    }
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: params.subject,
      issuer: caCert.subject,
      notBefore: params.notBefore,
      notAfter: params.notAfter,
      signingAlgorithm: SIGN_ALG,
      publicKey: params.publicKey,
      signingKey: caKey,
      extensions,
    });
    const pem = `${cert.toString('pem').trim()}\n`;
    return { pem, fingerprint: certFingerprint(pem), serial, notAfter: cert.notAfter };
  }

  // Each broker process issues itself a fresh server certificate in memory at start: nothing to rotate
  // or race over when several brokers share one PKI directory, and agents trust the CA, not the leaf.
  const names = [...new Set([...opts.serverNames, 'localhost', '127.0.0.1'])].sort();
  const serverKeys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const startedAt = new Date();
  const serverCert = await issue({
    subject: `CN=${names[0]}`,
    publicKey: serverKeys.publicKey,
    notBefore: new Date(startedAt.getTime() - 3600_000),
    notAfter: new Date(startedAt.getTime() + 365 * 86400_000),
    server: true,
    names,
  });
  const serverKeyPem = await exportKeyPem(serverKeys.privateKey);

  const clientDays = opts.clientCertDays ?? 365;

  return {
    caPem,
    caPin: caPin(caPem),
    serverKeyPem,
    /** Server certificate followed by the CA, so a pinning agent can see the issuer during enrolment. */
    serverCertChainPem: serverCert.pem + caPem,
    signingPublicKeyPem,

    /**
     * Issues a client certificate for a CSR after checking its self-signature. The subject is the endpoint
     * id; whatever name the CSR asked for is ignored. `notBefore`/`notAfter` override the lifetime.
     */
    async issueClientCert(
      csrPem: string,
      endpointId: string,
      now: Date,
      validity?: { notBefore?: Date; notAfter?: Date },
    ): Promise<IssuedCert> {
      const csr = new x509.Pkcs10CertificateRequest(csrPem);
      if (!(await csr.verify())) throw new Error('the certificate request signature does not verify');
      return issue({
        subject: `CN=${endpointId}`,
        publicKey: csr.publicKey,
        notBefore: validity?.notBefore ?? new Date(now.getTime() - 3600_000),
        notAfter: validity?.notAfter ?? new Date(now.getTime() + clientDays * 86400_000),
        server: false,
      });
    },

    /** Ed25519 signature (base64) over the canonical JSON of a delivery's signed fields. */
    signDelivery(fields: Record<string, unknown>): string {
      return sign(null, Buffer.from(canonicalJson(fields)), signingKey).toString('base64');
    },

    /** Ed25519 signature (base64) over the canonical JSON of a go-ahead's signed fields. */
    signProceed(fields: ReturnType<typeof signedProceedFields>): string {
      return sign(null, Buffer.from(canonicalJson(fields)), signingKey).toString('base64');
    },
  };
}

export type Pki = Awaited<ReturnType<typeof loadOrCreatePki>>;
