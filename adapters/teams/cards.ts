// Adaptive Card (1.5) rendering of a request, from the same facts as Slack's Block Kit card and the console
// (bot/render/summary.ts), so an approver sees the same whatever they use. Pure functions of the view: any
// process can re-render a card from the database.
//
// One card, three views. The message everyone sees is read-only. Approvers are listed in `refresh.userIds`:
// their Teams client asks the bot for their own view (Action.Execute, verb `ar.refresh`) and gets the one
// with Approve and Deny. A click is answered with the clicker's view, which may carry a notice only they see.
// Every action carries the request id in `data`: after an edit Teams may send a refresh with the previous
// card's data, so nothing may depend on which version of the card was clicked.
import {
  ActionSet,
  AdaptiveCard,
  type CardElementArray,
  Container,
  ExecuteAction,
  Fact,
  FactSet,
  type IAdaptiveCard,
  OpenUrlAction,
  TextBlock,
  TextInput,
} from '@microsoft/teams.cards';
import type { RequestView } from '../../bot/ports.ts';
import { actionPhrase, describeTargets, formatProgress, requestFacts } from '../../bot/render/summary.ts';

export const VERB_APPROVE = 'ar.approve';
export const VERB_DENY = 'ar.deny';
export const VERB_REFRESH = 'ar.refresh';
export const VERB_NOTE = 'ar.note';
export const REASON_INPUT = 'reason';

/** Teams refreshes a card automatically for at most 60 listed users. */
export const MAX_REFRESH_USERS = 60;
const MAX_NAMES = 10;
const TEXT_MAX = 2000;

const STATE_LABEL: Record<RequestView['state'], string> = {
  requested: '⏳ waiting for the requester to confirm',
  pending_approval: '🟡 pending approval',
  approved: '✅ approved',
  dispatched: '🚀 dispatched',
  completed: '🏁 completed',
  denied: '⛔ denied',
  expired: '⏰ expired',
  cancelled: '✖️ cancelled',
};

/**
 * Teams renders a Markdown subset in TextBlocks and facts. Text a person typed (a reason, a host name with
 * underscores) must show as typed, never as emphasis or a link, so Markdown's characters are escaped.
 */
