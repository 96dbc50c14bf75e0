// A session's chat thread: opened when the session starts (from chat or from the step-up page) and recorded
// on the session, so commands typed in it act on the session's endpoint.
import type { BotDeps } from '../bot-service.ts';
import type { ChatContext } from '../ports.ts';

/**
 * Opens the session's thread in chat and records it on the session, so commands typed there act on the
 * session's endpoint without naming it.
 */
export async function announceSession(
  deps: Pick<BotDeps, 'chat' | 'sessions'>,
  ctx: ChatContext,
  sessionId: string,
  hostname: string,
  who: string,
) {
  const ref = await deps.chat.startThread(
    ctx,
    `Active Response session with ${hostname} started by ${who}. In this thread, commands act on ${hostname} without naming it (processes, kill <pid|name>, fetch <path>, put <file> <dest>, run <script>). Type "session stop ${hostname}" when done.`,
  );
  await deps.sessions.attachThread(sessionId, ref.threadId);
}
