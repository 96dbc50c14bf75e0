// Audit records in words: who did it, what they did, and the details as labelled fields rather than JSON.
// Only the record's own fields and names looked up by the route go in; everything is escaped by `html`.
import type { AuditRecord } from '../bot/audit/audit-service.ts';
import { html, type SafeHtml } from './html.ts';

/** Names the route resolved for the ids on one page of records. */
export interface HistoryNames {
  /** User id → username. */
  users: Map<string, string>;
  /** Endpoint id → hostname. */
  hosts: Map<string, string>;
  /** Request id → its ref, action and reason. */
  requests: Map<string, { ref: string; action: string; reason: string; caseId: string | null }>;
}

type Details = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Who acted, as a person reads it: a username, the agent on a host, the platform, or an unknown visitor. */
export function actorWords(r: AuditRecord, names: HistoryNames): string {
  const id = r.actorId ?? '';
  switch (r.actorType) {
    case 'user':
      return names.users.get(id) ?? (str(id) ? `user ${id}` : 'a user');
    case 'agent':
      return names.hosts.has(id) ? `agent on ${names.hosts.get(id)}` : 'an agent';
    case 'chat':
      return id ? `chat user ${id}` : 'a chat user';
    case 'system':
      return id ? `platform (${id})` : 'platform';
    default:
      return 'unknown visitor';
  }
}

type Phrase = (d: Details, r: AuditRecord) => string;

/** One phrase per audit action; an action missing here is shown by its code. */
const PHRASES: Record<string, Phrase> = {
  'request.created': (d) => `asked for ${str(d.action) ?? 'an action'}`,
  'request.pending_approval': () => 'request now waits for approval',
  'request.approved': () => 'request approved',
  'request.dispatched': () => 'request handed to the agents',
  'request.completed': () => 'request completed',
  'request.denied': () => 'request denied',
  'request.expired': () => 'request expired undecided',
  'request.cancelled': () => 'request cancelled',
  'request.deliveries_cancelled': () => 'withdrew queued deliveries',
  'request.cancel_refused': () => 'could not cancel',
  'approval.recorded': () => 'approved the request',
  'approval.refused': (d) => `could not ${str(d.decision) ?? 'decide'}`,
  'stepup.attempt': (_d, r) =>
    r.outcome === 'ok' ? 'confirmed identity (password + code)' : 'identity check did not pass',
  'stepup.challenge_created': (d) => `was sent a step-up link (${str(d.purpose) ?? 'confirm'})`,
  'stepup.lockout': () => 'was locked out after failed identity checks',
  'delivery.sent': () => 'sent the action to the agent',
  'delivery.acknowledged': () => 'accepted the action',
  'delivery.result': (d, r) => `${str(d.action) ?? 'action'} ${r.outcome === 'ok' ? 'succeeded' : 'failed'}`,
  'delivery.expired': () => 'delivery expired before the agent took it',
  'session.started': () => 'opened a live session',
  'session.stopped': () => 'closed the live session',
  'file.uploaded': (d) => `sent file ${str(d.name) ?? ''}`.trim(),
  'file.downloaded': (d) => `downloaded evidence ${str(d.name) ?? ''}`.trim(),
  'file.download': () => 'tried to download evidence',
  'script.executed': () => 'ran a script',
  'script.saved': (d) => `saved script ${str(d.name) ?? ''}`.trim(),
  'command.rejected': () => 'typed a command that was refused',
  'command.cancel': (d) => `cancelled ${str(d.target) ?? 'a request'}`,
  'history.viewed': () => 'viewed this history',
  'history.view': () => 'tried to open this history',
  'role.granted': (d) => `granted ${str(d.role) ?? 'a role'} to ${str(d.username) ?? 'a user'}`,
  'role.revoked': (d) => `revoked ${str(d.role) ?? 'a role'} from ${str(d.username) ?? 'a user'}`,
  'role.change_refused': (d) => `could not ${str(d.kind) ?? 'change'} ${str(d.role) ?? 'a role'}`,
  'user.created': (d) => `created user ${str(d.username) ?? ''}`.trim(),
  'user.disabled': (d) => `disabled user ${str(d.username) ?? ''}`.trim(),
  'user.password_set': () => 'set a password',
  'identity.linked': (d) => `linked chat identity ${str(d.identity) ?? ''}`.trim(),
  'identity.refused': () => 'chat identity was refused',
  'totp.enrolment_started': () => 'started authenticator setup',
  'totp.enrol_attempt': () => 'tried an authenticator code',
  'totp.enrolled': () => 'set up an authenticator app',
  'totp.reset': () => 'reset the authenticator',
  'endpoint.enrolled': (d) => `enrolled endpoint ${str(d.hostname) ?? ''}`.trim(),
  'endpoint.enrolment': () => 'tried to enrol an endpoint',
  'endpoint.revoked': (d) => `revoked endpoint ${str(d.hostname) ?? ''}`.trim(),
  'endpoint.unrevoked': (d) => `lifted the revocation of endpoint ${str(d.hostname) ?? ''}`.trim(),
  'enrolment.token_created': (d) =>
    d.purpose === 'reenrol'
      ? `created a re-enrolment token for ${str(d.hostname) ?? 'an endpoint'}`
      : 'created an agent enrolment token',
  'delivery.refused_by_agent': () => 'agent refused to run the action',
  'broker.connection_refused': () => 'agent connection refused',
  'broker.connection_replaced': () => 'agent reconnected elsewhere',
  'broker.frame_refused': () => 'agent message refused',
  'audit.read': () => 'read the audit log',
  'metrics.scrape': () => 'metrics scrape refused',
};

