// Bolt and the Web API client log through @slack/logger's interface (variadic strings); this forwards those
// lines to the platform's pino-style logger so everything lands in one log stream with one format.
import { type Logger as BoltLogger, LogLevel } from '@slack/bolt';
import type { Logger } from '../../bot/ports.ts';

export function toBoltLogger(logger: Logger): BoltLogger {
  let level: LogLevel = LogLevel.INFO;
  const order = [LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR];
  const enabled = (l: LogLevel) => order.indexOf(l) >= order.indexOf(level);
  const line = (msg: unknown[]) => msg.map((m) => (m instanceof Error ? m.message : String(m))).join(' ');
  const errOf = (msg: unknown[]) => msg.find((m): m is Error => m instanceof Error);
  return {
    debug: (...msg: unknown[]) => enabled(LogLevel.DEBUG) && logger.debug({ component: 'slack' }, line(msg)),
    info: (...msg: unknown[]) => enabled(LogLevel.INFO) && logger.info({ component: 'slack' }, line(msg)),
    warn: (...msg: unknown[]) => enabled(LogLevel.WARN) && logger.warn({ component: 'slack' }, line(msg)),
    error: (...msg: unknown[]) => logger.error({ component: 'slack', err: errOf(msg) }, line(msg)),
    setLevel: (l: LogLevel) => {
      level = l;
    },
    getLevel: () => level,
    setName: () => {},
  };
}
