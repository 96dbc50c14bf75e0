// The agent protocol, version 2: every frame's zod schema, shared by the reference agent and the broker.
// docs/agent-protocol.md describes the same frames for anyone writing an agent in another language. It lives
// in protocol/, which imports nothing of either side, so both import the one definition.
import { z } from 'zod';
import { isSemver } from './semver.ts';

/**
 * Version 2 (signed go-ahead: `ack` carries a nonce, `proceed` is signed over it). A broker of this version
 * speaks version 2 only: a `hello` with another version gets `frame.unsupported_version` and close 4002.
 */
export const PROTOCOL_VERSION = 2;
/**
 * How far past a delivery's signed `expiresAt` an agent's clock may be before it refuses the delivery: room
 * for clocks that disagree by a few minutes, and no more, so a captured delivery cannot be replayed later.
 */
export const DELIVERY_CLOCK_SKEW_MS = 5 * 60_000;
/** Largest JSON (text) frame either side accepts; a bigger one gets an `error` frame and is dropped. */
export const MAX_JSON_FRAME_BYTES = 2 * 1024 * 1024;
/** Largest file chunk in one binary frame (after the 36-byte transfer id). */
export const MAX_CHUNK_BYTES = 64 * 1024;
/** Hard WebSocket limit: a frame above it closes the connection with 1009 (message too big). */
export const MAX_WS_PAYLOAD = 8 * 1024 * 1024;
/** Binary frames start with the transfer id as 36 ASCII characters. */
export const TRANSFER_ID_BYTES = 36;

const uuid = z.uuid();
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex characters');
const size = z
  .number()
  .int()
  .min(0)
  .max(2 ** 53 - 1);

// ---- agent → broker --------------------------------------------------------------------------------

export const helloFrame = z.strictObject({
  type: z.literal('hello'),
  v: z.literal(PROTOCOL_VERSION),
  hostname: z.string().min(1).max(253),
  os: z.enum(['windows', 'linux', 'macos']),
  osVersion: z.string().max(200),
  agentVersion: z
    .string()
    .refine(isSemver, 'expected a semantic version such as 1.2.3 or 1.2.3-rc.1+build.5'),
  capabilities: z.array(z.string().max(64)).max(64),
  isolated: z.boolean(),
});

/** A fresh random value per `ack` (base64url, 16 to 96 bytes); the broker signs its `proceed` over it. */
export const nonceSchema = z
  .string()
  .regex(/^[A-Za-z0-9_-]{22,128}$/, 'expected 22 to 128 base64url characters (at least 16 random bytes)');

export const ackFrame = z.strictObject({ type: z.literal('ack'), id: uuid, nonce: nonceSchema });

export const progressFrame = z.strictObject({
  type: z.literal('progress'),
  id: uuid,
  message: z.string().max(4096),
});

export const resultFrame = z.strictObject({
  type: z.literal('result'),
  id: uuid,
  ok: z.boolean(),
  result: z.record(z.string(), z.unknown()).optional(),
  error: z.string().max(8192).optional(),
});

/** Starts an upload (fetch evidence, or a script's upload_file): binary chunks follow, then `file_end`. */
export const uploadStartFrame = z.strictObject({
  type: z.literal('file_start'),
  transferId: uuid,
  deliveryId: uuid,
  name: z.string().min(1).max(255),
  path: z.string().max(4096).optional(),
  size,
});

export const fileEndFrame = z.strictObject({
  type: z.literal('file_end'),
  transferId: uuid,
  size,
  sha256,
});

export const fileAbortFrame = z.strictObject({
  type: z.literal('file_abort'),
  transferId: uuid,
  reason: z.string().max(1000),
});

/** Asks the broker for a library file (put, or a script's download_file). */
export const fileGetFrame = z.strictObject({
  type: z.literal('file_get'),
  transferId: uuid,
  deliveryId: uuid,
  /** A library file id, name or SHA-256. */
  ref: z.string().min(1).max(255),
});

export const pingFrame = z.strictObject({ type: z.literal('ping'), t: z.number().optional() });

export const agentFrame = z.discriminatedUnion('type', [
  helloFrame,
  ackFrame,
  progressFrame,
  resultFrame,
  uploadStartFrame,
  fileEndFrame,
  fileAbortFrame,
  fileGetFrame,
  pingFrame,
]);
export type AgentFrame = z.infer<typeof agentFrame>;

// ---- broker → agent --------------------------------------------------------------------------------

export const welcomeFrame = z.strictObject({
  type: z.literal('welcome'),
  v: z.literal(PROTOCOL_VERSION),
  endpointId: uuid,
  brokerId: z.string(),
  heartbeatSeconds: z.number().int().positive(),
});

