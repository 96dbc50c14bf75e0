// The request digest: what an approval and a requester's step-up bind to. It covers the action, its
// parameters, the SHA-256 of the exact script bytes and the targets, so changing any of them (a script
// edited in the library after approval, one more host) yields a different digest and a new request.
import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.ts';

export interface DigestInput {
  action: string;
  params: Record<string, unknown>;
  /** SHA-256 of the script bytes, when the caller already has it. */
  scriptSha256?: string | null;
  /** The exact script bytes; hashed here when given (and must then agree with scriptSha256). */
  scriptBytes?: Uint8Array | string | null;
  targets: { endpointId: string; hostname: string }[];
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** SHA-256 hex over the canonical JSON of action, params, script hash and targets sorted by endpointId. */
export function computeDigest(input: DigestInput): string {
  return sha256Hex(canonicalDigestForm(input));
}

/**
 * The exact text the digest is the SHA-256 of, so an approver (or anyone auditing later) can check what the
 * digest covers: `sha256sum` of this text gives the digest.
 */
export function canonicalDigestForm(input: DigestInput): string {
  let scriptSha = input.scriptSha256 ?? null;
  if (input.scriptBytes !== undefined && input.scriptBytes !== null) {
    const fromBytes = sha256Hex(input.scriptBytes);
    if (scriptSha && scriptSha !== fromBytes) {
      throw new Error('computeDigest: scriptSha256 does not match scriptBytes');
    }
    scriptSha = fromBytes;
  }
  const targets = [...input.targets]
    .map((t) => ({ endpointId: t.endpointId, hostname: t.hostname }))
    .sort((a, b) => (a.endpointId < b.endpointId ? -1 : a.endpointId > b.endpointId ? 1 : 0));
  return canonicalJson({
    v: 1,
    action: input.action,
    params: input.params,
    scriptSha256: scriptSha,
    targets,
  });
}
