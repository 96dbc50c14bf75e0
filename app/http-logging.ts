// What the HTTP server writes to its log about a request, with the secrets in URLs taken out. Step-up and
// enrolment links carry a live token in their path. Routes declared for them log quietly, but a URL no route
// matches (`/stepup/<token>/` with a trailing slash, `/enrol/<token>/x`) is logged by Fastify's 404 path at
// info, with the URL in the request object and in the message. So the scrubbing sits where every such line
// is made: the `req` and `err` serializers and the "route not found" line, whatever the path's shape.
import { LogController } from 'fastify';
import pino from 'pino';

/** Path prefixes whose following segments are link tokens or ids. */
const LINK_PREFIXES = ['stepup', 'enrol', 'files'];

/** A segment this long, of token characters, is treated as a secret wherever it appears. */
const TOKEN_LIKE = /^[A-Za-z0-9_\-~.%]{16,}$/;

/**
 * The URL as it may be logged: every segment after a link prefix (`/stepup/…`, `/enrol/…`, `/files/…`, in
 * any letter case or percent-encoding) and every token-like segment anywhere becomes `[redacted]`, and the
 * query string is reduced to `?…`.
 */
export function scrubUrl(url: string): string {
  const q = url.search(/[?#]/);
  const path = q === -1 ? url : url.slice(0, q);
  let afterPrefix = false;
  const segments = path.split('/').map((seg) => {
    if (seg === '') return seg;
    if (afterPrefix || TOKEN_LIKE.test(seg)) return '[redacted]';
    let decoded = seg;
    try {
      decoded = decodeURIComponent(seg);
    } catch {
      // malformed escapes: judge the raw text
    }
    if (LINK_PREFIXES.includes(decoded.toLowerCase())) afterPrefix = true;
    return seg;
  });
  return segments.join('/') + (q === -1 ? '' : '?…');
}

/** Scrubs link paths quoted inside free text (error messages and stacks). */
export function scrubText(text: string): string {
  return text.replace(/\/(stepup|enrol|files)\/[^\s"'`]*/gi, (_m, prefix: string) => `/${prefix}/[redacted]`);
}

type ReqLike = {
  method?: string;
  url?: string;
  ip?: string;
  headers?: Record<string, unknown>;
  socket?: { remotePort?: number };
};

/** Serializers for the app's child logger; they replace Fastify's own `req` and extend pino's `err`. */
export const httpLogSerializers = {
  req(req: ReqLike) {
    return {
      method: req.method,
      url: scrubUrl(req.url ?? ''),
      remoteAddress: req.ip,
      remotePort: req.socket?.remotePort,
    };
  },
  err(err: Error) {
    const out = pino.stdSerializers.err(err) as { message?: string; stack?: string } & Record<
      string,
      unknown
    >;
    if (typeof out.message === 'string') out.message = scrubText(out.message);
    if (typeof out.stack === 'string') out.stack = scrubText(out.stack);
    return out;
  },
};

/** Fastify's log lines, with the one that quotes the raw URL in its message ("Route … not found") scrubbed. */
export class ScrubbingLogController extends LogController {
  override routeNotFound(request: Parameters<LogController['routeNotFound']>[0]): void {
    if (this.isLogDisabled(request)) return;
    request.log.info(`Route ${request.raw.method}:${scrubUrl(request.raw.url ?? '')} not found`);
  }
}