export function escapeMarkdown(text: string): string {
  return text
    .replace(/[\\`*_[\]<>~]/g, (c) => `\\${c}`)
    .replace(/^(\s*)(#|[-+]|\d+\.)(\s)/gm, (_m, sp, mark, s) => `${sp}\\${mark}${s}`);
}

function clip(text: string, max = TEXT_MAX): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** One line for notifications and clients that cannot show cards. */
export function requestFallbackText(view: RequestView): string {
  return `${view.ref}: ${actionPhrase(view)} on ${describeTargets(view, 5)} (${view.state.replace('_', ' ')})`;
}

export interface CardOptions {
  /** `29:` ids of the approvers whose clients ask for their own view; only while pending. */
  refreshUserIds?: string[];
  /** Show Approve/Deny (the viewer may still decide). */
  decide?: boolean;
  /** A line only this viewer sees (a refusal, a step-up link, "you approved"). */
  notice?: string;
}

/** The first http(s) link in a notice, offered as a button (a step-up page, a download). */
export function linkIn(text: string): string | undefined {
  return text.match(/https?:\/\/[^\s<>"')]+/)?.[0];
}

/** Escapes a notice but leaves its links as they are, so Teams still shows them as links. */
function escapeKeepingLinks(text: string): string {
  const parts = text.split(/(https?:\/\/[^\s<>"')]+)/);
  return parts.map((p, i) => (i % 2 === 1 ? p : escapeMarkdown(p))).join('');
}

function noticeBlock(notice: string): Container {
  const items: CardElementArray = [new TextBlock(escapeKeepingLinks(clip(notice)), { wrap: true })];
  const url = linkIn(notice);
  if (url) {
    const title = url.includes('/stepup/') ? 'Open the step-up page' : 'Open the link';
    items.push(new ActionSet(new OpenUrlAction(url, { title })));
  }
  return new Container(...items).withStyle('emphasis');
}

export function renderRequestCard(view: RequestView, opts: CardOptions = {}): IAdaptiveCard {
  const facts = requestFacts(view, MAX_NAMES);
  const long = (label: string) => label.startsWith('Excluded') || label.startsWith('Digest');
  const state = `${STATE_LABEL[view.state]}${view.progress ? ` · ${formatProgress(view.progress)}` : ''}`;
  const body: CardElementArray = [
    new TextBlock(clip(`${view.ref} · ${actionPhrase(view)}`, 200), {
      style: 'heading',
      size: 'Medium',
      weight: 'Bolder',
      wrap: true,
    }),
    new FactSet(
      ...facts.filter((f) => !long(f.label)).map((f) => new Fact(f.label, escapeMarkdown(clip(f.value)))),
      new Fact('State', escapeMarkdown(state)),
    ),
  ];
  for (const f of facts.filter((x) => x.label.startsWith('Excluded'))) {
    const lines = f.value.split('\n').map((l) => `- ${escapeMarkdown(l)}`);
    body.push(new TextBlock(`**${f.label}**`, { wrap: true, spacing: 'Medium' }));
    body.push(new TextBlock(clip(lines.join('\n')), { wrap: true }));
  }
  for (const a of view.approvals) {
    const verb = a.decision === 'approve' ? '✅ Approved' : '⛔ Denied';
    const why = a.reason ? `: ${a.reason}` : '';
    body.push(new TextBlock(escapeMarkdown(clip(`${verb} by ${a.approverName}${why}`)), { wrap: true }));
  }
  const context = [`digest ${view.digest}`];
  if (view.state === 'pending_approval' && view.approvalExpiresAt) {
    context.push(`expires ${view.approvalExpiresAt.toISOString()}`);
  }
  body.push(
    new TextBlock(escapeMarkdown(context.join(' · ')), { size: 'Small', isSubtle: true, wrap: true }),
  );
  if (opts.notice) body.push(noticeBlock(opts.notice));

  const card = new AdaptiveCard(...body).withVersion('1.5').withFallbackText(requestFallbackText(view));
  const data = { requestId: view.id };
  // Buttons only while a decision is possible: a decided card must not invite a click that can only fail.
  if (view.state === 'pending_approval' && opts.decide) {
    card.body.push(
      new TextInput({ id: REASON_INPUT, placeholder: 'Reason (shown with a denial)', maxLength: 500 }),
    );
    card.withActions(
      new ExecuteAction({ title: 'Approve', verb: VERB_APPROVE, data }).withStyle('positive'),
      new ExecuteAction({ title: 'Deny', verb: VERB_DENY, data }).withStyle('destructive'),
    );
  }
  const userIds = (opts.refreshUserIds ?? []).slice(0, MAX_REFRESH_USERS);
  if (view.state === 'pending_approval' && userIds.length) {
    card.withRefresh({ action: new ExecuteAction({ verb: VERB_REFRESH, data }), userIds });
  }
  return card;
}

/**
 * A private note in a shared conversation. Everyone sees that there is one and for whom; only the
 * recipient's client, listed in `refresh.userIds`, asks for the content, which travels sealed in the
 * refresh data and is opened for them alone (private-notes.ts).
 */
export function renderSealedNoteCard(opts: { recipientName?: string; sealed: string; recipientMri: string }) {
  const who = opts.recipientName ? escapeMarkdown(opts.recipientName) : undefined;
  const text = who
    ? `🔒 A private note for ${who}. Only ${who} can open it.`
    : '🔒 A private note. Only the person it is for can open it.';
  const card = new AdaptiveCard(new TextBlock(text, { wrap: true, isSubtle: true }))
    .withVersion('1.5')
    .withFallbackText(opts.recipientName ? `A private note for ${opts.recipientName}` : 'A private note');
  if (opts.recipientMri) {
    card.withRefresh({
      action: new ExecuteAction({
        verb: VERB_NOTE,
        data: { note: opts.sealed, for: opts.recipientName ?? '' },
      }),
      userIds: [opts.recipientMri],
    });
  }
  return card;
}

/** Just a notice, for an answer given before the request could be read. */
export function renderNoticeCard(text: string) {
  return new AdaptiveCard(noticeBlock(text)).withVersion('1.5').withFallbackText(clip(text, 300));
}

/** The note as its recipient sees it. */
export function renderOpenedNoteCard(text: string) {
  return new AdaptiveCard(
    new TextBlock('🔒 Only you can see this', { size: 'Small', isSubtle: true, wrap: true }),
    noticeBlock(text),
  )
    .withVersion('1.5')
    .withFallbackText(clip(text, 300));
}
