// Isolate and unisolate from the console chat to a real agent in a network namespace, with real nftables:
// after the approvals and step-ups, a server outside the namespace is unreachable from inside while the
// agent keeps its broker; after unisolate it is reachable again. The thread and the audit log say so.
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpoints } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { auditActions, type E2E } from './helpers/e2e.ts';
import { type IsolationRig, startIsolationRig } from './helpers/isolation-rig.ts';
import { type Namespace, namespacesUnavailable, reachableFromInside } from './helpers/netns.ts';

const cannot = namespacesUnavailable();
if (cannot) console.warn(`chat isolation tests skipped: ${cannot}`);

describe.skipIf(cannot !== undefined).each(drivers)(
  'isolation from chat on %s',
  { timeout: 180_000 },
  (driver) => {
    let rig: IsolationRig | undefined;
    let ns: Namespace;
    let e: E2E;
    let otherPort: number;

    beforeAll(async () => {
      rig = await startIsolationRig(driver);
      ({ ns, e, otherPort } = rig);
    }, 120_000);
    afterAll(async () => {
      await rig?.stop();
    });

    it('isolates an endpoint and lifts it again, each after approval, with the effect on the host', async () => {
      const iso = await e.agent('iso-01', [], { netns: ns.name });
      expect(await reachableFromInside(ns, ns.hostIp, otherPort)).toBe(true);

      e.lapseWindows();
      const on = await e.act('isolate iso-01 --reason "C2 beacon" --case IR-9');
      expect(on.thread.join('\n')).toContain('iso-01: isolated from the network (nftables)');
      expect(await reachableFromInside(ns, ns.hostIp, otherPort)).toBe(false);
      const [row] = await e.tdb.db.select().from(endpoints).where(eq(endpoints.id, iso.endpointId));
      expect(row!.isolated).toBe(true);
      expect(auditActions(on.audit)).toEqual(
        expect.arrayContaining([
          'approval.recorded',
          'request.dispatched',
          'delivery.result',
          'request.completed',
        ]),
      );
      const result = on.audit.find((a) => a.action === 'delivery.result');
      expect(result).toMatchObject({
        outcome: 'ok',
        details: { result: { isolated: true, verified: true } },
      });

      e.lapseWindows();
      const off = await e.act('unisolate iso-01 --reason "cleaned"');
      expect(off.thread.join('\n')).toContain('iso-01: isolation lifted (nftables)');
      expect(await reachableFromInside(ns, ns.hostIp, otherPort)).toBe(true);
      const [after] = await e.tdb.db.select().from(endpoints).where(eq(endpoints.id, iso.endpointId));
      expect(after!.isolated).toBe(false);
    });
  },
);
