// Universal Actions on request cards and private notes (invoke `adaptiveCard/action`):
// - `ar.refresh`: a viewer's client asks for their own view of a card. Approvers who may still decide get
//   Approve and Deny, everyone else the read-only card. Nothing is decided, so the core is not involved.
// - `ar.approve` / `ar.deny`: a click. It is recorded in the durable inbox first (one insert), so a crash
//   after the answer leaves it for the next start. The clicker is then identified afresh (their tenant and
//   guest status from the member lookup) and the core re-checks everything under the request's row lock;
//   what the core says to the clicker comes back in this invoke's answer, which only they see. Teams expects
//   that answer within a few seconds, so the answer waits for the core's first word (or `answerWithinMs`),
//   while card edits and thread replies carry on afterwards. A redelivered invoke (same id) finds its row:
//   it is answered with the card as it stands, and nothing more is done.
// - `ar.note`: a private note's recipient opens it; anyone else gets the closed note back.
import type { App } from '@microsoft/teams.apps';
import type { IAdaptiveCard } from '@microsoft/teams.cards';
import type { BotCore } from '../../../bot/bot-types.ts';
import { isAppError } from '../../../bot/errors.ts';
import { enterInbox } from '../../../bot/inbox/inbox-entry.ts';
import type { InboxHandler, InteractionInbox } from '../../../bot/inbox/interaction-inbox.ts';
import type { Logger, RequestView } from '../../../bot/ports.ts';
import {
  REASON_INPUT,
  renderOpenedNoteCard,
  renderSealedNoteCard,
  VERB_APPROVE,
  VERB_DENY,
  VERB_NOTE,
  VERB_REFRESH,
} from '../cards.ts';
import { sleep, type TimerPort } from '../outbound-gate.ts';
import type { NoteSealer } from '../private-notes.ts';
import type { TeamsChat } from '../teams-chat.ts';
import {
  addressOf,
  type CardActionActivity,
  cardActionActivity,
  invokeEventId,
  threadOf,
} from '../teams-context.ts';
import type { TeamsIdentity } from '../teams-identity.ts';
import { originOf, provisionalContext } from './inbox-items.ts';
import type { WorkTracker } from './work-tracker.ts';

type InvokeAnswer =
  | { statusCode: 200; type: 'application/vnd.microsoft.card.adaptive'; value: IAdaptiveCard }
  | {
      statusCode: 400;
      type: 'application/vnd.microsoft.error';
      value: { code: string; message: string; innerHttpError: { statusCode: number; body: unknown } };
    };

const cardAnswer = (value: IAdaptiveCard): InvokeAnswer => ({
  statusCode: 200,
  type: 'application/vnd.microsoft.card.adaptive',
  value,
});

const badRequest = (message: string): InvokeAnswer => ({
  statusCode: 400,
  type: 'application/vnd.microsoft.error',
  value: { code: 'BadRequest', message, innerHttpError: { statusCode: 400, body: { message } } },
});

export interface CardActionDeps {
  bot: BotCore;
  chat: TeamsChat;
  identity: TeamsIdentity;
  notes: NoteSealer;
  /** The request as the core shows it now (by id or R-ref); throws NotFound for an unknown one. */
  views: (requestId: string) => Promise<RequestView>;
  /** Bounded queue for the decisions and reads behind clicks. */
  clicks: WorkTracker;
  /** Where clicks are recorded before they are answered; without it they are handled from memory. */
  inbox?: InteractionInbox;
  /** Identifies the clicker, then hands the click to the core (inbox-items.ts). */
  handler: InboxHandler;
  logger: Logger;
  timers: TimerPort;
  /** How long a click's answer waits for the core (Teams gives up after a few seconds). Default 1,000 ms: under load the answer still leaves within the 2 s Teams is promised. */
  answerWithinMs?: number;
}

export function registerCardActionListener(app: App, deps: CardActionDeps): void {
  app.on('card.action', async ({ activity }) => {
    const parsed = cardActionActivity.safeParse(activity);
    if (!parsed.success) return badRequest('unexpected card action');
    const a = parsed.data;
    deps.identity.learn(a.from.aadObjectId, a.from.id);
    const { verb, data } = a.value.action;
    try {
      switch (verb) {
        case VERB_NOTE:
          return cardAnswer(openNote(deps, a, data));
        case VERB_REFRESH:
          return await refresh(deps, a, data);
        case VERB_APPROVE:
        case VERB_DENY:
          return await decide(deps, a, verb === VERB_APPROVE ? 'approve' : 'deny', data);
        default:
          return badRequest(`unknown action ${String(verb).slice(0, 40)}`);
      }
    } catch (err) {
      deps.logger.error({ err, verb }, 'could not answer a Teams card action');
      return badRequest('Something went wrong on our side; try again.');
    }
  });
}

