// The agents' side of `npm run bench:groups`: a child process holding N simulated agents, each with its own
// certificate, speaking the real agent protocol (hello, ack with a fresh nonce, proceed, result) and keeping
// a journal as the reference agent does: a delivery is entered before it runs, runs at most once, and its
// stored result is sent again when the delivery comes back after a reconnect. An agent whose connection
// drops on its own reconnects after a short backoff; only `disconnect` keeps them away. Driven over IPC by
// bench/groups-bench-core.ts: connect, disconnect, journal.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, type SecureContext } from 'node:tls';
import WebSocket from 'ws';
import { PROTOCOL_VERSION } from '../protocol/frames.ts';

const { port, certsFile } = JSON.parse(process.argv[2]!) as { port: number; certsFile: string };
const { key, ca, certs, hostnames } = JSON.parse(readFileSync(certsFile, 'utf8')) as {
  key: string;
  ca: string;
  certs: string[];
  hostnames: string[];
};
/** Handshakes in flight at once, as the floor's client and bench:broker's do. */
const IN_FLIGHT = 200;

/** Per delivery id, across the whole fleet: how often it arrived and how often it ran. */
const received = new Map<string, number>();
const executed = new Map<string, number>();
const bump = (m: Map<string, number>, id: string) => m.set(id, (m.get(id) ?? 0) + 1);

interface Agent {
  i: number;
  ws?: WebSocket;
  ready: boolean;
  /** Set by `disconnect`: the agent stays away until the next `connect`. */
  stopped: boolean;
  context?: SecureContext;
  journal: Map<string, { result?: object }>;
  lastNonce: Map<string, string>;
}
const agents: Agent[] = certs.map((_, i) => ({
  i,
  ready: false,
  stopped: true,
  journal: new Map(),
  lastNonce: new Map(),
}));

const queue: Agent[] = [];
let inFlight = 0;
let readyCount = 0;
let onReady: (() => void) | undefined;

function pump() {
  while (inFlight < IN_FLIGHT && queue.length) open(queue.shift()!);
}

function send(a: Agent, frame: object) {
  if (a.ws?.readyState === WebSocket.OPEN) a.ws.send(JSON.stringify(frame));
}

function open(a: Agent) {
  if (a.stopped) return;
  inFlight++;
  let counted = true;
  const settle = () => {
    if (counted) {
      counted = false;
      inFlight--;
      pump();
    }
  };
  // One secure context per identity (each agent has its own certificate), built once.
  a.context ??= createSecureContext({ key, cert: certs[a.i], ca });
  // `ws` passes TLS options through to tls.connect; its types just do not list secureContext.
  const ws = new WebSocket(`wss://localhost:${port}/agent`, {
    secureContext: a.context,
    perMessageDeflate: false,
  } as WebSocket.ClientOptions);
  a.ws = ws;
  ws.on('open', () =>
    ws.send(
      JSON.stringify({
        type: 'hello',
        v: PROTOCOL_VERSION,
        hostname: hostnames[a.i],
        os: 'linux',
        osVersion: 'bench',
        agentVersion: '1.0.0',
        capabilities: ['processes', 'run'],
        isolated: false,
      }),
    ),
  );
  ws.on('message', (data, binary) => {
    if (binary) return;
    const f = JSON.parse(data.toString()) as Record<string, unknown> & { id: string };
    if (f.type === 'welcome') {
      a.ready = true;
      readyCount++;
      settle();
      if (readyCount === agents.length) onReady?.();
    } else if (f.type === 'delivery') {
      bump(received, f.id);
      const done = a.journal.get(f.id);
      if (done?.result) send(a, done.result);
      if (done) return;
      const nonce = randomBytes(16).toString('base64url');
      a.lastNonce.set(f.id, nonce);
      send(a, { type: 'ack', id: f.id, nonce });
    } else if (f.type === 'proceed' && f.go === true) {
      if (f.nonce !== a.lastNonce.get(f.id) || a.journal.has(f.id)) return;
      const entry: { result?: object } = {};
      a.journal.set(f.id, entry);
      bump(executed, f.id);
      entry.result = {
        type: 'result',
        id: f.id,
        ok: true,
        result: { processes: [{ pid: 1, name: 'init', cmdline: '/sbin/init' }], total: 1 },
      };
      send(a, entry.result);
    }
  });
  ws.on('error', () => {});
  ws.on('close', () => {
    settle();
    if (a.ws !== ws) return;
    if (a.ready) {
      a.ready = false;
      readyCount--;
    }
    // A connection the broker dropped (a missed heartbeat under load): come back, as an agent does.
    if (!a.stopped)
      setTimeout(
        () => {
          if (!a.stopped && a.ws === ws) {
            queue.push(a);
            pump();
          }
        },
        100 + Math.random() * 400,
      );
  });
}

/** Connects every agent (at most IN_FLIGHT handshakes at a time); resolves when all are welcomed. */
function connectAll(): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    onReady = () => {
      onReady = undefined;
      resolve(performance.now() - t0);
    };
    for (const a of agents) {
      a.stopped = false;
      if (!a.ws || a.ws.readyState === WebSocket.CLOSED) queue.push(a);
    }
    if (readyCount === agents.length) onReady();
    pump();
  });
}

process.on('message', async (msg: { cmd: string; ids?: string[] }) => {
  if (msg.cmd === 'connect') {
    const ms = await connectAll();
    process.send!({ connected: readyCount, ms });
  } else if (msg.cmd === 'disconnect') {
    queue.length = 0;
    for (const a of agents) {
      a.stopped = true;
      a.ws?.terminate();
    }
    process.send!({ disconnected: true });
  } else if (msg.cmd === 'journal') {
    // Of the deliveries named: how many never ran anywhere, and how many ran more than once.
    const ids = msg.ids ?? [];
    process.send!({
      lost: ids.filter((id) => !executed.has(id)).length,
      runTwice: ids.filter((id) => (executed.get(id) ?? 0) > 1).length,
      redelivered: ids.filter((id) => (received.get(id) ?? 0) > 1).length,
    });
  }
});
process.send!({ ready: true });
