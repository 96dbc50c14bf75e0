// Builds the RequestView a card shows from stored rows. Kept apart from the service so the status command,
// the delivery reporter and the step-up page all describe a request the same way.
import { inArray } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionGroups } from '../../db/schema.ts';
import { countOnline } from '../inventory/inventory-dal.ts';
import type { ExclusionView, RequestView, TargetView } from '../ports.ts';
import {
  type ApprovalWithName,
  approvalsFor,
  deliveryCounts,
  type RequestRow,
  userNames,
} from './request-dal.ts';

export function toView(
  row: RequestRow,
  requesterName: string,
  approvals: ApprovalWithName[],
  progress?: Record<string, number>,
  presence?: RequestView['presence'],
  waves?: RequestView['waves'],
): RequestView {
  return {
    id: row.id,
    ref: row.ref,
    action: row.action,
    params: (row.params ?? {}) as Record<string, unknown>,
    scriptName: row.scriptName,
    scriptSha256: row.scriptSha256,
    targets: row.targets as TargetView[],
    exclusions: row.exclusions as ExclusionView[],
    reason: row.reason,
    caseId: row.caseId,
    note: row.note,
    requester: { id: row.requesterId, displayName: requesterName, external: row.requesterExternal },
    state: row.state,
    digest: row.digest,
    approvalsRequired: row.approvalsRequired,
    inHouseApprovalRequired: row.inHouseApprovalRequired,
    approvals: approvals.map((a) => ({
      approverId: a.approverId,
      approverName: a.approverName,
      approverExternal: a.approverExternal,
      decision: a.decision,
      reason: a.reason,
      digest: a.digest,
      at: a.createdAt,
    })),
    approvalExpiresAt: row.approvalExpiresAt,
    deliveryTtlSeconds: row.deliveryTtlSeconds,
    presence,
    waves,
    progress: progress && Object.keys(progress).length ? progress : undefined,
    createdAt: row.createdAt,
  };
}

/** States in which a request has no deliveries yet, so the card previews who would run it now. */
const PREVIEW_STATES: readonly string[] = ['requested', 'pending_approval', 'approved'];

/** Online and offline target counts of a request not yet dispatched, read live from presence. */
async function presenceOf(db: DbOrTx, row: RequestRow): Promise<RequestView['presence']> {
  if (!PREVIEW_STATES.includes(row.state)) return undefined;
  const ids = (row.targets as TargetView[]).map((t) => t.endpointId);
  const online = await countOnline(db, ids);
  return { online, offline: ids.length - online };
}

/** The staged waves of the action groups among `ids` (one query; none when no request is a group). */
async function wavesOf(db: DbOrTx, rows: RequestRow[]): Promise<Map<string, RequestView['waves']>> {
  const groupIds = rows.filter((r) => (r.targets as unknown[]).length > 1).map((r) => r.id);
  if (!groupIds.length) return new Map();
  const found = await db
    .select({
      requestId: actionGroups.requestId,
      canary: actionGroups.canary,
      ratePerMinute: actionGroups.ratePerMinute,
      haltAtPercent: actionGroups.haltAtPercent,
    })
    .from(actionGroups)
    .where(inArray(actionGroups.requestId, groupIds));
  return new Map(found.map(({ requestId, ...w }) => [requestId, w]));
}

/**
 * Views for several rows with four queries in total, plus one presence count per request still awaiting
 * dispatch (a listing of past requests costs nothing extra).
 */
export async function loadViews(db: DbOrTx, rows: RequestRow[]): Promise<RequestView[]> {
  const ids = rows.map((r) => r.id);
  const presence = await Promise.all(rows.map((r) => presenceOf(db, r)));
  const [names, approvals, counts, waves] = await Promise.all([
    userNames(
      db,
      rows.map((r) => r.requesterId),
    ),
    approvalsFor(db, ids),
    deliveryCounts(db, ids),
    wavesOf(db, rows),
  ]);
  return rows.map((r, i) =>
    toView(
      r,
      names.get(r.requesterId) ?? 'unknown user',
      approvals.filter((a) => a.requestId === r.id),
      counts.get(r.id),
      presence[i],
      waves.get(r.id),
    ),
  );
}

export async function loadView(db: DbOrTx, row: RequestRow): Promise<RequestView> {
  const [view] = await loadViews(db, [row]);
  return view!;
}