export function actionWords(r: AuditRecord): string {
  const phrase = PHRASES[r.action];
  return phrase ? phrase(detailsOf(r), r) : r.action;
}

export function detailsOf(r: AuditRecord): Details {
  return r.details && typeof r.details === 'object' && !Array.isArray(r.details)
    ? (r.details as Details)
    : {};
}

/**
 * Why it happened or why it was refused: the request's reason for records of a request, the refusal code
 * or error for records that did not go through.
 */
export function reasonWords(r: AuditRecord, names: HistoryNames): string | undefined {
  const d = detailsOf(r);
  if (r.outcome !== 'ok') {
    const why = str(d.reason) ?? str(d.code) ?? str(d.error);
    if (why) return why;
  }
  const req = r.requestId ? names.requests.get(r.requestId) : undefined;
  if (req) return req.caseId ? `${req.reason} (case ${req.caseId})` : req.reason;
  // A reason a person gave (a live session's); the code `ok` of a passed check says nothing.
  const given = str(d.reason);
  return given && given !== 'ok' ? given : undefined;
}

const VALUE_MAX = 4000;
const FIELDS_MAX = 80;

/**
 * Details as `path → text` pairs: nested objects and arrays become dotted paths (`payload.params.limit`),
 * so a script body shows as the lines it has rather than a JSON string full of \n. Long values are cut.
 */
function flatten(value: unknown, path: string, out: [string, string][]): void {
  if (out.length > FIELDS_MAX) return;
  if (value === null || value === undefined) return;
  if (Array.isArray(value) && value.every((v) => v === null || typeof v !== 'object')) {
    out.push([path, value.join(', ')]);
  } else if (typeof value === 'object') {
    const entries = Array.isArray(value)
      ? value.map((v, i) => [String(i + 1), v] as const)
      : Object.entries(value);
    for (const [k, v] of entries) flatten(v, path ? `${path}.${k}` : k, out);
  } else {
    out.push([path, String(value)]);
  }
}

function cut(text: string): string {
  return text.length > VALUE_MAX ? `${text.slice(0, VALUE_MAX)} … (cut at ${VALUE_MAX} characters)` : text;
}

/** The record's details as labelled fields, plus its number, code and hash, for the collapsed part. */
export function detailsList(r: AuditRecord): SafeHtml {
  const fields: [string, string][] = [];
  flatten(detailsOf(r), '', fields);
  const more = fields.length > FIELDS_MAX ? fields.length - FIELDS_MAX : 0;
  return html`<dl class="details">
<dt>Record</dt><dd>#${r.seq} · <code>${r.action}</code> · ${r.outcome}</dd>
${fields.slice(0, FIELDS_MAX).map(([k, v]) => {
  const text = cut(v);
  const block = text.includes('\n') || text.length > 80;
  return html`<dt>${k}</dt><dd>${block ? html`<pre>${text}</pre>` : html`<code>${text}</code>`}</dd>`;
})}
${more ? html`<dt>…</dt><dd>and more fields (see the audit export)</dd>` : ''}
<dt>Hash</dt><dd><code>${r.hash}</code></dd>
</dl>`;
}
