// Every action from the console chat to a real agent process and back: the request, the requester's and the
// approver's step-ups, dispatch through the broker, the effect on the endpoint, the result in the thread and
// the audit trail. The agent acts inside a sandbox directory (files, scripts, and only processes started
// there), so nothing here touches the machine running the tests.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deliveries, files } from '../db/schema.ts';
import { drivers } from './helpers/db.ts';
import { auditActions, type E2E, type E2EAgent, startE2E } from './helpers/e2e.ts';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe.each(drivers)('every action end to end on %s', { timeout: 180_000 }, (driver) => {
  let e: E2E;
  let web: E2EAgent;

  beforeAll(async () => {
    e = await startE2E(driver);
    web = await e.agent('web-01');
  }, 120_000);
  afterAll(async () => {
    await e?.stop();
  });

  /** The audit trail every approved action leaves, in order. */
  function expectApprovedTrail(actions: string[], ok = true) {
    expect(actions).toEqual(
      expect.arrayContaining([
        'request.created',
        'request.pending_approval',
        'approval.recorded',
        'request.approved',
        'request.dispatched',
        'delivery.sent',
        'delivery.acknowledged',
        'delivery.result',
        'request.completed',
      ]),
    );
    expect(actions.indexOf('approval.recorded')).toBeLessThan(actions.indexOf('request.dispatched'));
    expect(actions.indexOf('request.dispatched')).toBeLessThan(actions.indexOf('delivery.result'));
    void ok;
  }

  it('kills a process by pid: the decoy is gone, and the thread and the audit log say so', async () => {
    e.lapseWindows();
    const decoy = e.decoy(web);
    const r = await e.act(`kill web-01 ${decoy.pid} --reason "beaconing" --case IR-7`);
    expect(await decoy.exited).not.toBeNull();
    expect(alive(decoy.pid)).toBe(false);
    expect(r.view.params).toEqual({ pid: decoy.pid });
    expect(r.thread.join('\n')).toContain(`web-01: killed 1 process (${decoy.pid} sleep)`);
    expectApprovedTrail(auditActions(r.audit));
    const result = r.audit.find((a) => a.action === 'delivery.result');
    expect(result).toMatchObject({ outcome: 'ok', details: { result: { killed: [{ pid: decoy.pid }] } } });
    // The analyst confirmed and the commander approved, each with a step-up.
    expect((await e.t.platform.audit.list({ actionPrefix: 'stepup.attempt' })).length).toBeGreaterThanOrEqual(
      2,
    );
  });

  it('kills every process with a name longer than the kernel keeps in comm', async () => {
    e.lapseWindows();
    const name = 'coinminer-xmrig-helper';
    const [a, b] = [e.decoy(web, name), e.decoy(web, name)];
    const r = await e.act(`kill web-01 ${name} --reason "miner"`);
    await Promise.all([a.exited, b.exited]);
    expect(r.view.params).toEqual({ processName: name });
    expect(r.thread.join('\n')).toMatch(/web-01: killed 2 processes/);
    expectApprovedTrail(auditActions(r.audit));
  });

  it('fetches a file: the stored evidence has the same SHA-256 as the file on the endpoint', async () => {
    e.lapseWindows();
    const content = Buffer.from('suspicious payload\n'.repeat(5000));
    const path = join(web.sandbox, 'dropper.bin');
    writeFileSync(path, content);
    const r = await e.act(`fetch web-01 ${path} --reason "triage"`);
    expect(r.view.params).toEqual({ path });
    const [d] = await e.tdb.db.select().from(deliveries).where(eq(deliveries.requestId, r.view.id));
    const fileId = (d!.result as { fileId: string }).fileId;
    const [row] = await e.tdb.db.select().from(files).where(eq(files.id, fileId));
    expect(row).toMatchObject({ kind: 'fetched', sha256: sha(content), size: content.length });
    const chunks: Buffer[] = [];
    for await (const c of await e.tb.fileStore.open(row!.storageKey)) chunks.push(c as Buffer);
    const stored = Buffer.concat(chunks);
    expect(sha(stored)).toBe(sha(content));
    expect(r.thread.join('\n')).toContain(`sha256 ${sha(content)}`);
    expect(r.thread.join('\n')).toContain(`download ${fileId}`);
    expectApprovedTrail(auditActions(r.audit));
  });

  it('puts a library file: it lands with the approved SHA-256, shown on the card', async () => {
    e.lapseWindows();
    const content = Buffer.from('#!/bin/sh\necho remediated\n');
    const lib = await e.t.platform.library.add({
      name: 'remediate.sh',
      source: Readable.from([content]),
      actor: { type: 'system', id: 'test' },
    });
    const dest = join(web.sandbox, 'remediate.sh');
    const r = await e.act(`put web-01 remediate.sh ${dest} --reason "fix cron"`);
    expect(r.view.params).toEqual({
      file: { id: lib.id, name: 'remediate.sh', size: content.length, sha256: sha(content) },
      destPath: dest,
    });
    expect(e.cardOf(r.view.ref)!.text).toContain(sha(content));
    expect(sha(readFileSync(dest))).toBe(sha(content));
    expect(r.thread.join('\n')).toContain(
      `web-01: wrote ${dest} — ${content.length} bytes, sha256 ${sha(content)}`,
    );
    expectApprovedTrail(auditActions(r.audit));
  });

  it('runs a script with parameters: its output and exit code come back in the thread', async () => {
    e.lapseWindows();
    await e.t.platform.scripts.upsert({
      name: 'greet',
      body: 'import active_response as ar\nimport sys\np = ar.params()\nprint("hello", p["who"], p["times"] * 2)\nsys.exit(3)\n',
      paramsSchema: { who: { type: 'string', required: true }, times: { type: 'integer', required: true } },
      description: 'says hello',
    });
    const r = await e.act('run greet web-01 who=world times=21 --reason "check"');
    expect(r.view.params).toMatchObject({
      script: { name: 'greet', version: 1 },
      args: { who: 'world', times: 21 },
    });
    const text = r.thread.join('\n');
    expect(text).toContain('web-01: script exited with code 3');
    expect(text).toContain('hello world 42');
    const executed = r.audit.find((a) => a.action === 'script.executed');
    expect(executed).toMatchObject({ outcome: 'failed', details: { result: { exitCode: 3 } } });
    expectApprovedTrail(auditActions(r.audit));
  });

  it('lists processes without an approval: read-only, output in the thread', async () => {
    e.lapseWindows();
    const decoy = e.decoy(web, 'listed-decoy-process');
    const r = await e.act('processes web-01');
    expect(r.view.approvalsRequired).toBe(0);
    expect(r.thread.join('\n')).toContain(`${decoy.pid}`);
    expect(r.thread.join('\n')).toContain('listed-decoy-pr');
    expect(auditActions(r.audit)).toEqual(
      expect.arrayContaining([
        'request.created',
        'request.dispatched',
        'delivery.result',
        'request.completed',
      ]),
    );
    expect(auditActions(r.audit)).not.toContain('approval.recorded');
  });

  it('opens a session in a thread where commands leave the host out, and audits its start and stop', async () => {
    e.lapseWindows();
    await e.t.say('analyst', 'session start web-01 --reason "live triage"');
    await e.t.stepUp(e.t.lastLinkFor('analyst'), e.analyst);
    const opened = await e.t.chat.waitFor((m) => /session with web-01 started/.test(m.text));
    const thread = opened.threadId ?? opened.messageId;
    const listed = await e.act('processes', { threadId: thread });
    expect(listed.view.targets.map((x) => x.hostname)).toEqual(['web-01']);
    const decoy = e.decoy(web);
    const killed = await e.act(`kill ${decoy.pid} --reason "in session"`, { threadId: thread });
    await decoy.exited;
    expect(killed.thread.join('\n')).toContain(`killed 1 process (${decoy.pid}`);
    await e.t.say('analyst', 'session stop web-01');
    const actions = (await e.t.platform.audit.list({ actionPrefix: 'session.' })).map((r) => r.action);
    expect(actions.sort()).toEqual(['session.started', 'session.stopped']);
  });

  it('cannot kill a process outside the sandbox (the test runner) nor fetch a file outside it', async () => {
    e.lapseWindows();
    const r = await e.act(`kill web-01 ${process.pid} --reason "should be refused"`);
    expect(r.thread.join('\n')).toMatch(
      /kill failed — no process matches \d+ among the processes this sandboxed agent may touch/,
    );
    expect(alive(process.pid)).toBe(true);
    const outside = join(web.stateDir, 'identity.json');
    expect(existsSync(outside)).toBe(true);
    const f = await e.act(`fetch web-01 ${outside} --reason "should be refused"`);
    expect(f.thread.join('\n')).toMatch(/fetch failed — .*outside the allowed root/);
    expect(await e.tdb.db.select().from(files).where(eq(files.kind, 'fetched'))).toHaveLength(1);
  });
});
