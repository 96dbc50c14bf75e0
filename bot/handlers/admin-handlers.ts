// Everything in chat that changes who may do what, or opens access: help, role changes, sessions and
// download links.
import { and, desc, eq } from 'drizzle-orm';
import { type endpoints, files, segments } from '../../db/schema.ts';
import type { BotDeps } from '../bot-service.ts';
import { helpText } from '../commands/command-parser.ts';
import type { Command } from '../commands/command-types.ts';
import { Forbidden, NotFound, StepUpRequired } from '../errors.ts';
import type { ChatContext } from '../ports.ts';
import { requireRole } from '../users/user-service.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import { announceSession } from './session-thread.ts';
import { type ChatLocation, encodeSubject } from './stepup-handlers.ts';

type Cmd<K extends Command['kind']> = Extract<Command, { kind: K }>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SHA256 = /^[0-9a-f]{64}$/;

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
  const { chat, db, users, stepup, policy } = deps;

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
      if (cmd.topic) {
        await chat.reply(ctx, helpText(cmd.topic));
        return;
      }
      // The scripts `run` may name are part of what a person can type, so help lists them too.
      const scripts = await deps.scripts.list();
      const names = scripts.map((s) => `${s.name}${s.readOnly ? ' (read-only)' : ''}`);
      await chat.reply(
        ctx,
        `${helpText()}\nScripts for run: ${names.length ? names.join(', ') : 'none yet'}. Type "scripts" for their parameters, "files" for the files put can push.`,
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

    async session(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'session'>) {
      policy.requireRequester(user);
      if (cmd.action === 'stop') {
        await deps.sessions.close({ userId: user.id, hostname: cmd.host });
        await chat.reply(ctx, `Active Response session with ${cmd.host} stopped by ${user.displayName}.`);
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
      const session = await deps.sessions.open({
        userId: user.id,
        hostname: ep.hostname,
        stepUpWindowId: window.id,
        chat: { platform: ctx.identity.platform, channelId: ctx.channelId, threadId: ctx.threadId },
      });
      await announceSession(deps, ctx, session.id, ep.hostname, user.displayName);
    },

    async download(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'download'>) {
      policy.requireRequester(user);
      // By id, or by SHA-256 (the newest evidence with those bytes); only fetched evidence is downloadable.
      const ref = cmd.fileRef.toLowerCase();
      const by = UUID.test(ref) ? eq(files.id, ref) : SHA256.test(ref) ? eq(files.sha256, ref) : undefined;
      const [file] = by
        ? await db
            .select()
            .from(files)
            .where(and(by, eq(files.kind, 'fetched')))
            .orderBy(desc(files.createdAt))
            .limit(1)
        : [];
      if (!file)
        throw new NotFound(
          'file.not_found',
          `No fetched file with id or SHA-256 "${cmd.fileRef.slice(0, 64)}". Copy the id from the fetch result in the thread.`,
        );
      const link = await stepup.createChallenge({ userId: user.id, purpose: 'download', subject: file.id });
      await chat.notifyPrivately(
        ctx,
        `Download ${file.name} (${file.size} bytes, sha256 ${file.sha256}) as a zip with password "infected": ${link.url}`,
      );
    },
  };
}
