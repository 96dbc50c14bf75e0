// Everything in chat that changes who may do what, or opens access: help, role changes, sessions and
// download links. Each needs a step-up opened for that purpose; role changes one bound to the very change.
import { and, desc, eq } from 'drizzle-orm';
import { files } from '../../db/schema.ts';
import type { BotDeps } from '../bot-service.ts';
import { helpText } from '../commands/command-parser.ts';
import type { Command } from '../commands/command-types.ts';
import { Forbidden, NotFound, StepUpRequired } from '../errors.ts';
import type { ChatContext } from '../ports.ts';
import { evidenceWithParties } from '../requests/request-access.ts';
import { isUuid } from '../requests/request-dal.ts';
import { bindTo, encodeSubject, locationOf, REQUESTER_PURPOSES } from '../stepup/stepup-binding.ts';
import { requireRole } from '../users/user-service.ts';
import type { ResolvedUser } from '../users/user-types.ts';
import { recordSessionThread } from './session-thread.ts';

type Cmd<K extends Command['kind']> = Extract<Command, { kind: K }>;

const SHA256 = /^[0-9a-f]{64}$/;

export function createAdminHandlers(deps: BotDeps) {
  const { chat, db, users, stepup, policy, audit } = deps;

  return {
    async help(ctx: ChatContext, cmd: Cmd<'help'>) {
      if (cmd.topic) {
        await chat.reply(ctx, helpText(cmd.topic));
        return;
      }
      // The scripts `run` may name are part of what a person can type, so help lists them too.
      const scripts = await deps.scripts.list();
      const names = scripts.map((s) => {
        const tags = [s.readOnly && 'read-only', s.builtin && 'built-in'].filter(Boolean);
        return `${s.name}${tags.length ? ` (${tags.join(', ')})` : ''}`;
      });
      await chat.reply(
        ctx,
        `${helpText()}\nScripts for run: ${names.length ? names.join(', ') : 'none yet'}. Type "scripts" for their parameters, "files" for the files put can push.`,
      );
    },

    async changeRole(ctx: ChatContext, actor: ResolvedUser, cmd: Cmd<'grant'> | Cmd<'revoke'>) {
      requireRole(actor, 'admin');
      const target = await users.getUser(cmd.username);
      // Only a step-up for this very change counts (a window opened to read the history does not); the role
      // service re-checks, when it applies the change, that the actor is still an admin.
      const window = await stepup.windowFor(
        actor.id,
        'grant',
        bindTo.roleChange(cmd.kind, target.id, cmd.role),
      );
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
      const ep = await deps.sessions.sessionTarget(cmd.host);
      const window = await stepup.windowFor(user.id, REQUESTER_PURPOSES);
      if (!window) {
        const link = await stepup.createChallenge({
          userId: user.id,
          purpose: 'session',
          subject: encodeSubject('session', {
            hostname: ep.hostname,
            reason: cmd.reason,
            caseId: cmd.caseId,
            at: locationOf(ctx),
          }),
        });
        throw new StepUpRequired(`Opening a session with ${ep.hostname} needs a fresh step-up.`, link.url);
      }
      await deps.db.transaction(async (tx) => {
        const session = await deps.sessions.open(
          {
            userId: user.id,
            hostname: ep.hostname,
            stepUpWindowId: window.id,
            reason: cmd.reason,
            caseId: cmd.caseId,
            chat: { platform: ctx.identity.platform, channelId: ctx.channelId, threadId: ctx.threadId },
          },
          tx,
        );
        await recordSessionThread(deps, tx, ctx, session.id, ep.hostname, user.displayName);
      });
      await deps.outbox.flush();
    },

    /**
     * A download link for one evidence file, only for the people it belongs to: its request's requester and
     * approvers, and in-house admins. The page checks again on every download; a refusal is audited.
     */
    async download(ctx: ChatContext, user: ResolvedUser, cmd: Cmd<'download'>) {
      // By id, or by SHA-256 (the newest evidence with those bytes); only fetched evidence is downloadable.
      const ref = cmd.fileRef.toLowerCase();
      const [bySha] = SHA256.test(ref)
        ? await db
            .select({ id: files.id })
            .from(files)
            .where(and(eq(files.sha256, ref), eq(files.kind, 'fetched')))
            .orderBy(desc(files.createdAt))
            .limit(1)
        : [];
      const fileId = isUuid(ref) ? ref : bySha?.id;
      const found = fileId ? await evidenceWithParties(db, fileId) : undefined;
      if (!found)
        throw new NotFound(
          'file.not_found',
          `No fetched file with id or SHA-256 "${cmd.fileRef.slice(0, 64)}". Copy the id from the fetch result in the thread.`,
        );
      const { file, parties } = found;
      try {
        policy.canDownloadEvidence(user, parties);
      } catch (err) {
        if (err instanceof Forbidden) {
          await audit.append({
            actorType: 'user',
            actorId: user.id,
            action: 'file.download',
            outcome: 'refused',
            requestId: file.requestId,
            endpointId: file.endpointId,
            details: { reason: err.code, fileId: file.id, via: 'chat' },
          });
        }
        throw err;
      }
      const link = await stepup.createChallenge({
        userId: user.id,
        purpose: 'download',
        subject: bindTo.file(file.id),
      });
      await chat.notifyPrivately(
        ctx,
        `Download ${file.name} (${file.size} bytes, sha256 ${file.sha256}) as a zip with password "infected": ${link.url}`,
      );
    },
  };
}
