// Turns a validated action command into what a request stores: resolved targets and exclusions, the
// action's parameters (script parameters checked against the script's declared schema), the script bytes'
// hash and the digest over all of it. Reads only; the service writes.
import type { DbOrTx } from '../../db/client.ts';
import { ACTIONS, type ActionName, type ActionParams, type Os } from '../../protocol/actions.ts';
import type { ActionCommand } from '../commands/command-types.ts';
import { BadRequest, describeZodIssues, NotFound } from '../errors.ts';
import {
  countEndpointsInSegments,
  enabledSegments,
  endpointsByHostnames,
  endpointsInSegments,
  libraryFile,
  type ScriptRow,
  scriptByName,
  segmentsByIds,
  segmentsByNames,
} from '../inventory/inventory-dal.ts';
import type { ActionSpec, Candidate } from '../policy/policy-rules.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { ExclusionView, TargetView } from '../ports.ts';
import { checkArgs } from '../scripts/script-params.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import { computeDigest, sha256Hex } from './digest.ts';

export interface BuiltRequest {
  spec: ActionSpec;
  /** The action's parameters exactly as the catalogue defines them: what the digest, card and agent see. */
  params: Record<string, unknown>;
  script: ScriptRow | null;
  scriptSha256: string | null;
  targets: TargetView[];
  exclusions: ExclusionView[];
  digest: string;
}

/** Checks and types a script's `name=value` parameters against its JSON Schema (Ajv, script-params.ts). */
export function checkScriptParams(script: ScriptRow, given: Record<string, string>): Record<string, unknown> {
  return checkArgs(script.name, script.paramsSchema, given);
}

/** What a command selects: named hosts plus the group selectors (see command-types.ts targetFields). */
export interface Selection {
  hosts: string[];
  segments: string[];
  oses?: readonly Os[];
  all?: boolean;
}

/** The most endpoints one request may select: the platform limit for an action group. */
export const PLATFORM_MAX_TARGETS = 100_000;

function tooMany(n: number, max: number): BadRequest {
  return new BadRequest(
    'request.too_many_targets',
    `That selects ${n.toLocaleString('en-US')} endpoints; one request may target at most ${max.toLocaleString('en-US')}. ` +
      'Narrow the selection (segment:<name>, os:<name>, or fewer hosts).',
  );
}

/**
 * Resolves a selection into candidates (known endpoints or named misses). Host names and segments add up;
 * `os:` narrows what segments and `all` select, and on its own means `all` of those OSes. `all` is every
 * Active Response-enabled segment. The size is counted before any endpoint list is loaded, so a selection
 * above `maxTargets` is refused without reading a fleet into memory.
 */
async function resolveCandidates(db: DbOrTx, sel: Selection, maxTargets: number): Promise<Candidate[]> {
  const { hosts, segments: segmentNames } = sel;
  const oses = sel.oses?.length ? sel.oses : undefined;
  const all = sel.all === true || (oses !== undefined && segmentNames.length === 0);
  const named = await segmentsByNames(db, segmentNames);
  const segs = all
    ? [...named, ...(await enabledSegments(db)).filter((e) => !named.some((n) => n.id === e.id))]
    : named;
  const segIds = segs.map((s) => s.id);
  const groupSize = await countEndpointsInSegments(db, segIds, oses);
  if (groupSize > maxTargets) throw tooMany(groupSize, maxTargets);

  const found = await endpointsByHostnames(db, hosts);
  const byName = new Map(found.map((e) => [e.hostname, e]));
  const candidates: Candidate[] = hosts.map((h) => ({ hostname: h, endpoint: byName.get(h) }));
  for (const name of segmentNames) {
    if (!named.some((s) => s.name === name)) {
      candidates.push({ hostname: `segment:${name}`, unresolvedReason: `unknown segment ${name}` });
    }
  }
  const inSegments = await endpointsInSegments(db, segIds, oses);
  const osWords = oses ? ` ${oses.join(' or ')}` : '';
  for (const s of named) {
    if (!inSegments.some((e) => e.segmentId === s.id)) {
      candidates.push({
        hostname: `segment:${s.name}`,
        unresolvedReason: `segment ${s.name} has no enrolled${osWords} endpoints`,
      });
    }
  }
  if (all && !inSegments.length && !named.length) {
    candidates.push({
      hostname: oses ? oses.map((o) => `os:${o}`).join(' ') : 'all',
      unresolvedReason: `no enrolled${osWords} endpoints in a segment with Active Response enabled`,
    });
  }
  for (const e of inSegments) candidates.push({ hostname: e.hostname, endpoint: e });
  // A host also selected by a segment counts once.
  const selected = new Set(candidates.map((c) => c.endpoint?.id ?? c.hostname)).size;
  if (selected > maxTargets) throw tooMany(selected, maxTargets);
  return candidates;
}

