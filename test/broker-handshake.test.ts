import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadOrCreatePki } from '../broker/pki/pki.ts';
import { revokeEndpoint } from '../cli/commands/endpoint-commands.ts';
import { endpoints } from '../db/schema.ts';
import {
  type AgentProcess,
  endpointByHost,
  enrolAgent,
  spawnAgent,
  startTestBroker,
  type TestBroker,
  tempDir,
  waitFor,
} from './helpers/agents.ts';
import { drivers, openTestDatabase, type TestDatabase } from './helpers/db.ts';
import { keyAndCsr } from './helpers/raw-agent.ts';

/** Tries an /agent upgrade; resolves 'open' or 'refused' (socket closed before any frame). */
function tryConnect(url: string, tls: { key?: string; cert?: string; ca: string }) {
  return new Promise<'open' | 'refused'>((resolve) => {
    const ws = new WebSocket(`${url}/agent`, { ...tls, perMessageDeflate: false });
    ws.on('open', () => {
      ws.terminate();
      resolve('open');
    });
    ws.on('error', () => resolve('refused'));
  });
}

async function refusals(tb: TestBroker, reason: string) {
  const rows = await tb.audit.list({ actionPrefix: 'broker.connection_refused' });
  return rows.filter((r) => (r.details as { reason?: string }).reason === reason);
}

describe.each(drivers)('refused handshakes on %s', (driver) => {
  let tdb: TestDatabase;
  let tb: TestBroker;
  const agents: AgentProcess[] = [];
  beforeEach(async () => {
    tdb = await openTestDatabase(driver);
    tb = await startTestBroker(tdb);
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.kill();
    await tb.stop();
    await tdb.destroy();
  });

  it('closes a connection without a client certificate before any frame, and audits it once per window', async () => {
    expect(await tryConnect(tb.url, { ca: tb.broker.pki.caPem })).toBe('refused');
    expect(await tryConnect(tb.url, { ca: tb.broker.pki.caPem })).toBe('refused');
    const rows = await waitFor(async () => {
      const r = await refusals(tb, 'no_certificate');
      return r.length ? r : undefined;
    }, 'the refusal audit');
    // The second attempt from the same source within the window is counted, not written.
    expect(rows).toHaveLength(1);
  });

  it('refuses a certificate issued by a foreign CA', async () => {
    const foreign = tempDir();
    const other = await loadOrCreatePki({ dir: foreign.dir, serverNames: ['localhost'] });
    const { keyPem, csrPem } = await keyAndCsr('intruder');
    const cert = await other.issueClientCert(csrPem, '00000000-0000-4000-8000-000000000000', new Date());
    expect(await tryConnect(tb.url, { key: keyPem, cert: cert.pem, ca: tb.broker.pki.caPem })).toBe(
      'refused',
    );
    await waitFor(
      async () => (await refusals(tb, 'untrusted_certificate')).length === 1,
      'the refusal audit',
    );
    foreign.remove();
  });

  it('drops a revoked agent at once and refuses its reconnects', async () => {
    const { agent, endpointId } = await enrolAgent(tb, tdb, 'rev-01');
    agents.push(agent);
    const res = await revokeEndpoint({ db: tdb.db, audit: tb.audit, clock: tb.clock, hostname: 'rev-01' });
    expect(res).toMatchObject({ endpointId, alreadyRevoked: false });
    await agent.waitForLog((l) => l.msg === 'disconnected', 'the revoked agent to be dropped');
    await waitFor(async () => (await refusals(tb, 'revoked')).length >= 1, 'a refused reconnect');
    expect(tb.broker.connected()).not.toContain(endpointId);
    expect(await tb.audit.list({ actionPrefix: 'endpoint.revoked' })).toHaveLength(1);
  });

  it('refuses an expired certificate', async () => {
    const { agent, endpointId, stateDir } = await enrolAgent(tb, tdb, 'exp-01');
    await agent.stop();
    const { keyPem, csrPem } = await keyAndCsr('exp-01');
    const now = Date.now();
    const expired = await tb.broker.pki.issueClientCert(csrPem, endpointId, new Date(), {
      notBefore: new Date(now - 3 * 86400_000),
      notAfter: new Date(now - 86400_000),
    });
    writeFileSync(join(stateDir, 'key.pem'), keyPem);
    writeFileSync(join(stateDir, 'cert.pem'), expired.pem);
    await tdb.db
      .update(endpoints)
      .set({ certFingerprint: expired.fingerprint, certNotAfter: expired.notAfter })
      .where(eq(endpoints.id, endpointId));
    const again = spawnAgent({ stateDir });
    agents.push(again);
    await waitFor(
      async () => (await refusals(tb, 'expired')).length >= 1,
      'the expired certificate to be refused',
    );
    expect(again.count((l) => l.msg === 'connected')).toBe(0);
    expect((await endpointByHost(tdb, 'exp-01'))!.brokerId).toBeNull();
  });
});
