// The agents' side of `npm run bench:broker`: a child process holding N agent connections (each with its own
// certificate) that ack every delivery and report a result on each go-ahead. Driven over IPC by
// bench/broker-bench.ts: connect, disconnect, seen.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import WebSocket from 'ws';
import { PROTOCOL_VERSION } from '../protocol/frames.ts';

const { port, certsFile } = JSON.parse(process.argv[2]!) as { port: number; certsFile: string };
const { key, ca, certs } = JSON.parse(readFileSync(certsFile, 'utf8')) as {
  key: string;
  ca: string;
  certs: string[];
};
const socks: WebSocket[] = [];
const seen = new Map<string, number>();
// One secure context per identity (each agent has its own certificate), built once before any timing, as a
// real agent builds its own once at start: the figure is the broker's connection time, not this process
// parsing keys. The floor (../shared/floor) likewise builds its one context before it connects.
const contexts = certs.map((cert) => createSecureContext({ key, cert, ca }));
let connectStart = 0;
function connectAll() {
  connectStart = performance.now();
  let next = 0;
  let ready = 0;
  return new Promise<number>((done) => {
    const one = () => {
      if (next >= certs.length) return;
      const i = next++;
      const secureContext = contexts[i];
      // `ws` passes TLS options through to tls.connect; its types just do not list secureContext.
      const ws = new WebSocket(`wss://localhost:${port}/agent`, {
        secureContext,
        perMessageDeflate: false,
      } as WebSocket.ClientOptions);
      socks[i] = ws;
      ws.on('open', () =>
        ws.send(
          JSON.stringify({
            type: 'hello',
            v: PROTOCOL_VERSION,
            hostname: `sim-${i}`,
            os: 'linux',
            osVersion: 'bench',
            agentVersion: '1.0.0',
            capabilities: ['isolate'],
            isolated: false,
          }),
        ),
      );
      ws.on('message', (m) => {
        const f = JSON.parse(m.toString());
        if (f.type === 'welcome') {
          ready++;
          if (ready === certs.length) done(performance.now() - connectStart);
          else one();
        } else if (f.type === 'delivery') {
          seen.set(f.id, (seen.get(f.id) ?? 0) + 1);
          ws.send(JSON.stringify({ type: 'ack', id: f.id, nonce: randomBytes(16).toString('base64url') }));
        } else if (f.type === 'proceed' && f.go) {
          ws.send(JSON.stringify({ type: 'result', id: f.id, ok: true, result: {} }));
        }
      });
      ws.on('error', (e) => console.error('client error', e.message));
    };
    for (let i = 0; i < 200; i++) one();
  });
}
process.on('message', async (msg: { cmd: string }) => {
  if (msg.cmd === 'connect') {
    const ms = await connectAll();
    process.send!({ connected: certs.length, ms });
  } else if (msg.cmd === 'disconnect') {
    for (const ws of socks) ws.terminate();
    process.send!({ disconnected: true });
  } else if (msg.cmd === 'seen') {
    const counts = [...seen.values()];
    process.send!({ deliveries: counts.length, doubled: counts.filter((c) => c > 1).length });
  }
});
process.send!({ ready: true });