/** Builds one action's parameters from the command, typed by the catalogue so a wrong name cannot compile. */
async function paramsFor(
  db: DbOrTx,
  cmd: ActionCommand,
  maxScriptBytes: number,
): Promise<{ params: ActionParams<ActionName>; script: ScriptRow | null }> {
  switch (cmd.kind) {
    case 'isolate':
    case 'unisolate':
      return { params: {} satisfies ActionParams<'isolate'>, script: null };
    case 'processes':
      return {
        params: (cmd.match ? { match: cmd.match } : {}) satisfies ActionParams<'processes'>,
        script: null,
      };
    case 'kill':
      return {
        params: (cmd.pid !== undefined
          ? { pid: cmd.pid }
          : { processName: cmd.processName! }) satisfies ActionParams<'kill'>,
        script: null,
      };
    case 'fetch':
      return { params: { path: cmd.path } satisfies ActionParams<'fetch'>, script: null };
    case 'put': {
      const file = await libraryFile(db, cmd.fileRef);
      if (!file) {
        throw new NotFound(
          'request.unknown_file',
          `No library file "${cmd.fileRef.slice(0, 80)}". Type "files" to list the library, or "upload" to add one.`,
        );
      }
      const params: ActionParams<'put'> = {
        file: { id: file.id, name: file.name, sha256: file.sha256, size: file.size },
        destPath: cmd.destPath,
      };
      return { params, script: null };
    }
    case 'run': {
      const script = await scriptByName(db, cmd.script);
      if (!script)
        throw new NotFound(
          'request.unknown_script',
          `No script called "${cmd.script}" in the library. Type "scripts" to list them.`,
        );
      const bytes = Buffer.byteLength(script.body);
      if (bytes > maxScriptBytes) {
        throw new BadRequest(
          'request.script_too_large',
          `Script ${script.name} is ${bytes} bytes; scripts may be at most ${maxScriptBytes} bytes. Ship large payloads with put.`,
        );
      }
      // The digest binds the bytes actually sent, so hash them here rather than trusting the stored hash.
      const sha = sha256Hex(script.body);
      if (sha !== script.sha256) {
        throw new BadRequest(
          'request.script_integrity',
          `Script ${script.name} does not match its recorded SHA-256; ask an admin to re-save it.`,
        );
      }
      const params: ActionParams<'run'> = {
        script: { name: script.name, version: script.version, sha256: sha },
        args: checkScriptParams(script, cmd.params) as ActionParams<'run'>['args'],
        timeoutSeconds: script.timeoutSeconds,
        outputCapBytes: script.outputCapBytes,
      };
      return { params, script };
    }
  }
}

export async function buildRequest(
  deps: { db: DbOrTx; policy: PolicyService; maxScriptBytes: number; maxTargets: number },
  actor: ResolvedUser,
  cmd: ActionCommand,
): Promise<BuiltRequest> {
  const { db, policy } = deps;
  const { params, script } = await paramsFor(db, cmd, deps.maxScriptBytes);
  // The catalogue is the contract with the agent: what does not parse here would be refused there.
  const checked = ACTIONS[cmd.kind].params.safeParse(params);
  if (!checked.success) {
    throw new BadRequest(
      'request.invalid_params',
      `${cmd.kind}: ${describeZodIssues(checked.error.issues)}.`,
    );
  }
  const selection: Selection =
    'hosts' in cmd
      ? { hosts: cmd.hosts, segments: cmd.segments, oses: cmd.oses, all: cmd.all }
      : { hosts: [cmd.host], segments: [] };
  const spec: ActionSpec = {
    action: cmd.kind,
    script: script
      ? {
          name: script.name,
          readOnly: script.readOnly,
          oses: script.oses,
          minAgentVersion: script.minAgentVersion,
        }
      : undefined,
  };
  const candidates = await resolveCandidates(db, selection, deps.maxTargets);
  const segments = await segmentsByIds(
    db,
    candidates.flatMap((c) => (c.endpoint ? [c.endpoint.segmentId] : [])),
  );
  const { targets, exclusions } = policy.evaluateTargets(actor, spec, candidates, segments);
  const scriptSha256 = script ? sha256Hex(script.body) : null;
  const digest = computeDigest({ action: cmd.kind, params, scriptSha256, targets });
  return { spec, params, script, scriptSha256, targets, exclusions, digest };
}
