// `npm run demo`: the whole platform on a fresh embedded database in a temporary directory, three dry-run
// agents (Linux, Windows, macOS), seeded people, and a console chat on this terminal. The Windows agent
// stays offline until someone types `/online ws-02` (or a minute after the first approval), so queueing is
// seen at human speed. The agents change nothing outside the demo's directory: isolation is simulated, and
// files, scripts and the processes they may kill are those of their own sandbox. Nothing here is used in
// production; the seeding goes through the same services an admin would use.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { generate } from 'otplib';
import pino from 'pino';
import { createConsoleChat } from './adapters/console/console-chat.ts';
import { runConsoleSession } from './adapters/console/console-session.ts';
import { loadConfig, resolveSecretKey } from './app/config.ts';
import { prepareSandbox } from './app/demo-sandbox.ts';
import { seedDemo } from './app/demo-seed.ts';
import { buildHttpApp } from './app/http-app.ts';
import { createPlatform } from './app/platform.ts';
import { attachSurfaces } from './app/surfaces.ts';
import { systemClock } from './bot/ports.ts';
import { createBroker } from './broker/broker.ts';
import { openDatabase } from './db/client.ts';
import { approvals, endpoints } from './db/schema.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'ar-demo-'));
const config = loadConfig({
  ...process.env,
  DATA_DIR: dataDir,
  DATABASE_URL: undefined,
  LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
});
const say = (line = '') => process.stdout.write(`${line}\n`);

