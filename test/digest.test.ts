import { describe, expect, it } from 'vitest';
import { computeDigest, sha256Hex } from '../bot/requests/digest.ts';

const targets = [
  { endpointId: '22222222-0000-4000-8000-000000000000', hostname: 'web-02' },
  { endpointId: '11111111-0000-4000-8000-000000000000', hostname: 'web-01' },
];
const base = { action: 'run', params: { since: '24h', limit: 5 }, scriptBytes: 'print("hi")\n', targets };

describe('request digest', () => {
  it('is a SHA-256 hex string and stable for the same input', () => {
    const d = computeDigest(base);
    expect(d).toMatch(/^[0-9a-f]{64}$/);
    expect(computeDigest({ ...base })).toBe(d);
  });

  it('does not depend on target order or parameter key order', () => {
    expect(computeDigest({ ...base, targets: [...targets].reverse() })).toBe(computeDigest(base));
    expect(computeDigest({ ...base, params: { limit: 5, since: '24h' } })).toBe(computeDigest(base));
  });

  it('agrees whether given the script bytes or their SHA-256', () => {
    const { scriptBytes, ...rest } = base;
    expect(computeDigest({ ...rest, scriptSha256: sha256Hex(scriptBytes) })).toBe(computeDigest(base));
  });

  it('changes when anything changes: action, a parameter, one byte of the script, a target', () => {
    const d = computeDigest(base);
    const variants = [
      { ...base, action: 'fetch' },
      { ...base, params: { since: '25h', limit: 5 } },
      { ...base, params: { since: '24h', limit: '5' } },
      { ...base, scriptBytes: 'print("hi") \n' },
      { ...base, scriptBytes: null },
      { ...base, targets: targets.slice(0, 1) },
      {
        ...base,
        targets: [...targets, { endpointId: '33333333-0000-4000-8000-000000000000', hostname: 'web-03' }],
      },
      { ...base, targets: [targets[0]!, { ...targets[1]!, hostname: 'web-01b' }] },
    ];
    const digests = new Set(variants.map((v) => computeDigest(v)));
    expect(digests.size).toBe(variants.length);
    expect(digests.has(d)).toBe(false);
  });

  it('refuses a script hash that does not match the bytes given', () => {
    expect(() => computeDigest({ ...base, scriptSha256: sha256Hex('other') })).toThrow(/does not match/);
  });
});
