// Block Kit rendering of a request card. Pure functions of the RequestView, so the card can be re-rendered
// from the database by any process and the same view always gives the same blocks.
import type { types } from '@slack/bolt';
import type { RequestView } from '../../bot/ports.ts';
import { actionPhrase, describeTargets, formatProgress, requestFacts } from '../../bot/render/summary.ts';

type KnownBlock = types.KnownBlock;

export const APPROVE_ACTION_ID = 'ar_approve';
export const DENY_ACTION_ID = 'ar_deny';

const MAX_NAMES = 5;
/** Slack refuses a section text over 3,000 characters and a field over 2,000. */
const SECTION_MAX = 3000;
const FIELD_MAX = 2000;

/** Escapes the three characters Slack's mrkdwn treats as control characters, so user text cannot ping or link. */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

const STATE_LABEL: Record<RequestView['state'], string> = {
  requested: ':hourglass: waiting for the requester to confirm',
  pending_approval: ':large_yellow_circle: pending approval',
  approved: ':white_check_mark: approved',
  dispatched: ':rocket: dispatched',
  completed: ':checkered_flag: completed',
  denied: ':no_entry: denied',
  expired: ':alarm_clock: expired',
  cancelled: ':heavy_multiplication_x: cancelled',
};

function field(label: string, value: string) {
  return { type: 'mrkdwn' as const, text: clip(`*${label}*\n${escapeMrkdwn(value)}`, FIELD_MAX) };
}

/** One line of plain text for notifications and clients that cannot show blocks. */
export function requestFallbackText(view: RequestView): string {
  return `${view.ref}: ${actionPhrase(view)} on ${describeTargets(view, MAX_NAMES)} (${view.state})`;
}

/** Slack shows at most 10 fields in one section. */
const FIELDS_PER_SECTION = 10;

export function renderRequestBlocks(view: RequestView): KnownBlock[] {
  const facts = requestFacts(view, MAX_NAMES);
  const long = (label: string) => label.startsWith('Excluded') || label.startsWith('Digest');
  const fields = [
    ...facts.filter((f) => !long(f.label)).map((f) => field(f.label, f.value)),
    // The state label carries emoji shortcodes, so it is built here rather than escaped by field().
    {
      type: 'mrkdwn' as const,
      text: `*State*\n${STATE_LABEL[view.state]}${view.progress ? `\n${escapeMrkdwn(formatProgress(view.progress))}` : ''}`,
    },
  ];
  const blocks: KnownBlock[] = [
    {
      type: 'header',
      text: { type: 'plain_text', text: clip(`${view.ref} · ${actionPhrase(view)}`, 150), emoji: false },
    },
  ];
  for (let i = 0; i < fields.length; i += FIELDS_PER_SECTION) {
    blocks.push({ type: 'section', fields: fields.slice(i, i + FIELDS_PER_SECTION) });
  }
  for (const f of facts.filter((x) => x.label.startsWith('Excluded'))) {
    const lines = f.value.split('\n').map((l) => `• ${escapeMrkdwn(l)}`);
    blocks.push({
      type: 'section',
      text: { type: 'mrkdwn', text: clip(`*${f.label}*\n${lines.join('\n')}`, SECTION_MAX) },
    });
  }
  for (const a of view.approvals) {
    const verb = a.decision === 'approve' ? ':white_check_mark: Approved' : ':no_entry: Denied';
    blocks.push({
      type: 'context',
      elements: [
        {
          type: 'mrkdwn',
          text: clip(
            `${verb} by ${escapeMrkdwn(a.approverName)}${a.reason ? `: ${escapeMrkdwn(a.reason)}` : ''}`,
            SECTION_MAX,
          ),
        },
      ],
    });
  }

  const context = [`digest \`${view.digest}\``];
  if (view.state === 'pending_approval' && view.approvalExpiresAt) {
    context.push(
      `expires <!date^${Math.floor(view.approvalExpiresAt.getTime() / 1000)}^{time}|${view.approvalExpiresAt.toISOString()}>`,
    );
  }
  blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: context.join(' · ') }] });

  // Buttons only while a decision is possible: a decided card must not invite a click that can only fail.
  if (view.state === 'pending_approval') {
    blocks.push({
      type: 'actions',
      block_id: `ar_decision_${view.id}`,
      elements: [
        {
          type: 'button',
          action_id: APPROVE_ACTION_ID,
          style: 'primary',
          text: { type: 'plain_text', text: 'Approve' },
          value: view.id,
        },
        {
          type: 'button',
          action_id: DENY_ACTION_ID,
          style: 'danger',
          text: { type: 'plain_text', text: 'Deny' },
          value: view.id,
        },
      ],
    });
  }
  return blocks;
}
