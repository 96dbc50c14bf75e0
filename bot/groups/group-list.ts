// The action groups list, for `groups` in chat and the Action Groups web page: newest first, filtered by
// group state and by who scheduled it, paged; each with its action or script and version, targets, who
// scheduled and approved it, case and note. An external organisation's members see their own groups only.
import { and, count, desc, eq, type SQL } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { actionGroups, actionRequests, type GroupState, users } from '../../db/schema.ts';
import { approvalsFor } from '../requests/request-dal.ts';

export interface GroupListItem {
  id: string;
  ref: string;
  action: string;
  script?: { name: string; version?: number };
  targets: number;
  excluded: number;
  state: GroupState;
  requestState: string;
  requester: string;
  approvers: string[];
  caseId: string | null;
  note: string | null;
  createdAt: Date;
}

export interface GroupListQuery {
  requesterId?: string;
  state?: GroupState;
  /** An external viewer's organisation: only groups its members asked for. */
  visibleToOrg?: string;
  limit: number;
  offset?: number;
}

export async function listGroups(
  db: DbOrTx,
  q: GroupListQuery,
): Promise<{ items: GroupListItem[]; total: number }> {
  const where: SQL[] = [];
  if (q.requesterId) where.push(eq(actionRequests.requesterId, q.requesterId));
  if (q.state) where.push(eq(actionGroups.state, q.state));
  if (q.visibleToOrg) where.push(eq(users.orgId, q.visibleToOrg));
  const cond = where.length ? and(...where) : undefined;
  const base = () =>
    db
      .select({ g: actionGroups, r: actionRequests, requester: users.displayName })
      .from(actionGroups)
      .innerJoin(actionRequests, eq(actionRequests.id, actionGroups.requestId))
      .innerJoin(users, eq(users.id, actionRequests.requesterId));
  const rows = await base()
    .where(cond)
    .orderBy(desc(actionRequests.createdAt), desc(actionRequests.ref))
    .limit(q.limit)
    .offset(q.offset ?? 0);
  const [total] = await db
    .select({ n: count() })
    .from(actionGroups)
    .innerJoin(actionRequests, eq(actionRequests.id, actionGroups.requestId))
    .innerJoin(users, eq(users.id, actionRequests.requesterId))
    .where(cond);
  const ids = rows.map((x) => x.r.id);
  const approvals = ids.length ? await approvalsFor(db, ids) : [];
  const items = rows.map(({ g, r, requester }): GroupListItem => {
    const s = (r.params as { script?: { name?: string; version?: number } }).script;
    return {
      id: r.id,
      ref: r.ref,
      action: r.action,
      script: r.scriptName ? { name: r.scriptName, version: s?.version } : undefined,
      targets: (r.targets as unknown[]).length,
      excluded: (r.exclusions as unknown[]).length,
      state: g.state,
      requestState: r.state,
      requester,
      approvers: approvals
        .filter((a) => a.requestId === r.id && a.decision === 'approve')
        .map((a) => a.approverName),
      caseId: r.caseId,
      note: r.note,
      createdAt: r.createdAt,
    };
  });
  return { items, total: Number(total?.n ?? 0) };
}

/** "run collect v2" / "isolate" */
export function groupAction(i: Pick<GroupListItem, 'action' | 'script'>): string {
  return i.script ? `run ${i.script.name}${i.script.version ? ` v${i.script.version}` : ''}` : i.action;
}
