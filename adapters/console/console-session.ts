// Reads lines from a terminal (or any stream) and turns them into core commands. Several people share one
// console: `/as <name>` switches who is typing, `/approve` and `/deny` stand in for the card's buttons.
import { createInterface } from 'node:readline';
import type { BotCore } from '../../bot/bot-types.ts';
import type { ChatContext } from '../../bot/ports.ts';

export interface ConsoleSessionOptions {
  bot: BotCore;
  input: NodeJS.ReadableStream;
  write: (line: string) => void;
  /** Chat user ids people can switch between (they are linked to platform users in the 'local' tenant). */
  people: string[];
  channelId?: string;
  /** Shown in the prompt when the console is a terminal. */
  prompt?: boolean;
}

export const CONSOLE_TENANT = 'local';

export function consoleContext(chatUserId: string, seq: number, channelId = 'incident'): ChatContext {
  return {
    identity: { platform: 'console', tenantId: CONSOLE_TENANT, chatUserId },
    channelId,
    eventId: `console-${process.pid}-${Date.now()}-${seq}`,
  };
}

const DECISION = /^\/(approve|deny)\s+(\S+)(?:\s+(.+))?$/;

/** Runs until the input ends or someone types /quit. */
export async function runConsoleSession(opts: ConsoleSessionOptions): Promise<void> {
  const channelId = opts.channelId ?? 'incident';
  let who = opts.people[0] ?? 'analyst';
  let seq = 0;
  const rl = createInterface({ input: opts.input, terminal: false });
  const prompt = () => opts.prompt && process.stdout.write(`${who}> `);
  opts.write(
    `Console chat on #${channelId}. You are ${who}. /as <${opts.people.join('|')}> switches; help lists commands.`,
  );
  prompt();
  for await (const raw of rl) {
    const line = raw.trim();
    if (!line) {
      prompt();
      continue;
    }
    if (line === '/quit' || line === '/exit') break;
    const as = /^\/as\s+(\S+)$/.exec(line);
    if (as) {
      if (opts.people.includes(as[1]!)) who = as[1]!;
      else opts.write(`  unknown person "${as[1]}"; choose one of ${opts.people.join(', ')}`);
      prompt();
      continue;
    }
    const ctx = consoleContext(who, ++seq, channelId);
    const decision = DECISION.exec(line);
    if (decision) {
      await opts.bot.handleDecision(ctx, {
        decision: decision[1] as 'approve' | 'deny',
        requestId: decision[2]!,
        reason: decision[3],
      });
    } else {
      await opts.bot.handleCommand(ctx, line);
    }
    prompt();
  }
  rl.close();
}