export const deliveryFrame = z.strictObject({
  type: z.literal('delivery'),
  id: uuid,
  seq: z.number().int(),
  /**
   * An action of the catalogue (protocol/actions.ts); kept open so an older agent can refuse a newer action
   * with a result, not a parse error.
   */
  action: z.string().min(1).max(64),
  /** `deliveryPayloadSchema` of protocol/actions.ts; the agent parses it for the action it names. */
  payload: z.record(z.string(), z.unknown()),
  expiresAt: z.string(),
  /** Ed25519 over canonical JSON of { action, endpointId, expiresAt, id, payload } (base64). */
  signature: z.string(),
});

/**
 * The broker's answer to `ack`: run it (`go: true`) or not (cancelled, expired, already final). Signed over
 * `signedProceedFields` with the ack's nonce, so only the platform can say go, and only to that ack.
 */
export const proceedFrame = z.strictObject({
  type: z.literal('proceed'),
  id: uuid,
  go: z.boolean(),
  reason: z.string().optional(),
  nonce: nonceSchema,
  /** Ed25519 over canonical JSON of { endpointId, go, id, nonce, type: 'proceed' } (base64). */
  signature: z.string(),
});

/** Starts a download (answer to `file_get`): binary chunks follow, then `file_end`. */
export const downloadStartFrame = z.strictObject({
  type: z.literal('file_start'),
  transferId: uuid,
  name: z.string(),
  size,
  sha256,
});

export const fileStoredFrame = z.strictObject({
  type: z.literal('file_stored'),
  transferId: uuid,
  fileId: uuid,
  size,
  sha256,
});

export const errorFrame = z.strictObject({
  type: z.literal('error'),
  code: z.string(),
  message: z.string(),
  /** The delivery or transfer id the error is about, when there is one. */
  ref: z.string().optional(),
});

export const pongFrame = z.strictObject({ type: z.literal('pong'), t: z.number().optional() });

export const brokerFrame = z.discriminatedUnion('type', [
  welcomeFrame,
  deliveryFrame,
  proceedFrame,
  downloadStartFrame,
  fileEndFrame,
  fileAbortFrame,
  fileStoredFrame,
  errorFrame,
  pongFrame,
]);
export type BrokerFrame = z.infer<typeof brokerFrame>;

/** The delivery fields the platform signs, in the object the signature's canonical JSON is built from. */
export function signedDeliveryFields(d: {
  id: string;
  endpointId: string;
  action: string;
  payload: Record<string, unknown>;
  expiresAt: string;
}) {
  return { action: d.action, endpointId: d.endpointId, expiresAt: d.expiresAt, id: d.id, payload: d.payload };
}

/**
 * The go-ahead fields the platform signs. `endpointId` is the agent's own, so a go-ahead cannot be replayed
 * to another endpoint, and `nonce` the one the agent put in its `ack`, so it cannot be replayed to another
 * ack. `reason` is informational and not signed.
 */
export function signedProceedFields(p: { endpointId: string; id: string; go: boolean; nonce: string }) {
  return { endpointId: p.endpointId, go: p.go, id: p.id, nonce: p.nonce, type: 'proceed' as const };
}

/**
 * Why an agent refused a delivery, in `result.result.refused` of the failed result it sends instead of
 * running it; the broker audits these as `delivery.refused_by_agent`.
 */
export const AGENT_REFUSALS = ['bad_signature', 'expired', 'bad_proceed'] as const;
export type AgentRefusal = (typeof AGENT_REFUSALS)[number];

/** Splits a binary frame into its transfer id and data. */
export function splitChunk(buf: Buffer): { transferId: string; data: Buffer } | undefined {
  if (buf.length < TRANSFER_ID_BYTES) return undefined;
  const transferId = buf.subarray(0, TRANSFER_ID_BYTES).toString('latin1');
  if (!uuid.safeParse(transferId).success) return undefined;
  return { transferId, data: buf.subarray(TRANSFER_ID_BYTES) };
}

export function makeChunk(transferId: string, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from(transferId, 'latin1'), data]);
}

/** Error codes in `error` frames (docs/agent-protocol.md §6 lists each with when it is sent). */
export const ERROR_CODES = {
  malformed: 'frame.malformed',
  tooLarge: 'frame.too_large',
  unexpected: 'frame.unexpected',
  unsupportedVersion: 'frame.unsupported_version',
  hostnameMismatch: 'frame.hostname_mismatch',
  unknownDelivery: 'delivery.unknown',
  fileNotFound: 'file.not_found',
  fileTooLarge: 'file.too_large',
  fileHashMismatch: 'file.hash_mismatch',
  fileSizeMismatch: 'file.size_mismatch',
  transferUnknown: 'file.transfer_unknown',
  internal: 'internal',
} as const;

/** Close codes the broker uses besides the standard ones (docs/agent-protocol.md §1). */
export const CLOSE_CODES = {
  replaced: 4000,
  hostnameMismatch: 4001,
  unsupportedVersion: 4002,
  certificateInvalid: 4003,
} as const;
