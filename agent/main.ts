// The reference agent. `npm run agent -- --enroll <token> --broker wss://host:8443` enrols once and then
// keeps running (as a service); later starts need no flags beyond --state-dir.
//
// Flags: --state-dir DIR (default ./agent-state), --dry-run (isolation only logs what it would change),
// --allowed-root DIR (fetch/put/helper paths must resolve inside it), --hostname NAME, --backoff-max-ms N,
// --upload-rate BYTES_PER_S, --run-timeout SECONDS (default 600), --max-output-bytes N (default 256 KiB),
// --max-file-bytes N (default 1 GiB).
// Test/demo flag: --os windows|linux|macos reports a different OS; it is accepted only with --dry-run.
import { hostname as osHostname, release } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { applyIsolation } from './actions/execute.ts';
import { createAgentClient } from './agent-client.ts';
import { createAgentState } from './agent-state.ts';
import { enrol } from './enroll.ts';
import { createJournal } from './journal.ts';

const { values: a } = parseArgs({
  options: {
    enroll: { type: 'string' },
    broker: { type: 'string' },
    'state-dir': { type: 'string', default: './agent-state' },
    'dry-run': { type: 'boolean', default: false },
    'allowed-root': { type: 'string' },
    os: { type: 'string' },
    hostname: { type: 'string' },
    'backoff-max-ms': { type: 'string', default: '30000' },
    'upload-rate': { type: 'string' },
    'run-timeout': { type: 'string', default: '600' },
    'max-output-bytes': { type: 'string', default: String(256 * 1024) },
    'max-file-bytes': { type: 'string', default: String(1024 * 1024 * 1024) },
  },
  strict: true,
});

function log(msg: string, extra: object = {}) {
  process.stdout.write(`${JSON.stringify({ t: new Date().toISOString(), msg, ...extra })}\n`);
}

function fail(msg: string): never {
  log(msg, { fatal: true });
  process.exit(2);
}

log('agent starting', { version: '1.0.0', pid: process.pid });

const realOs = process.platform === 'win32' ? 'windows' : process.platform === 'darwin' ? 'macos' : 'linux';
const os = (a.os ?? realOs) as 'windows' | 'linux' | 'macos';
if (!['windows', 'linux', 'macos'].includes(os)) fail(`--os must be windows, linux or macos, got "${a.os}"`);
if (os !== realOs && !a['dry-run']) fail('--os is a test/demo flag: reporting another OS needs --dry-run');
const num = (name: string, v: string | undefined) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) fail(`--${name} must be a positive number, got "${v}"`);
  return n;
};

const state = createAgentState(resolve(a['state-dir']!));
if (a.enroll) {
  if (state.enrolled()) {
    log('already enrolled; ignoring --enroll', { endpointId: state.identity().endpointId });
  } else {
    if (!a.broker) fail('--enroll needs --broker wss://host:port');
    try {
      const endpointId = await enrol(state, {
        token: a.enroll,
        broker: a.broker,
        hostname: a.hostname ?? osHostname(),
        os,
        osVersion: release(),
        agentVersion: '1.0.0',
        log,
      });
      log('enrolled', { endpointId });
    } catch (e) {
      fail(`enrolment failed: ${(e as Error).message}`);
    }
  }
}
if (!state.enrolled()) fail('this agent is not enrolled; run with --enroll <token> --broker wss://host:port');

const options = {
  os,
  dryRun: a['dry-run']!,
  allowedRoot: a['allowed-root'] ? resolve(a['allowed-root']) : undefined,
  maxFileBytes: num('max-file-bytes', a['max-file-bytes']),
  uploadBytesPerSecond: a['upload-rate'] ? num('upload-rate', a['upload-rate']) : undefined,
  runTimeoutMs: num('run-timeout', a['run-timeout']) * 1000,
  maxOutputBytes: num('max-output-bytes', a['max-output-bytes']),
  backoffBaseMs: 250,
  backoffMaxMs: num('backoff-max-ms', a['backoff-max-ms']),
  osVersion: release(),
  capabilities:
    os === 'macos'
      ? ['kill', 'fetch', 'put', 'run', 'processes']
      : ['isolate', 'unisolate', 'kill', 'fetch', 'put', 'run', 'processes'],
};

// Isolation survives restarts: an isolated endpoint that rebooted must come back isolated.
if (state.isolation().isolated) {
  try {
    const identity = state.identity();
    await applyIsolation(
      { deliveryId: '', link: () => undefined, options, state, brokerUrl: identity.broker, log },
      true,
      state.isolation().allow,
    );
    log('isolation re-applied after start');
  } catch (e) {
    log('could not re-apply isolation', { err: (e as Error).message });
  }
}

const client = createAgentClient({ state, journal: createJournal(state.path('journal')), options, log });
client.start();
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, async () => {
    await client.stop();
    setTimeout(() => process.exit(0), 200).unref();
  });
}
