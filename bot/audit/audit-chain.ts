// Pure functions of the audit hash chain. Each record's hash is SHA-256 over the canonical JSON of the
// record (including the previous record's hash), so changing, removing or reordering any stored row breaks
// every link after it.
import { createHash } from 'node:crypto';
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

export function hashRecord(r: ChainRecord): string {
  const body = canonicalJson({
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
  return createHash('sha256').update(body).digest('hex');
}

export type VerifyResult =
  | { ok: true; count: number; lastHash: string }
  | { ok: false; count: number; brokenAt: number; problem: string };

/**
 * Walks records in seq order. `expectedPrev` is the hash the first record should point to (GENESIS_HASH when
 * starting from the beginning). Reports the first broken link.
 */
export function verifyChunk(
  records: Iterable<ChainRecord & { hash: string }>,
  state: { expectedSeq: number; expectedPrev: string; count: number },
): { ok: true } | { ok: false; brokenAt: number; problem: string } {
  for (const r of records) {
    if (r.seq !== state.expectedSeq) {
      return {
        ok: false,
        brokenAt: state.expectedSeq,
        problem: `record ${state.expectedSeq} is missing (next is ${r.seq})`,
      };
    }
    if (r.prevHash !== state.expectedPrev) {
      return {
        ok: false,
        brokenAt: r.seq,
        problem: `record ${r.seq} does not point to the hash of record ${r.seq - 1}`,
      };
    }
    if (hashRecord(r) !== r.hash) {
      return {
        ok: false,
        brokenAt: r.seq,
        problem: `record ${r.seq} was changed after it was written (hash mismatch)`,
      };
    }
    state.expectedPrev = r.hash;
    state.expectedSeq = r.seq + 1;
    state.count++;
  }
  return { ok: true };
}
