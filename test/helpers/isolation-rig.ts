// What an isolation test from chat needs: a network namespace for the agent, the platform and broker on the
// host side of it, and a TCP server outside it that isolation must cut off and unisolation let back.
import { createServer } from 'node:net';
import type { Driver } from './db.ts';
import { type E2E, startE2E } from './e2e.ts';
import { createNamespace, type Namespace } from './netns.ts';

export interface IsolationRig {
  ns: Namespace;
  e: E2E;
  /** A port on the host side that answers "other": reachable from inside unless the agent is isolated. */
  otherPort: number;
  stop(): Promise<void>;
}

export async function startIsolationRig(driver: Driver): Promise<IsolationRig> {
  const ns = createNamespace();
  let e: E2E | undefined;
  const other = createServer((s) => s.on('error', () => {}).end('other'));
  const stop = async () => {
    await e?.stop();
    other.close();
    ns.destroy();
  };
  try {
    e = await startE2E(driver, { brokerHost: ns.hostIp, brokerPublicHost: ns.hostIp });
    await new Promise<void>((r) => other.listen(0, ns.hostIp, r));
    return { ns, e, otherPort: (other.address() as { port: number }).port, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
