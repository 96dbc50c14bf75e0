// Authenticated encryption for secrets kept at rest (TOTP secrets). AES-256-GCM with a fresh 96-bit IV per
// seal; the output is base64(iv | tag | ciphertext). The AAD binds a sealed value to its owner (the user id),
// so a ciphertext copied into another user's row fails to open instead of silently working there.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Fixed HKDF salt: domain-separates this platform's keys from any other use of the same secret key. */
const HKDF_SALT = Buffer.from('active-response/key-derivation/v1');

/**
 * Derives a 32-byte sub-key for one purpose ('totp-secret', 'token-hash', ...) from the platform secret
 * key with HKDF-SHA256, so no two features ever share a key.
 */
export function deriveKey(secretKey: Buffer, purpose: string): Buffer {
  if (secretKey.length < 32) throw new Error('secret key too short: need at least 32 bytes');
  return Buffer.from(hkdfSync('sha256', secretKey, HKDF_SALT, Buffer.from(purpose, 'utf8'), 32));
}

function checkKey(key: Buffer): void {
  if (key.length !== 32) throw new Error('secret-box key must be 32 bytes (use deriveKey)');
}

export function seal(plaintext: string | Buffer, key: Buffer, aad?: string): string {
  checkKey(key);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  if (aad !== undefined) cipher.setAAD(Buffer.from(aad, 'utf8'));
  const data = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext;
  const ct = Buffer.concat([cipher.update(data), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), ct]).toString('base64');
}

/**
 * Opens a sealed value. Throws when the key or AAD differs or the value was altered; the error never
 * includes the sealed text or the key.
 */
export function open(sealed: string, key: Buffer, aad?: string): Buffer {
  checkKey(key);
  const raw = Buffer.from(sealed, 'base64');
  if (raw.length < IV_BYTES + TAG_BYTES) throw new Error('secret-box: sealed value is truncated');
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
  decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  if (aad !== undefined) decipher.setAAD(Buffer.from(aad, 'utf8'));
  try {
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
  } catch {
    throw new Error('secret-box: cannot open the sealed value (wrong key or owner, or it was altered)');
  }
}
