// `audit verify`: the chain walked with the chain key, checked against the signed checkpoints kept outside
// the database. Every problem found names the first sequence number it affects; the report leads with the
// earliest one.
//
// What each check catches, for someone who can write the database:
// - a record edited in place, or a chain re-hashed without the key     → the keyed HMAC fails (REWRITTEN)
// - a record deleted from the middle                                   → a gap in seq (MISSING)
// - the newest records deleted                                         → head behind a checkpoint (TRUNCATED)
// - a rewrite re-hashed with the right key                             → a checkpoint stops matching (REWRITTEN)
// - a checkpoint line forged or edited in the file                     → its signature fails (FORGED CHECKPOINT)
// - an old unkeyed chain replaced wholesale                            → no checkpoint vouches for it (UNANCHORED)
import type { KeyObject } from 'node:crypto';
import type { Json } from '../canonical-json.ts';
import { type ChainRecord, type ChunkResult, newWalkState, verifyChunk } from './audit-chain.ts';
import {
  type AuditCheckpoint,
  type CheckpointLogEntry,
  checkpointSignatureValid,
} from './audit-checkpoint.ts';

export type ProblemKind =
  | 'rewritten'
  | 'missing'
  | 'truncated'
  | 'forged_checkpoint'
  | 'damaged_checkpoint'
  | 'unanchored';

export interface AuditProblem {
  kind: ProblemKind;
  /** The first sequence number the problem affects. */
  firstSeq: number;
  message: string;
}

export type VerifyResult =
  | {
      ok: true;
      count: number;
      lastHash: string;
      /** Valid checkpoints seen, and the newest of them. */
      checkpoints: number;
      lastCheckpoint?: AuditCheckpoint;
    }
  | {
      ok: false;
      /** Records before `brokenAt` that verify. */
      count: number;
      /** The earliest affected sequence number (the headline problem's). */
      brokenAt: number;
      kind: ProblemKind;
      problem: string;
      /** Every problem found, earliest first; the first is the headline. */
      problems: AuditProblem[];
    };

export interface CheckpointAnchors {
  entries: CheckpointLogEntry[];
  publicKey: KeyObject;
}

export interface VerifyDeps {
  chainKey: Buffer;
  /** Records with seq >= fromSeq, in seq order, at most `limit`. */
  readPage(
    fromSeq: number,
    limit: number,
  ): Promise<(Omit<ChainRecord, 'details'> & { details: unknown; hash: string })[]>;
  /** The highest seq stored (0 when empty). */
  headSeq(): Promise<number>;
  /** Without anchors only the chain is walked, and records from before keyed hashing cannot be vouched for. */
  anchors?: CheckpointAnchors;
  pageSize?: number;
}

/** Sorts out the checkpoint file: valid checkpoints by seq, and a problem for each forged or damaged line. */
function checkCheckpoints(anchors: CheckpointAnchors | undefined) {
  const bySeq = new Map<number, (AuditCheckpoint & { line: number })[]>();
  const problems: AuditProblem[] = [];
  let newest: AuditCheckpoint | undefined;
  let count = 0;
  let lastGoodSeq = 0;
  for (const entry of anchors?.entries ?? []) {
    if ('error' in entry) {
      // A line that no longer parses vouches for nothing; records after the last intact checkpoint before it
      // lose that anchor.
      const firstSeq = entry.seq ?? lastGoodSeq + 1;
      problems.push({
        kind: 'damaged_checkpoint',
        firstSeq,
        message: `line ${entry.line} of the checkpoint file ${entry.error}: it was altered or damaged`,
      });
      continue;
    }
    const cp = entry.checkpoint;
    if (!checkpointSignatureValid(cp, anchors!.publicKey)) {
      problems.push({
        kind: 'forged_checkpoint',
        firstSeq: cp.seq,
        message: `the checkpoint for record ${cp.seq} on line ${entry.line} of the checkpoint file (dated ${cp.at}) has a bad signature: it was forged or altered`,
      });
      continue;
    }
    count++;
    lastGoodSeq = cp.seq;
    bySeq.set(cp.seq, [...(bySeq.get(cp.seq) ?? []), { ...cp, line: entry.line }]);
    if (!newest || cp.seq > newest.seq) newest = cp;
  }
  return { bySeq, problems, newest, count };
}

export async function verifyAuditChain(deps: VerifyDeps): Promise<VerifyResult> {
  const pageSize = deps.pageSize ?? 2000;
  const { bySeq, problems: fileProblems, newest, count: checkpointCount } = checkCheckpoints(deps.anchors);
  const problems: AuditProblem[] = [];
  const state = newWalkState();
  /** Seq of the newest checkpoint that matched its record so far. */
  let lastMatched = 0;

  const matchCheckpoints = (r: { seq: number; hash: string }): ChunkResult => {
    for (const cp of bySeq.get(r.seq) ?? []) {
      if (cp.hash !== r.hash) {
        // The records verify with the key, yet differ from what was signed: rewritten by someone holding the
        // chain key. Which record changed first is unknowable; everything after the last match is suspect.
        return {
          ok: false,
          kind: 'rewritten',
          brokenAt: lastMatched + 1,
          problem: `record ${r.seq} does not match the checkpoint signed for it at ${cp.at} (line ${cp.line} of the checkpoint file): the chain was rewritten after it was signed, somewhere from record ${lastMatched + 1} on`,
        };
      }
    }
    if (bySeq.has(r.seq)) lastMatched = r.seq;
    return { ok: true };
  };

  let walked = true;
  for (;;) {
    const page = await deps.readPage(state.expectedSeq, pageSize);
    const res = verifyChunk(
      page.map((r) => ({ ...r, details: r.details as Json })),
      state,
      deps.chainKey,
      matchCheckpoints,
    );
    if (!res.ok) {
      problems.push({ kind: res.kind, firstSeq: res.brokenAt, message: res.problem });
      walked = false;
      break;
    }
    if (page.length < pageSize) break;
  }

  const head = walked ? state.expectedSeq - 1 : await deps.headSeq();
  if (newest && newest.seq > head) {
    problems.push({
      kind: 'truncated',
      firstSeq: head + 1,
      message: `the newest record is ${head} but the checkpoint signed at ${newest.at} covers record ${newest.seq}: records ${head + 1} to ${newest.seq} were deleted`,
    });
  }

  // Plain-hash records from before keyed hashing are trusted only through a signed checkpoint after them:
  // without one, anyone could have written them. (When the walk stopped early, the checkpoint that would
  // vouch for them may lie beyond the break, which is reported anyway.)
  if (state.lastLegacySeq > 0 && lastMatched <= state.lastLegacySeq && walked) {
    const from = lastMatched + 1;
    problems.push({
      kind: 'unanchored',
      firstSeq: from,
      message: `records ${from} to ${state.lastLegacySeq} carry plain SHA-256 hashes (no audit key) and no signed checkpoint after them vouches for them, so anyone with the database could have written them`,
    });
  }

  problems.push(...fileProblems);
  if (problems.length === 0) {
    return {
      ok: true,
      count: state.count,
      lastHash: state.expectedPrev,
      checkpoints: checkpointCount,
      lastCheckpoint: newest,
    };
  }
  // Earliest first; on a tie the order found (the chain's own finding before the file's) is kept.
  const sorted = problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => a.p.firstSeq - b.p.firstSeq || a.i - b.i)
    .map((x) => x.p);
  const first = sorted[0]!;
  return {
    ok: false,
    count: Math.min(state.count, first.firstSeq - 1),
    brokenAt: first.firstSeq,
    kind: first.kind,
    problem: first.message,
    problems: sorted,
  };
}
