// Password hashing with argon2id. Parameters are above OWASP's minimum (m=19 MiB, t=2, p=1): 64 MiB and
// three passes, which still verifies in well under a second on one core.
import argon2 from 'argon2';
import { BadRequest } from '../errors.ts';

export const PASSWORD_MIN = 12;
export const PASSWORD_MAX = 1024;

const PARAMS = { type: argon2.argon2id, memoryCost: 65_536, timeCost: 3, parallelism: 1 } as const;

/** Throws BadRequest 'password.policy' saying what is wrong; never echoes the password. */
export function checkPasswordPolicy(password: unknown): asserts password is string {
  if (typeof password !== 'string') throw new BadRequest('password.policy', 'A password is required.');
  if (password.length < PASSWORD_MIN) {
    throw new BadRequest(
      'password.policy',
      `The password is too short (${password.length} characters); use at least ${PASSWORD_MIN}. A passphrase of a few words works well.`,
    );
  }
  if (password.length > PASSWORD_MAX) {
    throw new BadRequest(
      'password.policy',
      `The password is too long; use at most ${PASSWORD_MAX} characters.`,
    );
  }
}

export async function hashPassword(password: string): Promise<string> {
  checkPasswordPolicy(password);
  return argon2.hash(password, PARAMS);
}

/** True when `password` matches the PHC string. A malformed or foreign hash yields false, never a throw. */
export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  if (typeof hash !== 'string' || typeof password !== 'string') return false;
  if (!hash.startsWith('$argon2') || password.length > PASSWORD_MAX) return false;
  try {
    return await argon2.verify(hash, password);
  } catch {
    return false;
  }
}
