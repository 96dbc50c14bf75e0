import { generate } from 'otplib';
import { describe, expect, it } from 'vitest';
import { decodeTotpSecret, generateTotpSecret, otpauthUri, verifyTotp } from '../bot/stepup/totp.ts';

// RFC 6238 Appendix B, SHA-1 rows: the seed is the ASCII string "12345678901234567890".
const RFC_SECRET = new TextEncoder().encode('12345678901234567890');
const RFC_VECTORS: [number, string][] = [
  [59, '94287082'],
  [1111111109, '07081804'],
  [1111111111, '14050471'],
  [1234567890, '89005924'],
  [2000000000, '69279037'],
  [20000000000, '65353130'],
];

describe('verifyTotp', () => {
  it.each(RFC_VECTORS)('accepts the RFC 6238 SHA-1 vector at T=%i (%s)', async (t, code) => {
    const res = await verifyTotp({ secret: RFC_SECRET, code, epochSeconds: t, digits: 8 });
    expect(res).toEqual({ valid: true, timeStep: Math.floor(t / 30) });
  });

  it('refuses an RFC vector at a time far from it', async () => {
    const res = await verifyTotp({
      secret: RFC_SECRET,
      code: '94287082',
      epochSeconds: 1111111109,
      digits: 8,
    });
    expect(res.valid).toBe(false);
  });

  const secret = decodeTotpSecret(generateTotpSecret());
  const now = 1_800_000_015; // mid-step
  const step = Math.floor(now / 30);
  const codeAt = (s: number) => generate({ secret, epoch: s * 30 });

  it('accepts codes one step behind and one step ahead (clock drift)', async () => {
    for (const d of [-1, 0, 1]) {
      const res = await verifyTotp({ secret, code: await codeAt(step + d), epochSeconds: now });
      expect(res).toEqual({ valid: true, timeStep: step + d });
    }
  });

  it('accepts ±1 step at the very edges of the current step too', async () => {
    const start = step * 30;
    const end = step * 30 + 29;
    expect((await verifyTotp({ secret, code: await codeAt(step - 1), epochSeconds: start })).valid).toBe(
      true,
    );
    expect((await verifyTotp({ secret, code: await codeAt(step + 1), epochSeconds: end })).valid).toBe(true);
  });

  it('refuses codes two steps behind or ahead', async () => {
    for (const d of [-2, 2]) {
      expect((await verifyTotp({ secret, code: await codeAt(step + d), epochSeconds: now })).valid).toBe(
        false,
      );
    }
  });

  it('refuses a replayed code: a step at or before afterTimeStep', async () => {
    const code = await codeAt(step);
    const first = await verifyTotp({ secret, code, epochSeconds: now, afterTimeStep: step - 1 });
    expect(first).toEqual({ valid: true, timeStep: step });
    expect((await verifyTotp({ secret, code, epochSeconds: now, afterTimeStep: first.timeStep })).valid).toBe(
      false,
    );
    // the previous step's code is refused once a later one was used
    const older = await codeAt(step - 1);
    expect((await verifyTotp({ secret, code: older, epochSeconds: now, afterTimeStep: step })).valid).toBe(
      false,
    );
  });

  it('treats an afterTimeStep beyond the window as "nothing acceptable" instead of throwing', async () => {
    const res = await verifyTotp({
      secret,
      code: await codeAt(step),
      epochSeconds: now,
      afterTimeStep: step + 50,
    });
    expect(res.valid).toBe(false);
  });

  it('refuses malformed codes without throwing', async () => {
    for (const code of ['', '12345', '1234567', 'abcdef', '12 34 5x', '9'.repeat(10_000)]) {
      expect((await verifyTotp({ secret, code, epochSeconds: now })).valid).toBe(false);
    }
  });

  it('tolerates spaces people type inside a code', async () => {
    const code = await codeAt(step);
    const spaced = `${code.slice(0, 3)} ${code.slice(3)}`;
    expect((await verifyTotp({ secret, code: spaced, epochSeconds: now })).valid).toBe(true);
  });
});

describe('TOTP secrets and URIs', () => {
  it('generates 20-byte base32 secrets that differ each time', () => {
    const a = generateTotpSecret();
    const b = generateTotpSecret();
    expect(a).toMatch(/^[A-Z2-7]{32}$/);
    expect(decodeTotpSecret(a)).toHaveLength(20);
    expect(a).not.toBe(b);
  });

  it('builds an otpauth URI an authenticator app can scan', () => {
    const secret = generateTotpSecret();
    const uri = otpauthUri({ issuer: 'Active Response', label: 'alice', secret });
    const url = new URL(uri);
    expect(url.protocol).toBe('otpauth:');
    expect(url.searchParams.get('secret')).toBe(secret);
    expect(url.searchParams.get('issuer')).toBe('Active Response');
    expect(decodeURIComponent(url.pathname)).toContain('alice');
  });
});
