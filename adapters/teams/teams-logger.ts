// The Teams SDK logs through its own ILogger (variadic arguments, child loggers by name); this forwards its
// lines to the platform's logger so everything lands in one stream, and decides what may be logged: only
// strings and error messages, never the objects the SDK passes along (an HTTP error carries the request's
// headers, bearer token included). The SDK's own LOG_LEVEL environment variable plays no part.
import type { ILogger, ILoggerOptions, LogLevel } from '@microsoft/teams.common';
import type { Logger } from '../../bot/ports.ts';

function line(msg: unknown[]): string {
  return msg
    .map((m) => (typeof m === 'string' ? m : m instanceof Error ? m.message : ''))
    .filter(Boolean)
    .join(' ')
    .slice(0, 500);
}

export function toTeamsLogger(logger: Logger, name = 'teams'): ILogger {
  // A refused inbound token is the sender's problem, not ours: the validator's errors are warnings here.
  const refusals = /jwt|token|validation/i.test(name);
  const self: ILogger = {
    loggerOptions: { level: 'info' as LogLevel },
    debug: (...msg) => logger.debug({ component: name }, line(msg)),
    trace: (...msg) => logger.debug({ component: name }, line(msg)),
    info: (...msg) => logger.info({ component: name }, line(msg)),
    warn: (...msg) => logger.warn({ component: name }, line(msg)),
    error: (...msg) =>
      refusals ? logger.warn({ component: name }, line(msg)) : logger.error({ component: name }, line(msg)),
    log(level: LogLevel, ...msg: unknown[]) {
      if (level === 'error') self.error(...msg);
      else if (level === 'warn') self.warn(...msg);
      else if (level === 'info') self.info(...msg);
      else self.debug(...msg);
    },
    child: (child: string, _overrides?: ILoggerOptions) => toTeamsLogger(logger, `${name}/${child}`),
  };
  return self;
}
