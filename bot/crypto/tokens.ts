// Single-use link tokens. Only a keyed hash of a token is stored, so a database dump does not yield live
// links, and the key (derived from the platform secret key) stops anyone precomputing hashes.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { deriveKey } from './secret-box.ts';

/** 128 random bits, base64url (22 characters). */
export function newToken(): string {
  return randomBytes(16).toString('base64url');
}

/** HMAC-SHA256 (hex) of a token under the 'token-hash' sub-key of the platform secret key. */
export function hashToken(token: string, secretKey: Buffer): string {
  return createHmac('sha256', deriveKey(secretKey, 'token-hash')).update(token, 'utf8').digest('hex');
}

const compareKey = randomBytes(32);

/**
 * Constant-time string comparison. Both sides are HMACed first so the comparison runs on equal-length
 * digests and neither the content nor the length of the secret leaks through timing.
 */
export function safeEqual(a: string, b: string): boolean {
  const da = createHmac('sha256', compareKey).update(a, 'utf8').digest();
  const db = createHmac('sha256', compareKey).update(b, 'utf8').digest();
  return timingSafeEqual(da, db);
}
