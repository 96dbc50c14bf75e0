// Start-up against a PostgreSQL that is not there yet. Containers and hosts boot in any order, and a platform
// that exits on the first ECONNREFUSED needs a supervisor to get lucky; this waits with backoff, says what
// it is waiting for, and gives up after a set time with a message that names the server, not a stack.
import { type Database, type OpenDatabaseOptions, openDatabase } from './client.ts';

/** Errors that a database still starting (or a network still coming up) gives, and that waiting can fix. */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  // postgres.js
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  // SQLSTATE: the server is starting or shutting down, has no slot free, or the database is not created yet
  '57P03',
  '57P01',
  '53300',
  '3D000',
]);

function errorCode(e: unknown): string | undefined {
  const err = e as { code?: unknown; errors?: unknown[] };
  if (typeof err?.code === 'string') return err.code;
  // Node reports a refused dual-stack connect as an AggregateError of one error per address.
  const first = Array.isArray(err?.errors) ? (err.errors[0] as { code?: unknown }) : undefined;
  return typeof first?.code === 'string' ? first.code : undefined;
}

export function isTransientDatabaseError(e: unknown): boolean {
  const code = errorCode(e);
  return code !== undefined && TRANSIENT_CODES.has(code);
}

/** `host:port/database` of a postgres URL: enough to find the server, never the password. */
export function describeDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return 'DATABASE_URL';
  }
}

export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
  readonly code = 'database.unavailable';
}

export interface WaitForDatabase {
  /** Give up after this long (milliseconds). */
  timeoutMs: number;
  /** Told before each wait: what failed and how long until the next try. */
  onRetry(info: { attempt: number; error: string; retryInMs: number; waitedMs: number }): void;
  /** Injected for tests; real time by default. */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 5_000;

/**
 * openDatabase, retried with exponential backoff (0.25 s doubling to 5 s) while PostgreSQL refuses or is
 * unreachable, until `timeoutMs`. An error waiting cannot fix (a wrong password, a failing migration, the
 * embedded database's lock) is thrown at once. Throws DatabaseUnavailableError when time runs out.
 */
export async function openDatabaseWhenReady(
  opts: OpenDatabaseOptions,
  wait: WaitForDatabase,
): Promise<Database> {
  const now = wait.now ?? Date.now;
  const sleep = wait.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const started = now();
  let delay = FIRST_DELAY_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      return await openDatabase(opts);
    } catch (e) {
      if (!opts.url || !isTransientDatabaseError(e)) throw e;
      const error = `${errorCode(e)}: ${(e as Error).message}`.slice(0, 300);
      const waitedMs = now() - started;
      if (waitedMs + delay > wait.timeoutMs) {
        throw new DatabaseUnavailableError(
          `PostgreSQL at ${describeDatabaseUrl(opts.url)} did not accept a connection within ` +
            `${Math.round(wait.timeoutMs / 1000)} s (last error ${error}). Check that it is running and ` +
            'reachable and that DATABASE_URL is right; DB_START_TIMEOUT sets how long to wait at start.',
        );
      }
      wait.onRetry({ attempt, error, retryInMs: delay, waitedMs });
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }
}
