// The agent's connection loop: mTLS WebSocket to the broker, hello, then deliveries one at a time in the
// order they arrive. For each: check the platform signature, consult the journal, check the signed expiry,
// ack with a fresh nonce, wait for the broker's go-ahead signed over that nonce, journal (fsync'd), execute,
// journal the result, send it. Whoever holds the broker's TLS certificate but not the platform's signing key
// can therefore replay nothing: not an expired delivery, not one already run, not a go-ahead given to
// another ack. A delivery the journal cannot record is not run, and is reported failed with the reason.
// After a restart, a script that kept running is found through the journal and its real outcome reported.
// A broker silent for two heartbeat periods is taken as gone; reconnects use full-jitter exponential backoff.
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import WebSocket from 'ws';
import { canonicalJson } from '../protocol/canonical-json.ts';
import {
  type AgentRefusal,
  type BrokerFrame,
  brokerFrame,
  DELIVERY_CLOCK_SKEW_MS,
  MAX_WS_PAYLOAD,
  PROTOCOL_VERSION,
  signedDeliveryFields,
  signedProceedFields,
  splitChunk,
} from '../protocol/frames.ts';
import { type AgentOptions, type ExecContext, execute } from './actions/execute.ts';
import { removeRun } from './actions/script-files.ts';
import type { AgentState } from './agent-state.ts';
import type { ActionOutcome, Journal, JournalEntry } from './journal.ts';
import { createJournalWriter } from './journal-writer.ts';
import { createLink, type Link } from './link.ts';
import { createUnfinishedDeliveries } from './unfinished-deliveries.ts';
import { AGENT_VERSION } from './version.ts';

export interface ClientOptions extends AgentOptions {
  backoffBaseMs: number;
  backoffMaxMs: number;
  osVersion: string;
  capabilities: string[];
}

type Delivery = Extract<BrokerFrame, { type: 'delivery' }>;
type Proceed = Extract<BrokerFrame, { type: 'proceed' }>;
type Decision = { go: boolean; reason?: string; refused?: AgentRefusal };

/**
 * A connection that brings nothing (no ping, no frame, no pong) for this many heartbeat periods is dead. The
 * broker pings every period, and the agent pings it too after one silent period, so a live broker is never
 * silent that long.
 */
const SILENT_HEARTBEATS = 2;
/** How long a connection attempt may take: one heartbeat period, within these bounds. */
const HANDSHAKE_MIN_MS = 2_000;
const HANDSHAKE_MAX_MS = 10_000;