async function main() {
  const logger = pino({ level: config.LOG_LEVEL });
  process.umask(0o077); // the demo's database files are private, as the server's are
  const database = await openDatabase({ dataDir, role: 'demo' });
  const secretKey = resolveSecretKey(config);
  const platform = createPlatform({ config, database, logger, clock: systemClock, secretKey });
  await platform.installBuiltinScripts();
  const consoleChat = createConsoleChat({ write: say });
  platform.router.register('console', consoleChat.chat);

  const fileStore = platform.fileStore;
  const http = buildHttpApp({
    logger: false,
    healthChecks: { database: async () => void (await database.db.execute('select 1')) },
  });
  const surfaces = await attachSurfaces({ http, platform, config, logger, fileStore, database });
  const broker = createBroker({
    db: database,
    audit: platform.audit,
    clock: systemClock,
    logger,
    fileStore,
    config: {
      host: '127.0.0.1',
      port: config.BROKER_PORT,
      brokerId: 'demo',
      publicHost: 'localhost',
      dataDir,
      maxFileBytes: config.MAX_FILE_BYTES,
    },
  });
  const unfollow = await platform.followDeliveries();
  // The chat outbox's sender: retries and paced card edits go out on its timer, as under `npm start`.
  void platform.sender.start();
  const brokerAddr = await broker.start();
  await http.listen({ host: '127.0.0.1', port: config.HTTP_PORT });

  const seeded = await seedDemo({ platform, database, clock: systemClock, dataDir });
  const agents = new Map<string, ChildProcess>();
  const sandboxOf = (name: string) => join(dataDir, 'agents', name, 'sandbox');
  const startAgent = (name: string, os: string, token?: string) => {
    const args = [
      '--import',
      'tsx',
      'agent/main.ts',
      '--state-dir',
      join(dataDir, 'agents', name),
      '--dry-run',
      '--os',
      os,
    ];
    if (token)
      args.push('--enroll', token, '--broker', `wss://localhost:${brokerAddr.port}`, '--hostname', name);
    agents.set(name, spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] }));
  };
  const web = prepareSandbox(sandboxOf('web-01'), { decoys: true });
  const ws = prepareSandbox(sandboxOf('ws-02'), { decoys: false });
  startAgent('web-01', 'linux', seeded.tokens['web-01']);
  startAgent('mac-03', 'macos', seeded.tokens['mac-03']);
  // ws-02 enrols now (so it is a known endpoint) and then goes offline: what is approved for it meanwhile
  // waits in the outbox and is delivered when it reconnects.
  startAgent('ws-02', 'windows', seeded.tokens['ws-02']);
  await waitForEndpoint(database, 'ws-02');
  agents.get('ws-02')!.kill('SIGTERM');
  let wsOnline = false;
  const bringOnline = () => {
    if (wsOnline) return;
    wsOnline = true;
    say('\n  (ws-02, the Windows endpoint, is coming online: anything queued for it is delivered now)');
    startAgent('ws-02', 'windows');
  };
  // Or a minute after the first approval, for someone who never types /online.
  let late: NodeJS.Timeout | undefined;
  const watchApprovals = setInterval(async () => {
    const [row] = await database.db.select({ id: approvals.id }).from(approvals).limit(1);
    if (!row) return;
    clearInterval(watchApprovals);
    late = setTimeout(bringOnline, 60_000);
  }, 2000);
  await waitForEndpoint(database, 'web-01');
  await waitForEndpoint(database, 'mac-03');

  const [dropper] = web.evidence;
  say('');
  say('Active Response demo — everything lives in a temporary directory and is deleted on exit.');
  say(`Web page: ${config.PUBLIC_URL}   broker: wss://localhost:${brokerAddr.port}`);
  say('');
  say('People (passwords and TOTP secrets are shown once):');
  for (const p of seeded.people)
    say(`  ${p.name.padEnd(10)} ${p.roles.padEnd(30)} password ${p.password}   TOTP secret ${p.totpSecret}`);
  say('');
  say('Endpoints (dry-run agents: isolation is simulated, and each acts only inside its sandbox directory):');
  say(`  web-01  Linux, online    sandbox ${web.dir}`);
  say(`  ws-02   Windows, OFFLINE until you type /online ws-02 (or a minute after the first approval)`);
  say('  mac-03  macOS, online   (actions are not supported on macOS: it is excluded, with the reason)');
  if (web.decoys.length)
    say(`  decoy processes on web-01: ${web.decoys.map((d) => `${d.name} (pid ${d.pid})`).join(', ')}`);
  say('');
  say('Walkthrough:');
  say('  1. isolate web-01 ws-02 mac-03 --reason "C2 beacon" --case IR-1');
  say("     Open the link you are sent and confirm as analyst (/codes prints everyone's current code).");
  say('  2. /as commander   then   /approve R-XXXXXX   and confirm on the page it links to.');
  say('     web-01 is isolated (simulated); ws-02 waits in the queue: queue ws-02   then   /online ws-02');
  say('  3. More to try (as analyst): processes web-01,  kill web-01 coinminer-xmrig-helper --reason miner,');
  say(
    `     fetch web-01 ${dropper} --reason triage,  put web-01 remediate.sh ${join(web.dir, 'opt', 'remediate.sh')} --reason fix,`,
  );
  say(
    '     run sinkhole-domain web-01 domain=evil.example --reason block,  scripts,  files,  status,  audit,  help',
  );
  say('');
  say(
    config.teamsEnabled
      ? `Microsoft Teams is connected too: point the Azure Bot's messaging endpoint at ${config.PUBLIC_URL}/api/messages (README, "Connecting Microsoft Teams").`
      : 'Microsoft Teams: the same flow runs there. README, "Connecting Microsoft Teams", goes from an Azure Bot to a sideloaded app (npm run teams:package); npx vitest run test/teams-flow.test.ts replays it against a local stand-in of Teams.',
  );
  say('');

  const people = seeded.people.map((p) => p.name);
  const codes = async () => {
    for (const p of seeded.people) say(`  ${p.name.padEnd(10)} ${await generate({ secret: p.totpSecret })}`);
  };
  const demoCommand = async (text: string): Promise<boolean> => {
    const t = text.trim();
    if (t === '/codes') {
      await codes();
      return true;
    }
    const online = /^\/online(?:\s+(\S+))?$/.exec(t);
    if (online) {
      if (online[1] && online[1].toLowerCase() !== 'ws-02')
        say('  only ws-02 is offline in the demo: /online ws-02');
      else if (wsOnline) say('  ws-02 is already online');
      else bringOnline();
      return true;
    }
    return false;
  };
  const input = process.stdin;
  await runConsoleSession({
    bot: {
      ...platform.bot,
      handleCommand: async (ctx, text) => {
        if (!(await demoCommand(text))) await platform.bot.handleCommand(ctx, text);
      },
    },
    input,
    write: say,
    people,
    prompt: process.stdin.isTTY,
    extraHelp: [
      "• /codes   print every demo person's current authenticator code",
      '• /online ws-02   bring the offline Windows endpoint online (its queued work is delivered)',
    ],
  });

  clearInterval(watchApprovals);
  if (late) clearTimeout(late);
  web.stop();
  ws.stop();
  for (const a of agents.values()) a.kill('SIGTERM');
  await http.close();
  await surfaces.close();
  await broker.stop();
  await unfollow();
  await platform.sender.stop().catch(() => {});
  await database.close();
}

/** Waits until an agent has enrolled and connected (its endpoint row shows a broker). */
async function waitForEndpoint(database: Awaited<ReturnType<typeof openDatabase>>, hostname: string) {
  for (let i = 0; i < 120; i++) {
    const [row] = await database.db.select().from(endpoints).where(eq(endpoints.hostname, hostname));
    if (row?.brokerId) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the demo agent ${hostname} did not connect within 30 s`);
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => {
    rmSync(dataDir, { recursive: true, force: true });
    process.exit();
  });
