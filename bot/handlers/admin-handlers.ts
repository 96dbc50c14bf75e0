// Everything in chat that is not an endpoint action: help, status, queue listings, role changes, audit
// reads, sessions and download links.
import { and, asc, eq, inArray } from 'drizzle-orm';
import { actionRequests, deliveries, endpoints, files, segments } from '../../db/schema.ts';
import type { BotDeps } from '../bot-service.ts';
import { helpText } from '../commands/command-parser.ts';
import type { Command } from '../commands/command-types.ts';
import { Forbidden, NotFound, StepUpRequired } from '../errors.ts';
import type { ChatContext } from '../ports.ts';
import { describeAction, formatProgress } from '../render/summary.ts';
import { requireRole } from '../users/user-service.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import { type ChatLocation, encodeSubject } from './stepup-handlers.ts';

type Cmd<K extends Command['kind']> = Extract<Command, { kind: K }>;

function locationOf(ctx: ChatContext): ChatLocation {
  return {
    platform: ctx.identity.platform,
    tenantId: ctx.identity.tenantId,
    chatUserId: ctx.identity.chatUserId,
    channelId: ctx.channelId,
    threadId: ctx.threadId,
  };
}

export function createAdminHandlers(deps: BotDeps) {
  const { chat, db, users, stepup, audit, requests, policy } = deps;

  /** A session needs the endpoint in a segment with Active Response on, and a certificate not revoked. */
  async function requireSessionTarget(ep: typeof endpoints.$inferSelect) {
    const [seg] = await db.select().from(segments).where(eq(segments.id, ep.segmentId));
    if (ep.revokedAt)
      throw new Forbidden(
        'session.endpoint_revoked',
        `${ep.hostname}'s certificate is revoked; re-enrol it first.`,
      );
    if (!seg?.activeResponseEnabled) {
      throw new Forbidden(
        'policy.segment_disabled',
        `${ep.hostname} is in segment ${seg?.name ?? '?'}, which does not have Active Response enabled.`,
      );
    }
  }

  return {
    async help(ctx: ChatContext, cmd: Cmd<'help'>) {
      await chat.reply(ctx, helpText(cmd.topic));
    },

    async status(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'status'>) {
      policy.requireRequester(user);
      if (cmd.ref) {
        const v = await requests.getView(cmd.ref);
        const progress = v.progress ? ` · ${formatProgress(v.progress)}` : '';
        await chat.reply(
          ctx,
          `${v.ref} ${describeAction(v)}: ${v.state}${progress} (requested by ${v.requester.displayName})`,
        );
        return;
      }
      const mine = await requests.listForUser(user.id, 10);
      await chat.reply(
        ctx,
        mine.length
          ? ['Your recent requests:', ...mine.map((v) => `  ${v.ref} ${describeAction(v)}: ${v.state}`)].join(
              '\n',
            )
          : 'You have no requests yet.',
      );
    },

    async queue(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'queue'>) {
      policy.requireRequester(user);
      const [ep] = await db.select().from(endpoints).where(eq(endpoints.hostname, cmd.host.toLowerCase()));
      if (!ep) throw new NotFound('queue.unknown_endpoint', `No endpoint called "${cmd.host}" is enrolled.`);
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
        .where(
          and(
            eq(deliveries.endpointId, ep.id),
            inArray(deliveries.state, ['queued', 'sent', 'acknowledged']),
          ),
        )
        .orderBy(asc(deliveries.seq))
        .limit(50);
      const presence = ep.brokerId
        ? 'online'
        : `offline${ep.lastSeenAt ? ` since ${ep.lastSeenAt.toISOString()}` : ''}`;
      await chat.reply(
        ctx,
        rows.length
          ? [
              `${ep.hostname} (${presence}) has ${rows.length} pending deliveries:`,
              ...rows.map(
                (r) => `  ${r.id} ${r.ref} ${r.action} ${r.state}, expires ${r.expiresAt.toISOString()}`,
              ),
              'Cancel one with: cancel <delivery-id>',
            ].join('\n')
          : `${ep.hostname} (${presence}) has nothing queued.`,
      );
    },

    async changeRole(ctx: ChatContext, actor: ResolvedUser, cmd: Cmd<'grant'> | Cmd<'revoke'>) {
      requireRole(actor, 'admin');
      const target = await users.getUser(cmd.username);
      const window = await stepup.activeWindow(actor.id);
      const change = { actorId: actor.id, userId: target.id, role: cmd.role };
      if (!window) {
        const link = await stepup.createChallenge({
          userId: actor.id,
          purpose: 'grant',
          subject: encodeSubject(cmd.kind, {
            userId: target.id,
            username: target.username,
            role: cmd.role,
            at: locationOf(ctx),
          }),
        });
        throw new StepUpRequired(
          `Changing roles needs a fresh step-up (${cmd.kind} ${cmd.role} for ${target.username}).`,
          link.url,
        );
      }
      if (cmd.kind === 'grant') await users.grantRole(change);
      else await users.revokeRole(change);
      await chat.reply(
        ctx,
        `${cmd.kind === 'grant' ? 'Granted' : 'Revoked'} ${cmd.role} ${cmd.kind === 'grant' ? 'to' : 'from'} ${target.username}.`,
      );
    },

    async audit(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'audit'>) {
      // Reading the audit log needs the Active Response role.
      policy.requireRequester(user);
      let ids: { userId?: string; endpointId?: string } = {};
      let label = 'everything';
      if (cmd.subject) {
        const [ep] = await db
          .select()
          .from(endpoints)
          .where(eq(endpoints.hostname, cmd.subject.toLowerCase()));
        if (ep) {
          ids = { endpointId: ep.id };
          label = ep.hostname;
        } else {
          const u = await users.getUser(cmd.subject).catch(() => null);
          if (!u)
            throw new NotFound(
              'audit.unknown_subject',
              `"${cmd.subject}" is neither an enrolled endpoint nor a user.`,
            );
          ids = { userId: u.id };
          label = u.username;
        }
      }
      const records = cmd.subject ? await audit.listForSubject(ids, 20) : await audit.list({ limit: 20 });
      await audit.append({
        actorType: 'user',
        actorId: user.id,
        action: 'audit.read',
        outcome: 'ok',
        details: { subject: label },
      });
      const lines = records.map(
        (r) =>
          `  #${r.seq} ${r.at.toISOString()} ${r.action} ${r.outcome}${r.actorId ? ` by ${r.actorId.slice(0, 8)}` : ''}`,
      );
      await chat.reply(ctx, [`Latest audit records for ${label}:`, ...lines].join('\n'));
    },

    async session(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'session'>) {
      policy.requireRequester(user);
      if (cmd.action === 'stop') {
        await deps.sessions.close({ userId: user.id, hostname: cmd.host });
        await chat.reply(ctx, `Session with ${cmd.host} stopped.`);
        return;
      }
      const ep = await deps.sessions.findEndpoint(cmd.host);
      await requireSessionTarget(ep);
      const window = await stepup.activeWindow(user.id);
      if (!window) {
        const link = await stepup.createChallenge({
          userId: user.id,
          purpose: 'session',
          subject: encodeSubject('session', { hostname: ep.hostname, at: locationOf(ctx) }),
        });
        throw new StepUpRequired(`Opening a session with ${ep.hostname} needs a fresh step-up.`, link.url);
      }
      await deps.sessions.open({
        userId: user.id,
        hostname: ep.hostname,
        stepUpWindowId: window.id,
        chat: { platform: ctx.identity.platform, channelId: ctx.channelId, threadId: ctx.threadId },
      });
      await chat.reply(ctx, `Active Response session with ${ep.hostname} started by ${user.displayName}.`);
    },

    async download(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'download'>) {
      policy.requireRequester(user);
      const [file] = await db.select().from(files).where(eq(files.id, cmd.fileRef));
      if (!file)
        throw new NotFound(
          'file.not_found',
          `No file with id ${cmd.fileRef}. Copy the id from the fetch result.`,
        );
      const link = await stepup.createChallenge({ userId: user.id, purpose: 'download', subject: file.id });
      await chat.notifyPrivately(
        ctx,
        `Download ${file.name} (${file.size} bytes, sha256 ${file.sha256}) as a zip with password "infected": ${link.url}`,
      );
    },
  };
}
