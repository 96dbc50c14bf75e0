// Reads lines from a terminal (or any stream) and turns them into core commands. Several people share one
// console: `/as <name>` switches who is typing, `/approve` and `/deny` stand in for the card's buttons.
import { createInterface } from 'node:readline';
import type { BotCore } from '../../bot/bot-types.ts';
import { tokenize } from '../../bot/commands/command-tokenizer.ts';
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
  /** Lines shown after the bot's `help`: the console's own commands and any the host program adds. */
  extraHelp?: string[];
}

export const CONSOLE_TENANT = 'local';

export function consoleContext(
  chatUserId: string,
  seq: number,
  channelId = 'incident',
  threadId?: string,
): ChatContext {
  return {
    identity: { platform: 'console', tenantId: CONSOLE_TENANT, chatUserId },
    channelId,
    ...(threadId ? { threadId } : {}),
    eventId: `console-${process.pid}-${Date.now()}-${seq}`,
  };
}

const DECISION = /^\/(approve|deny)(?:\s+(.*))?$/;

/** `/deny R-7K3QXM --reason "wrong host"`, or the reason as plain words after the ref. */
function parseDecision(rest: string): { ref?: string; reason?: string } {
  const [ref, ...words] = tokenize(rest);
  if (!ref) return {};
  let reason: string | undefined;
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (!w.quoted && (w.text === '--reason' || w.text.startsWith('--reason='))) {
      reason = w.text.includes('=') ? w.text.slice('--reason='.length) : words[++i]?.text;
      continue;
    }
    reason = reason === undefined ? w.text : `${reason} ${w.text}`;
  }
  return { ref: ref.text, reason: reason?.trim() || undefined };
}

/** The console's own commands, shown after the bot's help. */
export const CONSOLE_HELP = [
  'Console commands (this demo chat only):',
  '• /as <person>   switch who is typing',
  '• /thread <id>   write in a thread (a session thread: commands there may leave the host out); /thread leaves it',
  '• /approve <request-ref>   click Approve on a card',
  '• /deny <request-ref> [--reason "<why>"]   click Deny on a card',
  '• /quit   end the session',
];

/** Runs until the input ends or someone types /quit. */
export async function runConsoleSession(opts: ConsoleSessionOptions): Promise<void> {
  const channelId = opts.channelId ?? 'incident';
  let who = opts.people[0] ?? 'analyst';
  let thread: string | undefined;
  let seq = 0;
  const rl = createInterface({ input: opts.input, terminal: false });
  const prompt = () => opts.prompt && process.stdout.write(`${who}${thread ? ` [${thread}]` : ''}> `);
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
    const th = /^\/thread(?:\s+(\S+))?$/.exec(line);
    if (th) {
      thread = th[1];
      opts.write(thread ? `  now writing in thread ${thread}` : '  back in the channel');
      prompt();
      continue;
    }
    const ctx = consoleContext(who, ++seq, channelId, thread);
    const decision = DECISION.exec(line);
    if (decision) {
      const { ref, reason } = parseDecision(decision[2] ?? '');
      if (!ref)
        opts.write(
          `  usage: /${decision[1]} <request-ref>${decision[1] === 'deny' ? ' [--reason "<why>"]' : ''}`,
        );
      else
        await opts.bot.handleDecision(ctx, {
          decision: decision[1] as 'approve' | 'deny',
          requestId: ref,
          reason,
        });
    } else {
      await opts.bot.handleCommand(ctx, line);
      if (/^help\s*$/i.test(line)) opts.write([...CONSOLE_HELP, ...(opts.extraHelp ?? [])].join('\n'));
    }
    prompt();
  }
  rl.close();
}
