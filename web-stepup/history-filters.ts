// The history page's query string: filters (user, endpoint, request ref, action prefix, time range) and the
// keyset page position (`before` or `after` an audit seq). Parsed with zod; what was typed is echoed back
// into the form as typed, and every link the page builds carries the filters along.
import { z } from 'zod';

const blankToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);

/**
 * `2026-11-28`, `2026-11-28T09:00` or `2026-11-28 09:00` (read as UTC, what the form's labels say), or
 * ISO 8601 with a zone. A date and time without a zone is never read in the server's own zone.
 */
function utcTime(text: string): Date | undefined {
  const t = text.replace(/^(\d{4}-\d{2}-\d{2}) (?=\d)/, '$1T');
  let iso: string | undefined;
  if (/^\d{4}-\d{2}-\d{2}$/.test(t)) iso = `${t}T00:00Z`;
  else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/.test(t)) iso = `${t}Z`;
  else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i.test(t)) iso = t;
  const d = iso ? new Date(iso) : undefined;
  return d && !Number.isNaN(d.getTime()) ? d : undefined;
}

const timeInput = z.preprocess(
  blankToUndefined,
  z
    .string()
    .trim()
    .max(40)
    .transform((v, ctx) => {
      const d = utcTime(v);
      if (!d) {
        ctx.addIssue({
          code: 'custom',
          message: `"${v}" is not a time; use a UTC time such as 2026-11-28T09:00`,
        });
        return z.NEVER;
      }
      return d;
    })
    .optional(),
);

/** A record number to page from; `after=0` is the very start of the log. */
const seqInput = (min: 0 | 1) =>
  z.preprocess(
    blankToUndefined,
    z.coerce
      .number({ message: 'a page position is a record number' })
      .int('a page position is a whole record number')
      .min(min, `a page position is a record number of at least ${min}`)
      .max(Number.MAX_SAFE_INTEGER)
      .optional(),
  );

export const historyQuery = z
  .object({
    user: z.preprocess(
      blankToUndefined,
      z
        .string()
        .trim()
        .max(64)
        .regex(/^[a-z0-9._-]+$/, 'a username has only a-z, 0-9, dot, underscore and dash')
        .optional(),
    ),
    endpoint: z.preprocess(
      blankToUndefined,
      z
        .string()
        .trim()
        .max(253)
        .regex(/^[A-Za-z0-9._-]+$/, 'a hostname has only letters, digits, dot, underscore and dash')
        .optional(),
    ),
    request: z.preprocess(
      blankToUndefined,
      z
        .string()
        .trim()
        .toUpperCase()
        .regex(/^R-[A-Z0-9]{4,12}$/, 'a request is named like R-7K3QXM')
        .optional(),
    ),
    action: z.preprocess(
      blankToUndefined,
      z
        .string()
        .trim()
        .toLowerCase()
        .max(60)
        .regex(/^[a-z_.]+$/, 'an action is a word such as request. or stepup.attempt')
        .optional(),
    ),
    from: timeInput,
    to: timeInput,
    before: seqInput(1),
    after: seqInput(0),
  })
  .refine((q) => q.before === undefined || q.after === undefined, {
    message: 'a page is either before or after a record, not both',
    path: ['before'],
  });

export type HistoryQuery = z.output<typeof historyQuery>;

/** The filters as typed, echoed into the form and carried by every link. */
export interface HistoryFilters {
  user?: string;
  endpoint?: string;
  request?: string;
  action?: string;
  from?: string;
  to?: string;
}

const FILTER_KEYS = ['user', 'endpoint', 'request', 'action', 'from', 'to'] as const;

export function echoFilters(query: unknown): HistoryFilters {
  const q = (query ?? {}) as Record<string, unknown>;
  const out: HistoryFilters = {};
  for (const k of FILTER_KEYS) {
    const v = q[k];
    if (typeof v === 'string' && v.trim() !== '') out[k] = v.trim().slice(0, 253);
  }
  return out;
}

/**
 * `/history?…` with the filters (changed by `set`, where `undefined` drops one) and an optional page
 * position. Links built here never lose a filter the person set.
 */
export function historyHref(
  filters: HistoryFilters,
  set: Partial<HistoryFilters> & { before?: number; after?: number } = {},
): string {
  const params = new URLSearchParams();
  const merged: Record<string, string | number | undefined> = { ...filters, ...set };
  for (const k of [...FILTER_KEYS, 'before', 'after'] as const) {
    const v = merged[k];
    if (v !== undefined && v !== '') params.set(k, String(v));
  }
  const qs = params.toString();
  return qs ? `/history?${qs}` : '/history';
}

/** Action prefixes offered in the form; any other prefix typed into the URL still works. */
export const ACTION_CHOICES: { value: string; label: string }[] = [
  { value: '', label: 'Everything' },
  { value: 'request.', label: 'Requests' },
  { value: 'approval.', label: 'Approvals' },
  { value: 'delivery.', label: 'Deliveries to agents' },
  { value: 'stepup.', label: 'Step-up (identity checks)' },
  { value: 'session.', label: 'Live sessions' },
  { value: 'file.', label: 'Files' },
  { value: 'script.', label: 'Scripts' },
  { value: 'command.', label: 'Chat commands' },
  { value: 'role.', label: 'Role changes' },
  { value: 'user.', label: 'Users' },
  { value: 'endpoint.', label: 'Endpoints' },
  { value: 'broker.', label: 'Agent connections' },
  { value: 'history.', label: 'History views' },
];
