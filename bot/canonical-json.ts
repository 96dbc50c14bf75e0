// Canonical JSON: object keys sorted, no whitespace, arrays in order. Used wherever a hash must be
// reproducible from stored data (request digests, the audit chain), so that the order in which a driver
// or jsonb returns keys never changes a hash.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
    return JSON.stringify(value);
  }
  if (typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return JSON.stringify(value.toString());
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  throw new TypeError(`canonicalJson: unsupported type ${typeof value}`);
}

/**
 * Makes a value safe to store in jsonb and read back identically: drops undefined, turns Dates into ISO
 * strings and replaces NUL characters (which jsonb refuses) with U+FFFD.
 */
export function jsonbSafe(value: unknown): Json {
  return JSON.parse(
    JSON.stringify(value ?? null, (_k, v) => (typeof v === 'string' ? v.replaceAll('\u0000', '\uFFFD') : v)),
  );
}
