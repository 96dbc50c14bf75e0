// Reading what happened, in chat: `status` (a request with every fact and each endpoint's state), `queue`
// (an endpoint's pending deliveries), `audit` (recent records in words) and `history` (a link to the page).
// A member of an external organisation reads only their own organisation's requests and records.
import { and, asc, eq, inArray } from 'drizzle-orm';
import { actionRequests, deliveries, endpoints, users } from '../../db/schema.ts';
import type { AuditRecord } from '../audit/audit-service.ts';
import type { BotDeps } from '../bot-service.ts';
import type { Command } from '../commands/command-types.ts';
import { REF_PATTERN } from '../commands/command-types.ts';
import { NotFound } from '../errors.ts';
import { isGroup } from '../groups/group-progress.ts';
import type { ChatContext } from '../ports.ts';
import { describeAction, formatProgress, plural, requestFacts } from '../render/summary.ts';
import { requireVisibleRequest, visibleOrgOf } from '../requests/request-access.ts';
import type { ResolvedUser } from '../users/user-types.ts';

type Cmd<K extends Command['kind']> = Extract<Command, { kind: K }>;

const ENDPOINT_STATES_SHOWN = 20;

export function createInspectHandlers(deps: BotDeps) {
  const { chat, db, users: userService, stepup, audit, requests, policy } = deps;

  /** Names for the ids audit records carry: users by username, endpoints by host name, requests by ref. */
  async function namesFor(records: AuditRecord[]) {
    const ids = [...new Set(records.flatMap((r) => (r.actorId ? [r.actorId] : [])))].filter((id) =>
      /^[0-9a-f-]{36}$/.test(id),
    );
    const reqIds = [...new Set(records.flatMap((r) => (r.requestId ? [r.requestId] : [])))];
    const [u, e, q] = await Promise.all([
      ids.length
        ? db.select({ id: users.id, name: users.username }).from(users).where(inArray(users.id, ids))
        : [],
      ids.length
        ? db
            .select({ id: endpoints.id, name: endpoints.hostname })
            .from(endpoints)
            .where(inArray(endpoints.id, ids))
        : [],
      reqIds.length
        ? db
            .select({ id: actionRequests.id, name: actionRequests.ref })
            .from(actionRequests)
            .where(inArray(actionRequests.id, reqIds))
        : [],
    ]);
    return new Map([...u, ...e, ...q].map((r) => [r.id, r.name]));
  }

  return {
    async status(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'status'>) {
      policy.requireRequester(user);
      if (cmd.ref) {
        const v = await requests.getView(cmd.ref);
        await requireVisibleRequest(db, user, v);
        const lines = [`${v.ref}: ${describeAction(v)} — ${v.state.replace('_', ' ')}`];
        for (const f of requestFacts(v, 20)) {
          if (f.label === 'Action') continue;
          lines.push(`  ${f.label}: ${f.value.replaceAll('\n', '\n    ')}`);
        }
        for (const a of v.approvals) {
          lines.push(
            `  ${a.decision === 'approve' ? 'Approved' : 'Denied'} by ${a.approverName}${a.reason ? `: ${a.reason}` : ''}`,
          );
        }
        const live = isGroup(v) && v.progress ? await deps.progress.text(v.id) : null;
        if (live) lines.push(`  ${live.replaceAll('\n', '\n  ')}`);
        else if (v.progress) lines.push(`  Deliveries: ${formatProgress(v.progress)}`);
        const rows = await db
          .select({ host: endpoints.hostname, state: deliveries.state, error: deliveries.error })
          .from(deliveries)
          .innerJoin(endpoints, eq(endpoints.id, deliveries.endpointId))
          .where(eq(deliveries.requestId, v.id))
          .orderBy(asc(endpoints.hostname))
          .limit(ENDPOINT_STATES_SHOWN + 1);
        for (const r of rows.slice(0, ENDPOINT_STATES_SHOWN)) {
          lines.push(`    ${r.host}: ${r.state}${r.error ? ` — ${r.error.slice(0, 200)}` : ''}`);
        }
        if (rows.length > ENDPOINT_STATES_SHOWN) lines.push('    … (more endpoints; see the history page)');
        await chat.reply(ctx, lines.join('\n'));
        return;
      }
      const mine = await requests.listForUser(user.id, 10);
      await chat.reply(
        ctx,
        mine.length
          ? [
              'Your recent requests (status <ref> for the details):',
              ...mine.map((v) => `  ${v.ref} ${describeAction(v)}: ${v.state.replace('_', ' ')}`),
            ].join('\n')
          : 'You have no requests yet.',
      );
    },

    async queue(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'queue'>) {
      policy.requireRequester(user);
      const [ep] = await db.select().from(endpoints).where(eq(endpoints.hostname, cmd.host.toLowerCase()));
      if (!ep) throw new NotFound('queue.unknown_endpoint', `No endpoint called "${cmd.host}" is enrolled.`);
      const org = visibleOrgOf(user);
      const rows = await db
        .select({
          id: deliveries.id,
          state: deliveries.state,
          action: deliveries.action,
          expiresAt: deliveries.expiresAt,
          ref: actionRequests.ref,
        })
        .from(deliveries)
        .innerJoin(actionRequests, eq(actionRequests.id, deliveries.requestId))
        .innerJoin(users, eq(users.id, actionRequests.requesterId))
        .where(
          and(
            eq(deliveries.endpointId, ep.id),
            inArray(deliveries.state, ['queued', 'sent', 'acknowledged']),
            org ? eq(users.orgId, org) : undefined,
          ),
        )
        .orderBy(asc(deliveries.seq))
        .limit(50);
      const name = ep.reportedHostname ?? ep.hostname;
      const presence = ep.brokerId
        ? 'online'
        : `offline${ep.lastSeenAt ? ` since ${ep.lastSeenAt.toISOString()}` : ''}`;
      await chat.reply(
        ctx,
        rows.length
          ? [
              `${name} (${presence}) has ${plural(rows.length, 'pending delivery', 'pending deliveries')}:`,
              ...rows.map(
                (r) => `  ${r.id} ${r.ref} ${r.action} ${r.state}, expires ${r.expiresAt.toISOString()}`,
              ),
              'Cancel one with: cancel <delivery-id>',
            ].join('\n')
          : `${name} (${presence}) has nothing queued.`,
      );
    },

    async audit(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'audit'>) {
      // Reading the audit log needs the Active Response role; an external organisation's people read only
      // the records of their own organisation's requests and users.
      policy.requireRequester(user);
      const org = visibleOrgOf(user);
      let label = 'everything';
      let records: AuditRecord[];
      const subject = cmd.subject;
      if (!subject) records = await audit.list({ limit: 20, visibleToOrg: org });
      else if (REF_PATTERN.test(subject.toUpperCase())) {
        const v = await requests.getView(subject.toUpperCase());
        await requireVisibleRequest(db, user, v);
        label = v.ref;
        records = await audit.list({ requestId: v.id, limit: 50, visibleToOrg: org });
      } else {
        const [ep] = await db.select().from(endpoints).where(eq(endpoints.hostname, subject.toLowerCase()));
        const u = ep ? null : await userService.getUser(subject).catch(() => null);
        if (ep) {
          label = ep.reportedHostname ?? ep.hostname;
          records = await audit.list({ endpointId: ep.id, limit: 20, visibleToOrg: org });
        } else if (u && (!org || u.orgId === org)) {
          label = u.username;
          records = await audit.list({ actorId: u.id, limit: 20, visibleToOrg: org });
        } else {
          throw new NotFound(
            'audit.unknown_subject',
            `"${subject}" is neither an enrolled endpoint, a user nor a request ref (R-XXXXXX).`,
          );
        }
      }
      await audit.append({
        actorType: 'user',
        actorId: user.id,
        action: 'audit.read',
        outcome: 'ok',
        details: { subject: label },
      });
      const names = await namesFor(records);
      const lines = records.map((r) => {
        const who = r.actorId ? ` by ${names.get(r.actorId) ?? r.actorId}` : '';
        const req = r.requestId ? ` ${names.get(r.requestId) ?? ''}`.trimEnd() : '';
        const time = r.at.toISOString().replace('T', ' ').slice(0, 19);
        return `  #${r.seq} ${time} ${r.action}${req} ${r.outcome}${who}`;
      });
      await chat.reply(
        ctx,
        [
          `Latest audit records for ${label}${lines.length ? '' : ': none'}:`,
          ...lines,
          'The history page (type "history") shows every record with its details.',
        ].join('\n'),
      );
    },

    async history(ctx: ChatContext, user: ResolvedUser) {
      policy.requireRequester(user);
      const link = await stepup.createChallenge({ userId: user.id, purpose: 'history', subject: 'history' });
      await chat.notifyPrivately(
        ctx,
        `Session history and audit log: ${link.url}\nConfirm with your password and authenticator code. The link is single-use and expires at ${link.expiresAt.toISOString()}.`,
      );
    },
  };
}
