// The reference agent. `npm run agent -- --enroll <token> --broker wss://host:port` enrols once and then
// keeps running (as a service); later starts need no flags beyond --state-dir. `--help` lists every flag.
import { mkdirSync, realpathSync } from 'node:fs';
import { hostname as osHostname, release } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ACTION_NAMES, ACTIONS } from '../protocol/actions.ts';
import { compareVersions } from '../protocol/semver.ts';
import { applyIsolation } from './actions/execute.ts';
import { createAgentClient } from './agent-client.ts';
import { createAgentState } from './agent-state.ts';
import { enrol, reenrolWithKey } from './enroll.ts';
import { createJournal } from './journal.ts';
import { AGENT_VERSION } from './version.ts';

const USAGE = `Active Response reference agent ${AGENT_VERSION}

Usage: npm run agent -- [options]
  First start:  npm run agent -- --enroll <token> --broker wss://<broker-host>:<port>
  Later starts: npm run agent -- [--state-dir DIR]

Options:
  --enroll TOKEN          enrol with a token from \`npm run cli -- endpoint enroll-token\` (a new endpoint)
                          or \`endpoint reenroll-token <host>\` (this endpoint again); ignored once
                          enrolled, unless --reenroll is given
  --broker URL            the broker, wss://host:port (with --enroll; default: the enrolled one)
  --hostname NAME         the name to enrol under (default: this machine's host name)
  --reenroll              enrol this (already enrolled) agent again with a new key: with --enroll TOKEN
                          using that re-enrolment token, otherwise proving its current key to the broker
  --state-dir DIR         key, certificate, journal, running scripts' output and isolation state
                          (default ./agent-state)
  --allowed-root DIR      fetch, put and script file access must stay inside DIR
  --dry-run               change nothing on this host: isolation is only logged, and everything else
                          happens inside a sandbox directory (--sandbox, default <state-dir>/sandbox)
  --sandbox DIR           act only inside DIR: files, scripts' working directory, and only processes
                          whose working directory is inside DIR can be listed or killed
  --os windows|linux|macos  report another OS (demo and tests; only with --dry-run)
  --run-timeout SECONDS   longest a script may run (default 600)
  --max-output-bytes N    cap on a script's stdout and stderr each (default 262144)
  --max-file-bytes N      largest file fetched or written (default 1 GiB)
  --upload-rate BYTES_PER_S  throttle uploads
  --backoff-max-ms N      longest wait between reconnects (default 30000)
  --help                  this text
`;

function log(msg: string, extra: object = {}) {
  process.stdout.write(`${JSON.stringify({ t: new Date().toISOString(), msg, ...extra })}\n`);
}

function fail(msg: string): never {
  log(msg, { fatal: true });
  process.exit(2);
}

let a: Record<string, string | boolean | undefined>;
try {
  a = parseArgs({
    options: {
      help: { type: 'boolean', short: 'h', default: false },
      enroll: { type: 'string' },
      reenroll: { type: 'boolean', default: false },
      broker: { type: 'string' },
      'state-dir': { type: 'string', default: './agent-state' },
      'dry-run': { type: 'boolean', default: false },
      'allowed-root': { type: 'string' },
      sandbox: { type: 'string' },
      os: { type: 'string' },
      hostname: { type: 'string' },
      'backoff-max-ms': { type: 'string', default: '30000' },
      'upload-rate': { type: 'string' },
      'run-timeout': { type: 'string', default: '600' },
      'max-output-bytes': { type: 'string', default: String(256 * 1024) },
      'max-file-bytes': { type: 'string', default: String(1024 * 1024 * 1024) },
    },
    strict: true,
  }).values;
} catch (e) {
  process.stderr.write(`${(e as Error).message}\n\n${USAGE}`);
  process.exit(2);
}
if (a.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const str = (name: string) => a[name] as string | undefined;

log('agent starting', { version: AGENT_VERSION, pid: process.pid });

const realOs = process.platform === 'win32' ? 'windows' : process.platform === 'darwin' ? 'macos' : 'linux';
const os = (str('os') ?? realOs) as 'windows' | 'linux' | 'macos';
if (!['windows', 'linux', 'macos'].includes(os))
  fail(`--os must be windows, linux or macos, got "${str('os')}"`);
if (os !== realOs && !a['dry-run']) fail('--os is a test/demo flag: reporting another OS needs --dry-run');
const num = (name: string) => {
  const v = str(name);
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) fail(`--${name} must be a positive number, got "${v}"`);
  return n;
};

const state = createAgentState(resolve(str('state-dir')!));

/** A dry-run agent always acts inside a sandbox, so it never changes the host it runs on. */
function sandboxDir(): string | undefined {
  const dir = str('sandbox') ?? (a['dry-run'] ? join(state.dir, 'sandbox') : undefined);
  if (!dir) return undefined;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return realpathSync(dir);
}

if (a.reenroll && !a.enroll) {
  if (!state.enrolled()) fail('--reenroll without --enroll needs an enrolled agent; give --enroll <token>');
  try {
    const endpointId = await reenrolWithKey(state, {
      os,
      osVersion: release(),
      agentVersion: AGENT_VERSION,
      log,
    });
    log('re-enrolled with a new key', { endpointId });
  } catch (e) {
    fail(`re-enrolment failed: ${(e as Error).message}`);
  }
} else if (a.enroll) {
  if (state.enrolled() && !a.reenroll) {
    log('already enrolled; ignoring --enroll (add --reenroll to enrol again)', {
      endpointId: state.identity().endpointId,
    });
  } else {
    const broker = str('broker') ?? (state.enrolled() ? state.identity().broker : undefined);
    if (!broker) fail('--enroll needs --broker wss://host:port');
    const hostname = str('hostname') ?? (state.enrolled() ? state.identity().hostname : osHostname());
    try {
      const endpointId = await enrol(state, {
        token: str('enroll')!,
        broker,
        hostname,
        os,
        osVersion: release(),
        agentVersion: AGENT_VERSION,
        log,
      });
      log(a.reenroll ? 're-enrolled' : 'enrolled', { endpointId });
    } catch (e) {
      fail(`enrolment failed: ${(e as Error).message}`);
    }
  }
}
if (!state.enrolled()) fail('this agent is not enrolled; run with --enroll <token> --broker wss://host:port');

// What this agent can do: the catalogue's actions for its OS that its version covers.
const capabilities = ACTION_NAMES.filter(
  (n) =>
    (ACTIONS[n].oses as readonly string[]).includes(os) &&
    compareVersions(AGENT_VERSION, ACTIONS[n].minAgentVersion) >= 0,
);

const options = {
  os,
  dryRun: Boolean(a['dry-run']),
  allowedRoot: str('allowed-root') ? resolve(str('allowed-root')!) : undefined,
  sandbox: sandboxDir(),
  maxFileBytes: num('max-file-bytes'),
  uploadBytesPerSecond: str('upload-rate') ? num('upload-rate') : undefined,
  runTimeoutMs: num('run-timeout') * 1000,
  maxOutputBytes: num('max-output-bytes'),
  backoffBaseMs: 250,
  backoffMaxMs: num('backoff-max-ms'),
  osVersion: release(),
  capabilities: [...capabilities],
};
if (options.sandbox) log('acting only inside the sandbox', { sandbox: options.sandbox });

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
