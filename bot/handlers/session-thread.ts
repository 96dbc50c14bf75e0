// A session's chat thread: opened when the session starts (from chat or from the step-up page) and recorded
// on the session, so commands typed in it act on the session's endpoint. The thread's opening message is a
// chat outbox row written in the transaction that starts the session, so it appears even if the process
// dies right after; the sender posts it and records the thread on the session.
import type { DbOrTx } from '../../db/client.ts';
import type { BotDeps } from '../bot-service.ts';
import type { ChatContext } from '../ports.ts';

/** Writes the opening of the session's thread into the chat outbox within `tx`; flush after the commit. */
export async function recordSessionThread(
  deps: Pick<BotDeps, 'outbox'>,
  tx: DbOrTx,
  ctx: ChatContext,
  sessionId: string,
  hostname: string,
  who: string,
) {
  await deps.outbox.enqueue(tx, [
    {
      kind: 'session_thread',
      place: {
        platform: ctx.identity.platform,
        tenantId: ctx.identity.tenantId,
        channelId: ctx.channelId,
        threadId: ctx.threadId,
      },
      sessionId,
      text: `Active Response session with ${hostname} started by ${who}. In this thread, commands act on ${hostname} without naming it (processes, kill <pid|name>, fetch <path>, put <file> <dest>, run <script>). Type "session stop ${hostname}" when done.`,
    },
  ]);
}
