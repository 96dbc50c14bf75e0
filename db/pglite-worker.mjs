// The embedded database's thread: one PGlite instance, driven by messages from db/pglite-thread.ts. PGlite runs
// PostgreSQL as WebAssembly, synchronously, on the thread that calls it; here that thread is not the one serving
// TLS handshakes, chat requests and agent frames. Plain JavaScript, so it runs under tsx, vitest and node alike.
//
// Requests: { id, op, sync?, ... } → reply { id, ok: true, value } or { id, ok: false, error }. A `sync` request's
// reply goes to the synchronous port and is then counted in the shared flag, for a caller blocked in Atomics.wait.
//   query  { sql, params, rowMode, rawTypes, tx? }  rawTypes: type OIDs returned as PostgreSQL's text
//   exec   { sql, tx? }
//   begin  {}                  → value: a transaction id; PGlite's lock is held until `end`
//   end    { tx, commit }      → commits (or rolls back) and settles when PGlite has
//   listen { channel } / unlisten { channel }   notifications arrive as { notify: channel, payload }
//   close  {}
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';

const flag = new Int32Array(workerData.signal);
const syncPort = workerData.syncPort;
const open = new Map(); // transaction id → { tx, finish(commit) }
const listening = new Map(); // channel → unsubscribe
let nextTx = 1;

const db = await PGlite.create({
  dataDir: workerData.options.dataDir,
  loadDataDir: workerData.options.loadDataDir,
  postgresqlconf: workerData.options.conf,
  pgliteWasmModule: workerData.options.pgliteWasmModule,
  initdbWasmModule: workerData.options.initdbWasmModule,
});

/** The error as plain data: its message and PostgreSQL's fields (code, detail, constraint, …). */
function plain(err) {
  if (!(err instanceof Error)) return { message: String(err) };
  const out = { name: err.name, message: err.message };
  for (const [k, v] of Object.entries(err)) {
    if (v === null || ['string', 'number', 'boolean'].includes(typeof v)) out[k] = v;
  }
  return out;
}

function target(msg) {
  if (msg.tx === undefined) return db;
  const t = open.get(msg.tx);
  if (!t?.tx) throw new Error(`transaction ${msg.tx} is not open`);
  return t.tx;
}

function parsersFor(rawTypes) {
  if (!rawTypes?.length) return undefined;
  return Object.fromEntries(rawTypes.map((oid) => [oid, (value) => value]));
}

const ROLLED_BACK = new Error('rolled back');

function begin() {
  const id = nextTx++;
  let opened = false;
  return new Promise((started, failed) => {
    const entry = {};
    entry.done = db
      .transaction(
        (tx) =>
          new Promise((commit, rollback) => {
            entry.tx = tx;
            entry.finish = (ok) => (ok ? commit() : rollback(ROLLED_BACK));
            opened = true;
            started(id);
          }),
      )
      .finally(() => open.delete(id));
    open.set(id, entry);
    // BEGIN itself failed: nothing was opened.
    entry.done.catch((e) => {
      if (!opened) failed(e);
    });
  });
}

async function end(msg) {
  const t = open.get(msg.tx);
  if (!t?.finish) throw new Error(`transaction ${msg.tx} is not open`);
  t.finish(msg.commit);
  try {
    await t.done;
  } catch (e) {
    if (e !== ROLLED_BACK) throw e;
  }
}

async function handle(msg) {
  switch (msg.op) {
    case 'query':
      return target(msg).query(msg.sql, msg.params, {
        rowMode: msg.rowMode,
        parsers: parsersFor(msg.rawTypes),
      });
    case 'exec':
      return target(msg).exec(msg.sql);
    case 'begin':
      return begin();
    case 'end':
      return end(msg);
    case 'listen': {
      if (listening.has(msg.channel)) return undefined;
      const unsubscribe = await db.listen(msg.channel, (payload) =>
        parentPort.postMessage({ notify: msg.channel, payload }),
      );
      listening.set(msg.channel, unsubscribe);
      return undefined;
    }
    case 'unlisten': {
      const unsubscribe = listening.get(msg.channel);
      listening.delete(msg.channel);
      await unsubscribe?.();
      return undefined;
    }
    case 'close':
      if (!db.closed) await db.close();
      return undefined;
    default:
      throw new Error(`unknown request ${String(msg.op)}`);
  }
}

function answer(msg, reply) {
  if (!msg.sync) return parentPort.postMessage(reply);
  syncPort.postMessage(reply);
  Atomics.add(flag, 0, 1);
  Atomics.notify(flag, 0);
}

parentPort.on('message', (msg) => {
  handle(msg).then(
    (value) => answer(msg, { id: msg.id, ok: true, value }),
    (e) => answer(msg, { id: msg.id, ok: false, error: plain(e) }),
  );
});
parentPort.postMessage({ ready: true });