export function createAgentClient(deps: {
  state: AgentState;
  journal: Journal;
  options: ClientOptions;
  log: (msg: string, extra?: object) => void;
}) {
  const { state, journal, options, log } = deps;
  const identity = state.identity();
  const tls = state.tls();
  const signingKey = createPublicKey(state.signingPublicKey());
  const running = new Set<string>();
  const writer = createJournalWriter({
    journal,
    log,
    onRecorded: (entry) => entry.script && removeRun(entry.script),
  });
  const proceedWaiters = new Map<string, { nonce: string; resolve: (d: Decision) => void }>();
  let link: Link | undefined;
  let ws: WebSocket | undefined;
  let attempt = 0;
  let heartbeatSeconds = 30;
  /** Restarts the live connection's silence check (the broker's `welcome` may change the period). */
  let rewatch: (() => void) | undefined;
  let stopped = false;
  let work: Promise<unknown> = Promise.resolve();

  const url = new URL('/agent', identity.broker.replace(/\/+$/, '/'));

  function verifySignature(d: Delivery): boolean {
    try {
      const fields = signedDeliveryFields({ ...d, endpointId: identity.endpointId });
      return verify(null, Buffer.from(canonicalJson(fields)), signingKey, Buffer.from(d.signature, 'base64'));
    } catch {
      return false;
    }
  }

  /** True only for a go-ahead the platform signed for this endpoint, this delivery and this ack's nonce. */
  function verifyProceed(f: Proceed, nonce: string): boolean {
    if (f.nonce !== nonce) return false;
    try {
      const fields = signedProceedFields({ endpointId: identity.endpointId, id: f.id, go: f.go, nonce });
      return verify(null, Buffer.from(canonicalJson(fields)), signingKey, Buffer.from(f.signature, 'base64'));
    } catch {
      return false;
    }
  }

  /** Does not run the delivery, and tells the broker why in a failed result it records and audits. */
  function refuse(on: Link, d: Delivery, refused: AgentRefusal, error: string) {
    log(`refusing a delivery: ${error}`, { id: d.id, action: d.action, refused });
    on.send({ type: 'result', id: d.id, ok: false, error, result: { refused } });
  }

  function sendResult(id: string, outcome: ActionOutcome) {
    link?.send({
      type: 'result',
      id,
      ok: outcome.ok,
      result: outcome.result,
      error: outcome.error?.slice(0, 8000),
    });
  }

  /** Records a result (or keeps retrying it) and sends it. */
  function finishDelivery(id: string, outcome: ActionOutcome) {
    writer.finish(id, outcome);
    sendResult(id, outcome);
  }

  function execContext(deliveryId: string, startedAt: string): ExecContext {
    return {
      deliveryId,
      journal: {
        startedAt,
        recordScript: async (rec) => void (await writer.recordScript(deliveryId, rec)),
      },
      link: () => link,
      options,
      state,
      brokerUrl: identity.broker,
      log,
    };
  }

  const unfinished = createUnfinishedDeliveries({
    journal,
    stateDir: state.dir,
    maxOutputBytes: options.maxOutputBytes,
    execContext,
    log,
  });

  /** At start: the scripts the last run of this agent left behind, settled before any new delivery runs. */
  async function settleLeftoverScripts() {
    for (const entry of unfinished.leftoverScripts()) {
      running.add(entry.id);
      try {
        const outcome = await unfinished.settle(entry);
        log('script settled after a restart', { id: entry.id, ok: outcome.ok, error: outcome.error });
        finishDelivery(entry.id, outcome);
      } finally {
        running.delete(entry.id);
      }
    }
  }

  async function handleDelivery(d: Delivery, on: Link) {
    if (!on.isOpen()) return; // the broker sends it again after we reconnect
    if (!verifySignature(d)) {
      return refuse(
        on,
        d,
        'bad_signature',
        'the delivery signature does not verify; the agent did not run it',
      );
    }
    const seen = journal.get(d.id);
    const kept = seen?.result ?? writer.unrecorded(d.id);
    if (kept) {
      log('delivery already done; sending the stored result again', { id: d.id });
      return sendResult(d.id, kept);
    }
    if (seen) {
      if (running.has(d.id)) return;
      // Started before a crash or restart and never finished: report what became of it, never run it twice.
      running.add(d.id);
      try {
        finishDelivery(d.id, await unfinished.settle(seen));
      } finally {
        running.delete(d.id);
      }
      return;
    }
    // Checked only for a delivery that would run now: a finished one still gets its stored result above.
    const expiresAt = Date.parse(d.expiresAt);
    if (!Number.isFinite(expiresAt) || Date.now() > expiresAt + DELIVERY_CLOCK_SKEW_MS) {
      return refuse(
        on,
        d,
        'expired',
        `the delivery expired at ${d.expiresAt} (this agent's clock says ${new Date().toISOString()}, ` +
          `tolerance ${DELIVERY_CLOCK_SKEW_MS / 60_000} minutes); the agent did not run it`,
      );
    }
    const nonce = randomBytes(16).toString('base64url');
    const decision = await new Promise<Decision>((resolve) => {
      // No answer means the broker lost our ack; reconnecting makes it send the delivery again.
      const timer = setTimeout(() => {
        proceedWaiters.delete(d.id);
        log('no answer to an ack; reconnecting', { id: d.id });
        ws?.terminate();
        resolve({ go: false, reason: 'no answer from the broker' });
      }, 60_000);
      proceedWaiters.set(d.id, {
        nonce,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
      });
      on.send({ type: 'ack', id: d.id, nonce });
    });
    if (decision.refused) {
      return refuse(
        on,
        d,
        decision.refused,
        'the go-ahead for this delivery is not signed by the platform for this ack; the agent did not run it',
      );
    }
    if (!decision.go) {
      log('broker said not to run the delivery', { id: d.id, reason: decision.reason });
      return;
    }
    let entry: JournalEntry;
    try {
      entry = await writer.start(d.id, d.action);
    } catch (e) {
      // Not in the journal, so not run: a crash now could not tell whether it ran. Nothing ran, so a
      // redelivery may try again once there is room.
      const error =
        `not run: the agent could not write this delivery to its journal (${(e as Error).message}); ` +
        `it runs nothing it has not recorded first. Free space in ${journal.dir}`;
      log('delivery not run: the journal cannot be written', { id: d.id, action: d.action, error });
      return sendResult(d.id, { ok: false, error });
    }
    running.add(d.id);
    try {
      log('running delivery', { id: d.id, action: d.action });
      let outcome: ActionOutcome;
      try {
        outcome = await execute(d.action, d.payload, execContext(d.id, entry.startedAt));
      } catch (e) {
        outcome = { ok: false, error: (e as Error).message };
      }
      log('delivery done', { id: d.id, action: d.action, ok: outcome.ok, error: outcome.error });
      finishDelivery(d.id, outcome);
    } finally {
      running.delete(d.id);
    }
  }

  function onFrame(f: BrokerFrame, on: Link) {
    switch (f.type) {
      case 'welcome':
        attempt = 0;
        heartbeatSeconds = f.heartbeatSeconds;
        rewatch?.();
        log('connected', { endpointId: f.endpointId, brokerId: f.brokerId, heartbeatSeconds });
        return;
      case 'delivery':
        work = work
          .then(() => handleDelivery(f, on))
          .catch((e) => log('delivery handling failed', { err: String(e) }));
        return;
      case 'proceed': {
        const w = proceedWaiters.get(f.id);
        if (!w) return log('broker sent a go-ahead for no ack of ours; ignored', { id: f.id });
        proceedWaiters.delete(f.id);
        // Not running is always safe, so only a "go" must prove it comes from the platform.
        if (f.go && !verifyProceed(f, w.nonce)) return w.resolve({ go: false, refused: 'bad_proceed' });
        w.resolve({ go: f.go, reason: f.reason });
        return;
      }
      case 'error':
        (
          on.route(f.ref) ?? {
            frame: () => log('broker error', { code: f.code, message: f.message, ref: f.ref }),
          }
        ).frame(f);
        return;
      case 'file_start':
      case 'file_end':
      case 'file_abort':
      case 'file_stored':
        on.route(f.transferId)?.frame(f);
        return;
      case 'pong':
        return;
    }
  }

  function connect() {
    if (stopped) return;
    const sock = new WebSocket(url, {
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      perMessageDeflate: false,
      maxPayload: MAX_WS_PAYLOAD,
      // A broker that cannot finish the handshake within a heartbeat period is not there (packets dropped);
      // the next attempt may find it.
      handshakeTimeout: Math.min(HANDSHAKE_MAX_MS, Math.max(HANDSHAKE_MIN_MS, heartbeatSeconds * 1000)),
    });
    ws = sock;
    let lastHeard = Date.now();
    let heartbeat: NodeJS.Timeout | undefined;
    // Checked four times a period: a dead connection is dropped within 2¼ heartbeat periods of its last
    // sign of life.
    const watch = () => {
      const periodMs = heartbeatSeconds * 1000;
      const silentMs = Date.now() - lastHeard;
      if (silentMs > SILENT_HEARTBEATS * periodMs) {
        log('the broker went silent; reconnecting', { silentMs, heartbeatSeconds });
        sock.terminate();
        return;
      }
      // One silent period: ask. A live broker answers a ping at once, even if its own pings are late.
      if (silentMs > periodMs) sock.ping();
      heartbeat = setTimeout(watch, Math.max(250, periodMs / 4));
    };
    sock.on('open', () => {
      const l = createLink(sock);
      link = l;
      l.send({
        type: 'hello',
        v: PROTOCOL_VERSION,
        hostname: identity.hostname,
        os: options.os,
        osVersion: options.osVersion,
        agentVersion: AGENT_VERSION,
        capabilities: options.capabilities,
        isolated: state.isolation().isolated,
      });
      rewatch = () => {
        clearTimeout(heartbeat);
        watch();
      };
      watch();
    });
    sock.on('ping', () => {
      lastHeard = Date.now();
    });
    sock.on('pong', () => {
      lastHeard = Date.now();
    });
    sock.on('message', (data, isBinary) => {
      lastHeard = Date.now();
      const on = link;
      if (!on) return;
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) {
        const c = splitChunk(buf);
        if (c) on.route(c.transferId)?.chunk(c.data);
        return;
      }
      let parsed: ReturnType<typeof brokerFrame.safeParse>;
      try {
        parsed = brokerFrame.safeParse(JSON.parse(buf.toString('utf8')));
      } catch {
        return log('broker sent a frame that is not JSON');
      }
      if (!parsed.success)
        return log('broker sent a frame this agent does not understand', {
          issues: parsed.error.issues.slice(0, 3),
        });
      onFrame(parsed.data, on);
    });
    sock.on('error', (e) => log('connection error', { err: e.message }));
    sock.on('close', (code, reason) => {
      if (heartbeat) clearTimeout(heartbeat);
      if (ws === sock) rewatch = undefined;
      const wasLink = link;
      if (ws === sock) {
        link = undefined;
        ws = undefined;
      }
      wasLink?.markClosed();
      // Deliveries waiting for a go-ahead are dropped; the broker sends them again on reconnect.
      for (const [id, w] of proceedWaiters) {
        proceedWaiters.delete(id);
        w.resolve({ go: false, reason: 'disconnected' });
      }
      if (stopped) return;
      // Never longer than a heartbeat period: with one attempt of at most a period, the agent is back
      // within two periods of the broker becoming reachable again.
      const cap = Math.min(options.backoffMaxMs, heartbeatSeconds * 1000);
      const delay = Math.random() * Math.min(cap, options.backoffBaseMs * 2 ** attempt);
      attempt = Math.min(attempt + 1, 30);
      log('disconnected', { code, reason: reason.toString(), retryInMs: Math.round(delay) });
      setTimeout(connect, delay);
    });
  }

  return {
    start() {
      work = work
        .then(settleLeftoverScripts)
        .catch((e) => log('settling earlier scripts failed', { err: String(e) }));
      connect();
    },
    async stop() {
      stopped = true;
      writer.stop();
      ws?.close(1001, 'agent stopping');
    },
  };
}
