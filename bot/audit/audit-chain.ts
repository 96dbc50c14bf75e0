// Pure functions of the audit hash chain. Each record's hash is HMAC-SHA-256, under a key derived from
// SECRET_KEY (never stored in the database), over the canonical JSON of the record (including the previous
// record's hash). Changing, removing or reordering any stored row breaks every link after it, and because
// the hash is keyed, someone holding only the database cannot re-hash the rows after a change to make the
// chain consistent again.
//
// Chains written before the hash was keyed used plain SHA-256 over the same canonical JSON. Such "legacy"
// records are recognised only as an unbroken prefix of the chain, before the first keyed record; a plain
// hash anywhere after a keyed record is exactly what a re-hashing attacker without the key produces, so it
// is reported as a rewrite. The prefix itself is only trusted when a signed checkpoint past it vouches for it
// (see audit-verify.ts), because anyone can compute a plain hash.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { canonicalJson, type Json } from '../canonical-json.ts';

export const GENESIS_HASH = '0'.repeat(64);

export interface ChainRecord {
  seq: number;
  at: Date;
  actorType: string;
  actorId: string | null;
  action: string;
  outcome: string;
  requestId: string | null;
  endpointId: string | null;
  details: Json;
  prevHash: string;
}

function canonicalRecord(r: ChainRecord): string {
  return canonicalJson({
    seq: r.seq,
    at: r.at.toISOString(),
    actorType: r.actorType,
    actorId: r.actorId,
    action: r.action,
    outcome: r.outcome,
    requestId: r.requestId,
    endpointId: r.endpointId,
    details: r.details,
    prevHash: r.prevHash,
  });
}

/** The record's keyed hash: HMAC-SHA-256 under the chain key (auditChainKey), hex. */
export function hashRecord(r: ChainRecord, chainKey: Buffer): string {
  return createHmac('sha256', chainKey).update(canonicalRecord(r)).digest('hex');
}

/** The unkeyed hash records had before keyed hashing. Only for recognising old chains; never written. */
export function legacyHashRecord(r: ChainRecord): string {
  return createHash('sha256').update(canonicalRecord(r)).digest('hex');
}

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

export type HashKind = 'keyed' | 'legacy' | 'neither';

/** Which hash a stored record carries: the keyed HMAC, the old plain SHA-256, or neither (it was altered). */
export function hashKind(r: ChainRecord & { hash: string }, chainKey: Buffer): HashKind {
  if (sameHex(hashRecord(r, chainKey), r.hash)) return 'keyed';
  if (sameHex(legacyHashRecord(r), r.hash)) return 'legacy';
  return 'neither';
}

export interface WalkState {
  expectedSeq: number;
  expectedPrev: string;
  /** Records verified so far. */
  count: number;
  /** True once a keyed record was seen: from then on a plain hash is a rewrite. */
  keyedSeen: boolean;
  /** Seq of the last legacy record of the prefix (0 when there is none). */
  lastLegacySeq: number;
}

export function newWalkState(): WalkState {
  return { expectedSeq: 1, expectedPrev: GENESIS_HASH, count: 0, keyedSeen: false, lastLegacySeq: 0 };
}

/** How a chain breaks: a record is gone from the middle, or a record's contents or hash were changed. */
export type BreakKind = 'missing' | 'rewritten';

export type ChunkResult = { ok: true } | { ok: false; kind: BreakKind; brokenAt: number; problem: string };

/**
 * Walks records in seq order from `state` (start with newWalkState()) and reports the first broken link.
 * `onRecord` sees every record that verified, in order (the caller compares it with checkpoints); returning
 * a failure from it stops the walk there.
 */
export function verifyChunk(
  records: Iterable<ChainRecord & { hash: string }>,
  state: WalkState,
  chainKey: Buffer,
  onRecord?: (r: { seq: number; hash: string }) => ChunkResult,
): ChunkResult {
  for (const r of records) {
    if (r.seq !== state.expectedSeq) {
      return {
        ok: false,
        kind: 'missing',
        brokenAt: state.expectedSeq,
        problem: `record ${state.expectedSeq} is missing (next is ${r.seq})`,
      };
    }
    if (r.prevHash !== state.expectedPrev) {
      return {
        ok: false,
        kind: 'rewritten',
        brokenAt: r.seq,
        problem: `record ${r.seq} does not point to the hash of record ${r.seq - 1}`,
      };
    }
    const kind = hashKind(r, chainKey);
    if (kind === 'neither') {
      return {
        ok: false,
        kind: 'rewritten',
        brokenAt: r.seq,
        problem: `record ${r.seq} was changed after it was written (hash mismatch: not the keyed HMAC of its contents)`,
      };
    }
    if (kind === 'legacy') {
      if (state.keyedSeen) {
        return {
          ok: false,
          kind: 'rewritten',
          brokenAt: r.seq,
          problem: `record ${r.seq} was changed after it was written: it carries a plain SHA-256 where a keyed HMAC belongs, so it was re-hashed without the audit key`,
        };
      }
      state.lastLegacySeq = r.seq;
    } else {
      state.keyedSeen = true;
    }
    if (onRecord) {
      const res = onRecord(r);
      if (!res.ok) return res;
    }
    state.expectedPrev = r.hash;
    state.expectedSeq = r.seq + 1;
    state.count++;
  }
  return { ok: true };
}