function requestIdOf(data: Record<string, unknown>): string | undefined {
  const id = data.requestId;
  return typeof id === 'string' && /^[A-Za-z0-9-]{1,64}$/.test(id) ? id : undefined;
}

function openNote(deps: CardActionDeps, a: CardActionActivity, data: Record<string, unknown>): IAdaptiveCard {
  const text = a.from.aadObjectId ? deps.notes.open(data.note, a.from.aadObjectId) : undefined;
  if (text !== undefined) return renderOpenedNoteCard(text);
  // Not theirs: the closed note again, as it was.
  const recipientName = typeof data.for === 'string' && data.for ? data.for.slice(0, 200) : undefined;
  return renderSealedNoteCard({ recipientName, sealed: String(data.note ?? ''), recipientMri: '' });
}

/**
 * `work` (which renders the answer) against the answer budget. When the budget runs out first the answer is
 * `late()`, built without the database from what this process last showed of the request.
 */
async function withinBudget(
  deps: CardActionDeps,
  work: Promise<IAdaptiveCard>,
  late: () => IAdaptiveCard,
): Promise<IAdaptiveCard> {
  let settled = false;
  const budget = sleep(deps.timers, deps.answerWithinMs ?? 1000).then(() => (settled ? undefined : late()));
  const answer = await Promise.race([work.finally(() => (settled = true)), budget]);
  return answer ?? (await work);
}

async function refresh(deps: CardActionDeps, a: CardActionActivity, data: Record<string, unknown>) {
  const requestId = requestIdOf(data);
  if (!requestId) return badRequest('this card names no request');
  const render = (async () => {
    const view = await deps.clicks.queue(() => deps.views(requestId));
    return deps.chat.viewerCard(addressOf(a), threadOf(a), view, a.from);
  })().catch((err: unknown) => {
    // A request that no longer exists (or a ref that never did) is said so, not answered with an error.
    if (isAppError(err)) return deps.chat.lastKnownCard(requestId, err.message);
    throw err;
  });
  deps.clicks.track(render.catch(() => {}));
  return cardAnswer(await withinBudget(deps, render, () => deps.chat.lastKnownCard(requestId)));
}

const STILL_WORKING = 'Still working on it: the card shows the result when it is done.';

async function decide(
  deps: CardActionDeps,
  a: CardActionActivity,
  decision: 'approve' | 'deny',
  data: Record<string, unknown>,
): Promise<InvokeAnswer> {
  const requestId = requestIdOf(data);
  if (!requestId) return badRequest('this card names no request');
  const address = addressOf(a);
  const root = threadOf(a);
  const reason =
    typeof data[REASON_INPUT] === 'string' ? (data[REASON_INPUT] as string).trim().slice(0, 500) : '';
  const input = { requestId, decision, reason: decision === 'deny' && reason ? reason : undefined };
  // Recorded before anything can answer Teams, the late answer included. Undefined: a redelivery.
  const work = await enterInbox(
    deps,
    { kind: 'decision', ctx: provisionalContext(a, invokeEventId(a)), input, origin: originOf(a) },
    deps.handler,
  );
  const capture = deps.chat.capture();
  const notices = (extra?: string) =>
    [...capture.notices, ...(extra ? [extra] : [])].join('\n\n') || undefined;

  const render = (async (): Promise<IAdaptiveCard> => {
    if (work) {
      const done = deps.clicks.queue(() => capture.run(work));
      // The core's first word (a notice for the clicker, the refusal of an unknown clicker, or the card it
      // updated) is the answer.
      await Promise.race([done, capture.said]);
    }
    const view = capture.view ?? (await deps.clicks.queue(() => deps.views(requestId)));
    return deps.chat.viewerCard(address, root, view, a.from, notices());
  })().catch((err: unknown) => {
    if (isAppError(err)) return deps.chat.lastKnownCard(requestId, notices(err.message));
    throw err;
  });
  deps.clicks.track(render.catch(() => {}));
  const card = await withinBudget(deps, render, () => {
    // What the core said so far is in the answer; anything later reaches the clicker as a private note.
    capture.close();
    return deps.chat.lastKnownCard(requestId, notices() ?? STILL_WORKING);
  });
  capture.close();
  return cardAnswer(card);
}
