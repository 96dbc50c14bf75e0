// Signed checkpoints of the audit chain: now and then the head (sequence number and hash) is signed with
// the Ed25519 checkpoint key and kept outside the database: appended to a file under DATA_DIR and posted to
// the audit channel. The keyed hash stops a rewrite by someone who has the database but not SECRET_KEY; the
// checkpoints catch what the chain alone cannot: the newest records deleted (the head falls behind a
// checkpoint), or a rewrite by someone who had the chain key (a checkpoint no longer matches its record).
import { type KeyObject, sign, verify } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from '../canonical-json.ts';

/** One checkpoint, as one JSON line of `DATA_DIR/audit-checkpoints.jsonl` and in the channel post. */
export interface AuditCheckpoint {
  /** Sequence number of the chain's head when it was signed. */
  seq: number;
  /** That record's hash. */
  hash: string;
  /** When it was signed, ISO 8601. */
  at: string;
  /** Ed25519 signature over `signedBytes(seq, hash, at)`, base64. */
  sig: string;
}

export const checkpointSchema = z
  .object({
    seq: z.number().int().positive(),
    hash: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters'),
    at: z.iso.datetime(),
    sig: z.base64(),
  })
  .strict();

/**
 * What is signed. The fixed prefix keeps a checkpoint signature from ever being valid for anything else the
 * same key might sign, and canonical JSON makes the bytes independent of key order in the stored line.
 */
function signedBytes(cp: Pick<AuditCheckpoint, 'seq' | 'hash' | 'at'>): Buffer {
  return Buffer.from(
    `active-response/audit-checkpoint/v1\n${canonicalJson({ seq: cp.seq, hash: cp.hash, at: cp.at })}`,
    'utf8',
  );
}

export function signCheckpoint(
  head: { seq: number; hash: string },
  at: Date,
  privateKey: KeyObject,
): AuditCheckpoint {
  const body = { seq: head.seq, hash: head.hash, at: at.toISOString() };
  return { ...body, sig: sign(null, signedBytes(body), privateKey).toString('base64') };
}

export function checkpointSignatureValid(cp: AuditCheckpoint, publicKey: KeyObject): boolean {
  try {
    return verify(null, signedBytes(cp), publicKey, Buffer.from(cp.sig, 'base64'));
  } catch {
    return false;
  }
}

/** One line of the checkpoint file: a checkpoint, or why the line is not one. Lines count from 1. */
export type CheckpointLogEntry =
  | { line: number; checkpoint: AuditCheckpoint }
  | { line: number; error: string; seq?: number };

/** Parses the checkpoint file's text. Blank lines are skipped; a damaged line becomes an entry with `error`. */
export function parseCheckpointLog(text: string): CheckpointLogEntry[] {
  const out: CheckpointLogEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (!raw) continue;
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      out.push({ line: i + 1, error: 'is not JSON' });
      continue;
    }
    const parsed = checkpointSchema.safeParse(json);
    out.push(
      parsed.success
        ? { line: i + 1, checkpoint: parsed.data }
        : {
            line: i + 1,
            error: `is not a checkpoint (${parsed.error.issues.map((x) => `${x.path.join('.') || 'line'} ${x.message}`).join('; ')})`,
            // A line whose seq still parses lets the report name the record it claimed to vouch for.
            ...(typeof (json as { seq?: unknown })?.seq === 'number'
              ? { seq: (json as { seq: number }).seq }
              : {}),
          },
    );
  }
  return out;
}

/** Where checkpoints are kept outside the database (a file under DATA_DIR in production). */
export interface CheckpointLog {
  /** Appends one checkpoint durably (written and synced before it resolves). */
  append(cp: AuditCheckpoint): Promise<void>;
  /** Every line, in file order; an absent file is an empty log. */
  readAll(): Promise<CheckpointLogEntry[]>;
}

/**
 * Somewhere a checkpoint is also posted so that it exists beyond this host: the Slack audit channel, and the
 * Teams one when that adapter exists. A post that fails is retried with the next checkpoint.
 */
export interface AuditAnchorSink {
  /** Short name for logs, e.g. 'slack'. */
  readonly name: string;
  postCheckpoint(cp: AuditCheckpoint): Promise<void>;
}
