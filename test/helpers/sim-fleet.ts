// A fleet of simulated agents in one process: each with its own certificate and endpoint row, speaking the
// real agent protocol over mTLS WebSockets (hello, ack with a fresh nonce, proceed, result) and keeping a
// journal as the reference agent does, so a delivery it has run is never run again and its stored result is
// sent again when the delivery comes back after a reconnect. Hundreds of agent processes would not fit on a
// test machine; what the broker sees of these is the same.
import { randomBytes, randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { certFingerprint } from '../../broker/pki/pki.ts';
import type { Database } from '../../db/client.ts';
import { endpoints } from '../../db/schema.ts';
import { PROTOCOL_VERSION } from '../../protocol/frames.ts';
import { seedSegment } from './agents.ts';
import { keyAndCsr } from './raw-agent.ts';

type Issue = (csrPem: string, endpointId: string, now: Date) => Promise<{ pem: string }>;

export interface SimAgentStats {
  /** Per delivery id: how often it reached this agent, how often it ran, and whether its result went out. */
  received: Map<string, number>;
  executed: Map<string, number>;
  connects: number;
}

/** Enrols `n` endpoints (one key pair, a certificate each) and returns the fleet, not yet connected. */
export async function createSimFleet(
  database: Database,
  opts: { n: number; issue: Issue; caPem: string; resultDelayMs: number },
) {
  const seg = await seedSegment(database, 'storm');
  const { keyPem, csrPem } = await keyAndCsr('sim');
  const members: { id: string; hostname: string; cert: string }[] = [];
  for (let i = 0; i < opts.n; i++) {
    const id = randomUUID();
    members.push({ id, hostname: `storm-${i}`, cert: (await opts.issue(csrPem, id, new Date())).pem });
  }
  for (let i = 0; i < members.length; i += 250)
    await database.db.insert(endpoints).values(
      members.slice(i, i + 250).map((m) => ({
        id: m.id,
        hostname: m.hostname,
        os: 'linux' as const,
        segmentId: seg.id,
        certFingerprint: certFingerprint(m.cert),
        certNotAfter: new Date(Date.now() + 86400_000),
      })),
    );

  const stats: SimAgentStats = { received: new Map(), executed: new Map(), connects: 0 };
  const bump = (m: Map<string, number>, id: string) => m.set(id, (m.get(id) ?? 0) + 1);

  function agent(member: (typeof members)[number]) {
    /** The journal: a delivery is entered before it runs; `result` is set once it finished. */
    const journal = new Map<string, { result?: object }>();
    const lastNonce = new Map<string, string>();
    let ws: WebSocket | undefined;
    let target: () => number = () => 0;
    let stopped = false;
    const send = (o: object) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify(o));
    };
    function connect() {
      if (stopped) return;
      const sock = new WebSocket(`wss://localhost:${target()}/agent`, {
        key: keyPem,
        cert: member.cert,
        ca: opts.caPem,
        perMessageDeflate: false,
      });
      ws = sock;
      sock.on('open', () =>
        sock.send(
          JSON.stringify({
            type: 'hello',
            v: PROTOCOL_VERSION,
            hostname: member.hostname,
            os: 'linux',
            osVersion: 'sim',
            agentVersion: '1.0.0',
            capabilities: ['isolate'],
            isolated: false,
          }),
        ),
      );
      sock.on('message', (data, binary) => {
        if (binary) return;
        const f = JSON.parse(data.toString()) as Record<string, unknown> & { id: string };
        if (f.type === 'welcome') stats.connects++;
        if (f.type === 'delivery') {
          bump(stats.received, f.id);
          const done = journal.get(f.id);
          if (done?.result) send(done.result);
          if (done) return;
          const nonce = randomBytes(16).toString('base64url');
          lastNonce.set(f.id, nonce);
          send({ type: 'ack', id: f.id, nonce });
        }
        if (f.type === 'proceed' && f.go === true && f.nonce === lastNonce.get(f.id) && !journal.has(f.id)) {
          const entry: { result?: object } = {};
          journal.set(f.id, entry);
          bump(stats.executed, f.id);
          // The work takes a while, so a broker can die between the go-ahead and the result.
          setTimeout(() => {
            entry.result = { type: 'result', id: f.id, ok: true, result: { isolated: true } };
            send(entry.result);
          }, Math.random() * opts.resultDelayMs);
        }
      });
      sock.on('error', () => {});
      sock.on('close', () => {
        if (ws === sock && !stopped) setTimeout(connect, 100 + Math.random() * 400);
      });
    }
    return {
      ...member,
      /** Connects to the broker whose port `port()` names at each (re)connect. */
      start(port: () => number) {
        target = port;
        connect();
      },
      stop() {
        stopped = true;
        ws?.terminate();
      },
    };
  }

  const agents = members.map(agent);
  return { agents, stats };
}
