// The embedded database on its own thread. PGlite runs PostgreSQL as WebAssembly, synchronously, on the thread
// that calls it: in the platform's process a batch of a few hundred acknowledgements kept the event loop, and
// with it every TLS handshake, agent frame and chat request, waiting for tens of milliseconds. Here PGlite lives
// in a worker thread (db/pglite-worker.mjs) and this class gives drizzle the part of PGlite's client it uses:
// `query` and `transaction`, plus `listen` and `close` for the Database around it. Semantics are PGlite's own:
// one connection, a transaction holds it until it ends and every other query waits.
//
// A statement inside a transaction is answered synchronously: this thread posts it and blocks in Atomics.wait
// until the worker has run it. The transaction holds the database's one connection, so nothing else could run
// on it meanwhile; waiting for the answer as a message instead would add a full turn of this (busy) event loop
// to every statement while the connection stays held, and the whole database would run at the event loop's
// pace. Its commit is answered the same way. Statements outside a transaction, and the wait for a transaction to
// begin (another may hold the connection), are asynchronous.
import { readFile } from 'node:fs/promises';
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';

export interface PgliteThreadOptions {
  /** Data directory; absent means in memory. */
  dataDir?: string;
  /** A dumped data directory to start from (PGlite's `loadDataDir`). */
  loadDataDir?: Blob;
  /** Lines for postgresql.conf. */
  conf?: string[];
}

export interface QueryOptions {
  rowMode?: 'array' | 'object';
  /**
   * Per type OID. Only parsers that return PostgreSQL's text unchanged can cross to the database's thread (what
   * drizzle passes for dates, timestamps and intervals), so the OIDs are sent and the worker applies those.
   */
  parsers?: Record<number, (value: string) => unknown>;
}

export interface QueryResult {
  rows: unknown[];
  fields: { name: string; dataTypeID: number }[];
  affectedRows?: number;
}

type ErrorData = { message: string } & Record<string, unknown>;
type SyncReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: ErrorData };
type Reply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: ErrorData }
  | { notify: string; payload: string }
  | { ready: true };

interface Pending {
  resolve: (value: unknown) => void;
  reject: (e: unknown) => void;
}

/** The worker's error, with PostgreSQL's fields (code, detail, constraint, …), and a stack from this thread. */
function rebuild(data: ErrorData): Error {
  const err = new Error(data.message);
  Object.assign(err, data);
  return err;
}

/** WebAssembly's compile (a global of Node's that this project's type libraries do not declare). */
const wasm = (globalThis as unknown as { WebAssembly: { compile(bytes: Uint8Array): Promise<object> } })
  .WebAssembly;
let compiling: Promise<{ pgliteWasmModule: object; initdbWasmModule: object }> | undefined;
/**
 * PGlite's WebAssembly, compiled once per process and shared with every database thread it starts (a compiled
 * module crosses to a worker without being compiled again).
 */
function compiledPglite() {
  compiling ??= (async () => {
    const dist = new URL('.', import.meta.resolve('@electric-sql/pglite'));
    const [pgliteWasmModule, initdbWasmModule] = await Promise.all(
      ['pglite.wasm', 'initdb.wasm'].map(async (f) => wasm.compile(await readFile(new URL(f, dist)))),
    );
    return { pgliteWasmModule: pgliteWasmModule!, initdbWasmModule: initdbWasmModule! };
  })();
  return compiling;
}

/** How long a statement inside a transaction may run before this thread stops waiting for it. */
const STATEMENT_WAIT_MS = 120_000;

export class PgliteThread {
  #worker: Worker;
  #flag: Int32Array;
  #syncPort: MessagePort;
  #pending = new Map<number, Pending>();
  #listeners = new Map<string, Set<(payload: string) => void>>();
  #nextId = 1;
  #stopped: Error | undefined;
  #closed = false;

  private constructor(worker: Worker, flag: Int32Array, syncPort: MessagePort) {
    this.#worker = worker;
    this.#flag = flag;
    this.#syncPort = syncPort;
  }

  /** Starts the thread and opens the database in it; rejects with PGlite's error when it cannot. */
  static async start(opts: PgliteThreadOptions): Promise<PgliteThread> {
    const compiled = await compiledPglite();
    const signal = new SharedArrayBuffer(4);
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(new URL('./pglite-worker.mjs', import.meta.url), {
      workerData: { options: { ...opts, ...compiled }, signal, syncPort: port2 },
      transferList: [port2],
      // No TypeScript loader in there: the worker is plain JavaScript and this keeps its memory down.
      execArgv: [],
    });
    port1.unref();
    const thread = new PgliteThread(worker, new Int32Array(signal), port1);
    return new Promise((resolve, reject) => {
      worker.on('message', (m: Reply) => {
        if ('ready' in m) {
          worker.unref();
          resolve(thread);
        } else thread.#onMessage(m);
      });
      worker.on('error', (e) => {
        reject(e);
        thread.#stop(e);
      });
      worker.on('exit', (code) => {
        const e = new Error(`the embedded database's thread ended (exit code ${code})`);
        reject(e);
        thread.#stop(e);
      });
    });
  }

