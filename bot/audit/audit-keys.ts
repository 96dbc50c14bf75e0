// The two audit keys, both kept outside the database:
// - the chain key, an HMAC-SHA-256 key that every audit record's hash is computed with, so rewriting the
//   chain needs this key as well as write access to the table;
// - the checkpoint key, an Ed25519 key that signs the chain's head now and then (audit-checkpoint.ts), so
//   deleting the newest records or rewriting the chain with the chain key is still caught later.
// Both derive from SECRET_KEY by default, so every platform process on the same SECRET_KEY agrees on them
// without another file to distribute. An operator who wants the signing key held apart from SECRET_KEY
// gives a PKCS#8 PEM instead (AUDIT_SIGNING_KEY).
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { deriveKey } from '../crypto/secret-box.ts';

/** The HMAC key of the audit chain: HKDF(SECRET_KEY, 'audit-chain'). */
export function auditChainKey(secretKey: Buffer): Buffer {
  return deriveKey(secretKey, 'audit-chain');
}

/** PKCS#8 DER header of an Ed25519 private key (RFC 8410); the 32-byte seed follows it. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export interface CheckpointKeys {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/** The Ed25519 checkpoint key derived deterministically from SECRET_KEY: HKDF(SECRET_KEY, 'audit-checkpoint'). */
export function checkpointKeysFromSecret(secretKey: Buffer): CheckpointKeys {
  const seed = deriveKey(secretKey, 'audit-checkpoint');
  const privateKey = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/**
 * The checkpoint key from a PKCS#8 PEM (AUDIT_SIGNING_KEY). Throws with what was wrong when it is not an
 * unencrypted Ed25519 private key; the message never includes the key text.
 */
export function checkpointKeysFromPem(pem: string, source: string): CheckpointKeys {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error(
      `${source} is not an unencrypted PKCS#8 PEM private key (create one with: openssl genpkey -algorithm ed25519 -out audit-signing.pem)`,
    );
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new Error(
      `${source} holds a ${privateKey.asymmetricKeyType} key; the audit checkpoints need Ed25519`,
    );
  }
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/** The public key as SPKI PEM, for auditors (`audit public-key`). */
export function publicKeyPem(keys: CheckpointKeys): string {
  return keys.publicKey.export({ format: 'pem', type: 'spki' }).toString();
}
