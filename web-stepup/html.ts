// A tagged template for server-rendered HTML that escapes every interpolated value unless it is already
// markup built by `html` itself. Pages are built only through it, so user-controlled text (reasons, case
// ids, hostnames, audit details) can never become markup.

const SAFE = Symbol('safe-html');

export interface SafeHtml {
  readonly [SAFE]: true;
  readonly value: string;
}

type Interpolation = SafeHtml | string | number | boolean | null | undefined | Interpolation[];

export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function isSafe(v: unknown): v is SafeHtml {
  return typeof v === 'object' && v !== null && SAFE in v;
}

function render(v: Interpolation): string {
  if (v === null || v === undefined || v === false) return '';
  if (Array.isArray(v)) return v.map(render).join('');
  if (isSafe(v)) return v.value;
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: Interpolation[]): SafeHtml {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) out += render(values[i]!) + (strings[i + 1] ?? '');
  return { [SAFE]: true, value: out };
}

/**
 * Marks markup produced by a trusted library (the qrcode package's SVG) as safe. Never pass user input.
 */
export function trustedMarkup(markup: string): SafeHtml {
  return { [SAFE]: true, value: markup };
}

/** Times are shown in UTC with the zone named, so an on-call analyst in any zone reads them the same way. */
export function formatUtc(d: Date): string {
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}
