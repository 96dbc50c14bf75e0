// A built-in script from the console chat to a real agent: isolation-control changes the endpoint, so it
// needs the analyst's step-up, the commander's approval and step-up; the agent's own isolation backend does
// the work (logged only on a dry-run agent; real nftables in a network namespace), and the thread and the
// audit log say what happened.
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { files } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { auditActions, type E2E, startE2E } from './helpers/e2e.ts';
import { type IsolationRig, startIsolationRig } from './helpers/isolation-rig.ts';
import { type Namespace, namespacesUnavailable, reachableFromInside } from './helpers/netns.ts';

const APPROVED_TRAIL = [
  'request.created',
  'approval.recorded',
  'request.dispatched',
  'script.executed',
  'delivery.result',
  'request.completed',
];

describe.each(drivers)('a built-in script from chat on %s', { timeout: 180_000 }, (driver) => {
  let e: E2E;

  beforeAll(async () => {
    e = await startE2E(driver);
    await e.t.platform.installBuiltinScripts();
    await e.agent('web-01', ['--dry-run']);
  }, 120_000);
  afterAll(async () => {
    await e?.stop();
  });

  it('isolates through isolation-control after approval and step-up, and reports the status after', async () => {
    e.lapseWindows();
    const on = await e.act('run isolation-control web-01 action=isolate --reason "C2 beacon" --case IR-11');
    expect(on.view.params).toMatchObject({
      script: { name: 'isolation-control', version: 1 },
      args: { action: 'isolate' },
      outputCapBytes: 64 * 1024,
    });
    const text = on.thread.join('\n');
    expect(text).toContain('web-01: script exited with code 0');
    expect(text).toContain(
      'isolate: isolated from the network via nftables (dry run: nothing was changed on this host)',
    );
    const actions = auditActions(on.audit);
    expect(actions).toEqual(expect.arrayContaining(APPROVED_TRAIL));
    expect(actions.indexOf('approval.recorded')).toBeLessThan(actions.indexOf('request.dispatched'));
    expect(on.audit.find((a) => a.action === 'script.executed')).toMatchObject({
      outcome: 'ok',
      details: { result: { exitCode: 0 } },
    });

    e.lapseWindows();
    const status = await e.act('run isolation-control web-01 action=status --reason "check"');
    expect(status.thread.join('\n')).toContain('status: isolated from the network');
  });

  it('collects a triage bundle at once (read-only) from a sandboxed agent, stored as evidence', async () => {
    const r = await e.act('run triage-bundle web-01 --reason "triage" --case IR-11');
    expect(auditActions(r.audit)).not.toContain('approval.recorded');
    const executed = r.audit.find((a) => a.action === 'script.executed');
    const out = JSON.parse((executed!.details as { result: { stdout: string } }).result.stdout) as {
      uploaded: { fileId: string; sha256: string };
    };
    const [file] = await e.tdb.db.select().from(files).where(eq(files.id, out.uploaded.fileId));
    expect(file).toMatchObject({ kind: 'fetched', sha256: out.uploaded.sha256 });
    expect(r.thread.join('\n')).toContain('web-01: script exited with code 0');
  });
});

const cannot = namespacesUnavailable();
if (cannot) console.warn(`isolation-control namespace tests skipped: ${cannot}`);

describe.skipIf(cannot !== undefined).each(drivers)(
  'isolation-control with real nftables on %s',
  { timeout: 180_000 },
  (driver) => {
    let rig: IsolationRig | undefined;
    let ns: Namespace;
    let e: E2E;
    let otherPort: number;

    beforeAll(async () => {
      rig = await startIsolationRig(driver);
      ({ ns, e, otherPort } = rig);
      await e.t.platform.installBuiltinScripts();
    }, 120_000);
    afterAll(async () => {
      await rig?.stop();
    });

    it('cuts the endpoint off the network and lets it back, each after approval', async () => {
      await e.agent('iso-02', [], { netns: ns.name });
      expect(await reachableFromInside(ns, ns.hostIp, otherPort)).toBe(true);
      e.lapseWindows();
      const on = await e.act('run isolation-control iso-02 action=isolate --reason "C2 beacon"');
      expect(on.thread.join('\n')).toContain('isolate: isolated from the network via nftables');
      expect(await reachableFromInside(ns, ns.hostIp, otherPort)).toBe(false);
      expect(auditActions(on.audit)).toEqual(expect.arrayContaining(APPROVED_TRAIL));

      e.lapseWindows();
      const off = await e.act('run isolation-control iso-02 action=unisolate --reason "cleaned"');
      expect(off.thread.join('\n')).toContain('unisolate: not isolated via nftables');
      expect(await reachableFromInside(ns, ns.hostIp, otherPort)).toBe(true);
    });
  },
);
