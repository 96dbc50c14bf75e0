// Server-rendered pages of the step-up site. Every page is one <main> with a heading, plain words and at
// most one form; no script anywhere, so the pages work with JavaScript off and under a no-script CSP.
import type { StepUpOutcome, StepUpPageView } from '../bot/bot-types.ts';
import type { StepUpPurpose } from '../db/schema.ts';
import { formatUtc, html, type SafeHtml } from './html.ts';
import { requestFactsHtml } from './request-view-html.ts';

export const STYLESHEET_PATH = '/assets/stepup.css';

export function layout(
  title: string,
  body: SafeHtml,
  opts: { wide?: boolean; refreshTo?: string } = {},
): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
${opts.refreshTo ? html`<meta http-equiv="refresh" content="1;url=${opts.refreshTo}">` : ''}
<title>${title} · Active Response</title>
<link rel="stylesheet" href="${STYLESHEET_PATH}">
</head>
<body>
<main${opts.wide ? html` class="wide"` : ''}>
<p class="brand">Active Response</p>
${body}
</main>
</body>
</html>
`.value;
}

const PURPOSE_TITLES: Record<StepUpPurpose, string> = {
  approve: 'Approve this request',
  confirm: 'Confirm your request',
  grant: 'Confirm the role change',
  session: 'Open a live session',
  download: 'Download evidence',
  history: 'Open session history',
  upload: 'Add a file to the library',
  cancel: 'Cancel a dispatched request',
  resume: 'Resume a halted action group',
  enrol_totp: 'Set up two-factor authentication',
};

export interface StepUpFormState {
  csrfToken: string;
  /** A message shown above the form after a failed attempt. */
  error?: string;
  /** The page listing every endpoint of the request, behind the same link. */
  listHref?: string;
}

export function stepUpPage(view: StepUpPageView, form: StepUpFormState): string {
  const c = view.challenge;
  const body = html`<h1>${PURPOSE_TITLES[c.purpose]}</h1>
${form.error ? html`<p class="notice error" role="alert">${form.error}</p>` : ''}
<p>${view.summary}</p>
${view.request ? requestFactsHtml(view.request, { listHref: form.listHref }) : ''}
<p class="who">Confirming as <strong>${c.displayName}</strong> (${c.username}). This link works once, until ${formatUtc(c.expiresAt)}.</p>
<form class="stack" method="post" autocomplete="off">
<input type="hidden" name="_csrf" value="${form.csrfToken}">
<input type="text" name="username" value="${c.username}" autocomplete="username" hidden readonly>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024">
<label for="code">Authenticator code <span class="hint">The 6 digits your authenticator app shows now</span></label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required>
${
  c.purpose === 'approve'
    ? html`<label for="reason">Reason <span class="hint">Needed to deny; shown in the thread</span></label>
<input id="reason" name="reason" type="text" maxlength="2000">
<div class="decide">
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny" class="deny">Deny</button>
</div>`
    : html`<button type="submit">Confirm</button>`
}
</form>`;
  return layout(PURPOSE_TITLES[c.purpose], body);
}

export function stepUpDonePage(outcome: StepUpOutcome): string {
  const body = html`<h1>Done</h1>
<p class="notice ok" role="status">${outcome.message}</p>
<p>Your confirmation stays valid until ${formatUtc(outcome.windowExpiresAt)}, so you will not be asked again before then.</p>
<p>You can close this tab and return to Slack or Teams.</p>`;
  return layout('Done', body);
}

/**
 * After a download step-up: the file starts by itself (a meta refresh, which needs no script) and the page
 * stays readable instead of leaving a used form on screen.
 */
export function downloadStartPage(outcome: StepUpOutcome, href: string): string {
  const body = html`<h1>Your download is starting</h1>
<p class="notice ok" role="status">Confirmed. The evidence file downloads as a zip protected with the password <code>infected</code>.</p>
<p>The zip is AES-256 encrypted: open it with 7-Zip, WinRAR, Keka or The Unarchiver (Windows Explorer and <code>unzip</code> cannot).</p>
<p>If it does not start, <a href="${href}">download it here</a>. The link works until ${formatUtc(outcome.windowExpiresAt)}.</p>
<p>Handle the file as live malware: open it only in an analysis sandbox.</p>`;
  return layout('Your download is starting', body, { refreshTo: href });
}

/** A page that explains and offers nothing else: used links, expired links, lockouts, missing access. */
export function noticePage(title: string, message: string, extra?: string): string {
  const body = html`<h1>${title}</h1>
<p class="notice error" role="alert">${message}</p>
${extra ? html`<p>${extra}</p>` : ''}`;
  return layout(title, body);
}

export interface EnrolPageInput {
  displayName: string;
  username: string;
  qrSvg: SafeHtml;
  secret: string;
  csrfToken: string;
  error?: string;
}

/** The base32 secret in groups of four, as authenticator apps show it when typed by hand. */
function groupSecret(secret: string): string {
  return secret.replace(/(.{4})(?=.)/g, '$1 ');
}

export function enrolPage(input: EnrolPageInput): string {
  const body = html`<h1>Set up two-factor authentication</h1>