  get closed(): boolean {
    return this.#closed || this.#stopped !== undefined;
  }

  query<T = unknown>(
    sql: string,
    params?: unknown[],
    options?: QueryOptions,
  ): Promise<QueryResult & { rows: T[] }> {
    return this.#request({ op: 'query', ...queryMessage(sql, params, options) }) as Promise<
      QueryResult & { rows: T[] }
    >;
  }

  /**
   * Runs `fn` in a transaction, as PGlite's `transaction`: committed when `fn` resolves, rolled back when it
   * throws (and the error rethrown).
   */
  async transaction<T>(
    fn: (tx: { query: PgliteThread['query']; closed: boolean }) => Promise<T>,
  ): Promise<T> {
    const txId = (await this.#request({ op: 'begin' })) as number;
    const tx = {
      closed: false,
      query: ((sql: string, params?: unknown[], options?: QueryOptions) =>
        this.#requestNow({
          op: 'query',
          tx: txId,
          ...queryMessage(sql, params, options),
        })) as PgliteThread['query'],
    };
    let result: T;
    try {
      result = await fn(tx);
    } catch (e) {
      tx.closed = true;
      await this.#requestNow({ op: 'end', tx: txId, commit: false }).catch(() => {});
      throw e;
    }
    tx.closed = true;
    await this.#requestNow({ op: 'end', tx: txId, commit: true });
    return result;
  }

  /** LISTEN on `channel`; resolves to the unsubscribe function, as PGlite's `listen`. */
  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    let set = this.#listeners.get(channel);
    if (!set) {
      set = new Set();
      this.#listeners.set(channel, set);
      await this.#request({ op: 'listen', channel });
    }
    set.add(onPayload);
    return async () => {
      const current = this.#listeners.get(channel);
      if (!current?.delete(onPayload) || current.size > 0) return;
      this.#listeners.delete(channel);
      if (!this.closed) await this.#request({ op: 'unlisten', channel });
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.#request({ op: 'close' });
    } finally {
      this.#closed = true;
      await this.#worker.terminate();
    }
  }

  #request(message: Record<string, unknown>): Promise<unknown> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    if (this.#closed) return Promise.reject(new Error('the embedded database is closed'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      // The worker keeps the process alive only while an answer is awaited, as an in-process PGlite would.
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, ...message });
    });
  }

  /**
   * Posts the request and blocks this thread until the worker has answered it (see the top of this file). The
   * worker posts each synchronous answer to its own port and then counts it in the shared flag, so a wait
   * that starts after the count was read cannot miss the answer, and an answer is only ever taken by its id.
   */
  #requestNow(message: Record<string, unknown>): Promise<unknown> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    if (this.#closed) return Promise.reject(new Error('the embedded database is closed'));
    const id = this.#nextId++;
    this.#worker.postMessage({ id, sync: true, ...message });
    const until = Date.now() + STATEMENT_WAIT_MS;
    for (;;) {
      const counted = Atomics.load(this.#flag, 0);
      let got = receiveMessageOnPort(this.#syncPort);
      while (got) {
        const m = got.message as SyncReply;
        if (m.id === id) return m.ok ? Promise.resolve(m.value) : Promise.reject(rebuild(m.error));
        got = receiveMessageOnPort(this.#syncPort); // an answer no one waits for any more
      }
      const left = until - Date.now();
      if (left <= 0 || Atomics.wait(this.#flag, 0, counted, left) === 'timed-out') {
        const e = new Error(
          `the embedded database did not answer a statement within ${STATEMENT_WAIT_MS / 1000} s`,
        );
        this.#stop(e);
        void this.#worker.terminate();
        return Promise.reject(e);
      }
    }
  }

  #onMessage(m: Exclude<Reply, { ready: true }>): void {
    if ('notify' in m) {
      for (const fn of this.#listeners.get(m.notify) ?? []) fn(m.payload);
      return;
    }
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (this.#pending.size === 0) this.#worker.unref();
    if (m.ok) p.resolve(m.value);
    else p.reject(rebuild(m.error));
  }

  /** The thread is gone: everything waiting, and everything asked from now on, fails with why. */
  #stop(e: Error): void {
    if (this.#stopped || this.#closed) return;
    this.#stopped = e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }
}

function queryMessage(sql: string, params: unknown[] | undefined, options: QueryOptions | undefined) {
  return {
    sql,
    params,
    rowMode: options?.rowMode,
    rawTypes: options?.parsers ? Object.keys(options.parsers).map(Number) : undefined,
  };
}
