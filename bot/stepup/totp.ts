// The one TOTP verification path (RFC 6238 over otplib's functional API). Step-up, enrolment and the tests
// all go through `verifyTotp`, so tolerance and replay rules live in exactly one place.
import { randomBytes } from 'node:crypto';
import { generateURI, ScureBase32Plugin, verify } from 'otplib';

const base32 = new ScureBase32Plugin();

export type TotpAlgorithm = 'sha1' | 'sha256' | 'sha512';

export interface VerifyTotpInput {
  /** The raw shared secret (not base32). */
  secret: Uint8Array;
  code: string;
  /** Unix time in seconds, from the injected clock. */
  epochSeconds: number;
  /** The last accepted time step for this user: this step and earlier ones are refused (each code once). */
  afterTimeStep?: number | null;
  digits?: 6 | 7 | 8;
  algorithm?: TotpAlgorithm;
  period?: number;
}

export interface VerifyTotpResult {
  valid: boolean;
  /** The time step the code matched; store it as the user's last step. */
  timeStep?: number;
}

/**
 * Accepts a code from the current step or one step either side (clock drift), refusing any step at or
 * before `afterTimeStep`. Malformed codes are simply invalid; this never throws on user input.
 */
export async function verifyTotp(input: VerifyTotpInput): Promise<VerifyTotpResult> {
  const { secret, epochSeconds, digits = 6, algorithm = 'sha1', period = 30 } = input;
  const code = String(input.code ?? '').replace(/\s+/g, '');
  if (code.length !== digits || !/^\d+$/.test(code)) return { valid: false };
  const afterTimeStep = input.afterTimeStep ?? undefined;
  // A tolerance of exactly one period in seconds covers steps current-1..current+1 wherever in the step
  // `epochSeconds` falls.
  const maxStep = Math.floor((epochSeconds + period) / period);
  // otplib throws when afterTimeStep is beyond the window; every step would be refused anyway.
  if (afterTimeStep !== undefined && afterTimeStep >= maxStep) return { valid: false };
  try {
    const res = await verify({
      secret,
      token: code,
      epoch: epochSeconds,
      epochTolerance: period,
      afterTimeStep,
      digits,
      algorithm,
      period,
    });
    // The functional API's result type also covers HOTP; a TOTP match always carries timeStep.
    return res.valid && 'timeStep' in res ? { valid: true, timeStep: res.timeStep } : { valid: false };
  } catch {
    return { valid: false };
  }
}

/** 20 random bytes (RFC 6238's SHA-1 key size), base32 for authenticator apps. */
export function generateTotpSecret(): string {
  // 20 bytes is 32 base32 characters: no padding.
  return base32.encode(randomBytes(20));
}

export function decodeTotpSecret(secretBase32: string): Uint8Array {
  return base32.decode(secretBase32);
}

export function encodeTotpSecret(secret: Uint8Array): string {
  return base32.encode(secret);
}

/** The otpauth:// URI an authenticator app scans (as a QR code) to add the account. */
export function otpauthUri(input: { issuer: string; label: string; secret: string }): string {
  return generateURI({ issuer: input.issuer, label: input.label, secret: input.secret });
}
