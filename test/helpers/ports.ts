// A port for a process a test starts, which must be known before that process listens. Ports come from below
// the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up here): a port taken from the
// ephemeral range can be handed to another test's outbound connection before the child binds it, which once
// failed a start-up with EADDRINUSE. Each candidate is checked by binding it, and candidates are random, so
// tests side by side rarely try the same one.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const LOW = 20_000;

function ephemeralStart(): number {
  try {
    const first = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    return Number.isInteger(first) && first > LOW + 1_000 ? first : 32_768;
  } catch {
    return 32_768;
  }
}

const HIGH = ephemeralStart();

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (await bindable(port)) return port;
  }
  throw new Error(`no free port between ${LOW} and ${HIGH} after 200 tries`);
}
