// The core's JSON helpers: canonical JSON comes from protocol/ (one definition for digests, signatures and
// the audit chain); jsonbSafe is the core's own concern (what PostgreSQL's jsonb accepts).
import type { Json } from '../protocol/canonical-json.ts';

export { canonicalJson, type Json } from '../protocol/canonical-json.ts';

/**
 * Makes a value safe to store in jsonb and read back identically: drops undefined, turns Dates into ISO
 * strings and replaces NUL characters (which jsonb refuses) with U+FFFD.
 */
export function jsonbSafe(value: unknown): Json {
  return JSON.parse(
    JSON.stringify(value ?? null, (_k, v) => (typeof v === 'string' ? v.replaceAll('\u0000', '\uFFFD') : v)),
  );
}
