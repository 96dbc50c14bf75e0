// Builds the RequestView a card shows from stored rows. Kept apart from the service so the status command,
// the delivery reporter and the step-up page all describe a request the same way.
import type { DbOrTx } from '../../db/client.ts';
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

/**
 * Views for several rows with three queries in total, plus one presence count per request still awaiting
 * dispatch (a listing of past requests costs nothing extra).
 */
export async function loadViews(db: DbOrTx, rows: RequestRow[]): Promise<RequestView[]> {
  const ids = rows.map((r) => r.id);
  const presence = await Promise.all(rows.map((r) => presenceOf(db, r)));
  const [names, approvals, counts] = await Promise.all([
    userNames(
      db,
      rows.map((r) => r.requesterId),
    ),
    approvalsFor(db, ids),
    deliveryCounts(db, ids),
  ]);
  return rows.map((r, i) =>
    toView(
      r,
      names.get(r.requesterId) ?? 'unknown user',
      approvals.filter((a) => a.requestId === r.id),
      counts.get(r.id),
      presence[i],
    ),
  );
}

export async function loadView(db: DbOrTx, row: RequestRow): Promise<RequestView> {
  const [view] = await loadViews(db, [row]);
  return view!;
}