${input.error ? html`<p class="notice error" role="alert">${input.error}</p>` : ''}
<p class="who">For <strong>${input.displayName}</strong> (${input.username})</p>
<p>Active Response asks for a code from an authenticator app before any action leaves the platform.</p>
<h2>1. Add the account to your authenticator app</h2>
<figure class="qr" aria-label="QR code for your authenticator app">${input.qrSvg}</figure>
<p>Cannot scan? Type this key into the app instead (time-based, 6 digits, 30 seconds):</p>
<code class="secret" id="totp-secret" data-secret="${input.secret}">${groupSecret(input.secret)}</code>
<h2>2. Enter the code it shows</h2>
<form class="stack" method="post" autocomplete="off">
<input type="hidden" name="_csrf" value="${input.csrfToken}">
<input type="hidden" name="step" value="code">
<label for="code">Authenticator code <span class="hint">The 6 digits your app shows now</span></label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required>
<button type="submit">Finish setup</button>
</form>`;
  return layout('Set up two-factor authentication', body);
}

export interface EnrolPasswordInput {
  displayName: string;
  username: string;
  csrfToken: string;
  error?: string;
}

/** The first step on an enrolment link: the password, before any secret is shown. */
export function enrolPasswordPage(input: EnrolPasswordInput): string {
  const body = html`<h1>Set up two-factor authentication</h1>
${input.error ? html`<p class="notice error" role="alert">${input.error}</p>` : ''}
<p class="who">For <strong>${input.displayName}</strong> (${input.username})</p>
<p>First confirm it is you: enter your Active Response password. Then the page shows the key to add to your authenticator app.</p>
<form class="stack" method="post" autocomplete="off">
<input type="hidden" name="_csrf" value="${input.csrfToken}">
<input type="hidden" name="step" value="password">
<input type="text" name="username" value="${input.username}" autocomplete="username" hidden readonly>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024">
<button type="submit">Continue</button>
</form>`;
  return layout('Set up two-factor authentication', body);
}

export function enrolDonePage(displayName: string): string {
  const body = html`<h1>Two-factor authentication is set up</h1>
<p class="notice ok" role="status">${displayName}, your authenticator app is now linked to Active Response.</p>
<p>Return to Slack or Teams and repeat what you asked for. Step-up pages will ask for your password and a code from the app.</p>`;
  return layout('Two-factor authentication is set up', body);
}

/**
 * GET / on the web listener: what this server is and where to go, for someone who opened the bare URL.
 * No data, no login, nothing about users or endpoints.
 */
export function frontPage(): string {
  const body = html`<h1>This server runs Active Response</h1>
<p>Security teams use it to act on endpoints during an incident: isolate a host, stop a process, fetch a file or run an investigation script.</p>
<p><strong>Actions are requested in chat, not here.</strong> Ask the bot in your Slack or Teams channel. An incident commander approves in the channel, and when the bot needs to confirm who you are it sends you a link to a page on this site (your password and a code from your authenticator app).</p>
<h2>For the people who run it</h2>
<ul class="links">
<li><a href="/healthz">Health check</a>: answers <code>{"status":"ok"}</code> when the service and its database are up.</li>
<li>Setting up, configuration, adding users and connecting Slack or Teams: the <code>README.md</code> at the top of the project.</li>
</ul>`;
  return layout('Active Response', body);
}

export interface UploadPageInput {
  csrfToken: string;
  maxBytes: number;
  error?: string;
}

function sizeWords(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(n % 1024 ** 3 ? 1 : 0)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(n % 1024 ** 2 ? 1 : 0)} MiB`;
  return `${n} bytes`;
}

/** The library upload form. Fields come before the file, so the form's token is read before any byte is stored. */
export function libraryUploadPage(input: UploadPageInput): string {
  const body = html`<h1>Add a file to the library</h1>
${input.error ? html`<p class="notice error" role="alert">${input.error}</p>` : ''}
<p>Files in the library are what <code>put</code> can push to endpoints. Every push still needs an approval, and the approver sees the file's name, size and SHA-256.</p>
<form class="stack" method="post" action="/library/upload" enctype="multipart/form-data" autocomplete="off">
<input type="hidden" name="_csrf" value="${input.csrfToken}">
<label for="name">Name in the library <span class="hint">Optional; the file's own name when empty. Letters, digits, dot, underscore, hyphen.</span></label>
<input id="name" name="name" type="text" maxlength="128" pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,127}">
<label for="sha256">Expected SHA-256 <span class="hint">Optional but recommended: <code>sha256sum file</code> (Linux), <code>shasum -a 256 file</code> (macOS) or <code>Get-FileHash file</code> (Windows). A file whose bytes hash otherwise is refused.</span></label>
<input id="sha256" name="sha256" type="text" maxlength="64" pattern="[0-9A-Fa-f]{64}" spellcheck="false">
<label for="file">File <span class="hint">At most ${sizeWords(input.maxBytes)}</span></label>
<input id="file" name="file" type="file" required>
<button type="submit">Upload</button>
</form>`;
  return layout('Add a file to the library', body);
}

export function libraryUploadDonePage(f: {
  name: string;
  size: number;
  sha256: string;
  expected?: string;
}): string {
  const body = html`<h1>Added to the library</h1>
<p class="notice ok" role="status">${f.name} is in the library${f.expected ? ', and its SHA-256 matches the one you expected' : ''}.</p>
<dl class="facts">
<dt>Name</dt><dd>${f.name}</dd>
<dt>Size</dt><dd>${f.size} bytes</dd>
<dt>SHA-256</dt><dd><code class="digest">${f.sha256}</code></dd>
</dl>
<p>Compare this SHA-256 with the one you computed before uploading. Push the file with <code>put &lt;host&gt; ${f.name} &lt;destination-path&gt; --reason "&lt;why&gt;"</code>.</p>
<p><a href="/library/upload">Add another file</a></p>`;
  return layout('Added to the library', body);
}
