// The core's front door: every chat adapter calls handleCommand / handleDecision, and the step-up page calls
// describeStepUp / completeStepUp. Listeners stay thin; this file resolves who is speaking, parses, routes to
// the services and renders results through the ChatPort. Chat is only ever touched after a commit.

import type { Db } from '../db/client.ts';
import type { AuditService } from './audit/audit-service.ts';
import type { BotCore, DecisionInput, StepUpOutcome, StepUpPageView } from './bot-types.ts';
import { createChatResponder } from './chat-responder.ts';
import { parseCommand } from './commands/command-parser.ts';
import type { GroupProgress } from './groups/group-progress.ts';
import type { GroupWaves } from './groups/group-waves.ts';
import { createActionHandlers } from './handlers/action-handlers.ts';
import { createAdminHandlers } from './handlers/admin-handlers.ts';
import { createGroupHandlers } from './handlers/group-handlers.ts';
import { createInspectHandlers } from './handlers/inspect-handlers.ts';
import { createLibraryHandlers } from './handlers/library-handlers.ts';
import { describeChallenge, runConfirmedStepUp } from './handlers/stepup-handlers.ts';
import { claimEvent } from './idempotency.ts';
import type { FileLibrary } from './library/file-library.ts';
import type { ChatOutbox } from './outbox/chat-outbox.ts';
import type { PolicyService } from './policy/policy-service.ts';
import type { ChatContext, Clock, DirectChat, Dispatcher, FaultPoints, Logger } from './ports.ts';
import type { RequestService } from './requests/request-service.ts';
import type { ScriptLibrary } from './scripts/script-library.ts';
import type { SessionService } from './sessions/session-service.ts';
import type { StepUpService } from './stepup/stepup-service.ts';
import type { StepUpAttempt } from './stepup/stepup-types.ts';
import type { UserService } from './users/user-service.ts';

export interface BotDeps {
  db: Db;
  audit: AuditService;
  clock: Clock;
  logger: Logger;
  /** Answers to the person typing; what a channel or thread hears goes through `outbox`. */
  chat: DirectChat;
  /** Everything said in a channel or thread, written with the change it reports (bot/outbox/). */
  outbox: ChatOutbox;
  /** Fault drills only (FAULT_CRASH_AT); absent in normal running. */
  faults?: FaultPoints;
  users: UserService;
  stepup: StepUpService;
  policy: PolicyService;
  requests: RequestService;
  sessions: SessionService;
  dispatcher: Dispatcher;
  library: FileLibrary;
  scripts: ScriptLibrary;
  progress: GroupProgress;
  waves: GroupWaves;
  publicUrl: string;
}

export function createBotService(deps: BotDeps): BotCore {
  const responder = createChatResponder(deps);
  const actions = createActionHandlers(deps);
  const admin = createAdminHandlers(deps);
  const inspect = createInspectHandlers(deps);
  const libraries = createLibraryHandlers(deps);
  const groups = createGroupHandlers(deps);

  /** Runs `work` once per event key; user errors become private replies, nothing escapes to the adapter. */
  async function guarded(ctx: ChatContext, work: () => Promise<void>): Promise<void> {
    try {
      if (ctx.eventId && !(await claimEvent(deps.db, `${ctx.identity.platform}:${ctx.eventId}`))) return;
      await work();
    } catch (err) {
      await responder.fail(ctx, err);
    }
  }

  return {
    handleCommand(ctx, text) {
      return guarded(ctx, async () => {
        const user = await deps.users.resolveChatIdentity(ctx.identity);
        const sessionHost = ctx.threadId
          ? await deps.sessions.hostInThread(user.id, {
              platform: ctx.identity.platform,
              channelId: ctx.channelId,
              threadId: ctx.threadId,
            })
          : undefined;
        let cmd: ReturnType<typeof parseCommand>;
        try {
          cmd = parseCommand(text, { sessionHost });
        } catch (err) {
          await deps.audit.append({
            actorType: 'user',
            actorId: user.id,
            action: 'command.rejected',
            outcome: 'refused',
            details: { text: text.slice(0, 200), error: (err as Error).message.slice(0, 300) },
          });
          throw err;
        }
        switch (cmd.kind) {
          case 'help':
            return admin.help(ctx, cmd);
          case 'approve':
          case 'deny':
            return actions.decide(ctx, user, {
              requestId: cmd.ref,
              decision: cmd.kind,
              reason: cmd.kind === 'deny' ? cmd.reason : undefined,
            });
          case 'status':
            return inspect.status(ctx, user, cmd);
          case 'queue':
            return inspect.queue(ctx, user, cmd);
          case 'history':
            return inspect.history(ctx, user);
          case 'files':
            return libraries.files(ctx, user);
          case 'scripts':
            return libraries.scripts(ctx, user);
          case 'upload':
            return libraries.upload(ctx, user);
          case 'cancel':
            return actions.cancel(ctx, user, cmd);
          case 'resume':
            return actions.resume(ctx, user, cmd);
          case 'groups':
            return groups.list(ctx, user, cmd);
          case 'grant':
          case 'revoke':
            return admin.changeRole(ctx, user, cmd);
          case 'audit':
            return inspect.audit(ctx, user, cmd);
          case 'session':
            return admin.session(ctx, user, cmd);
          case 'download':
            return admin.download(ctx, user, cmd);
          default:
            return actions.request(ctx, user, cmd);
        }
      });
    },

    handleDecision(ctx: ChatContext, input: DecisionInput) {
      return guarded(ctx, async () => {
        const user = await deps.users.resolveChatIdentity(ctx.identity);
        await actions.decide(ctx, user, input);
      });
    },

    async describeStepUp(token: string): Promise<StepUpPageView> {
      return describeChallenge(deps, token);
    },

    async completeStepUp(attempt: StepUpAttempt): Promise<StepUpOutcome> {
      return runConfirmedStepUp(deps, actions, attempt);
    },
  };
}

export type BotService = ReturnType<typeof createBotService>;
