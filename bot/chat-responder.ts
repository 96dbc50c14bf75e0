// The one place errors become chat replies. A typed error becomes a private message in plain words; anything
// else becomes "something went wrong, reference X" with X on the matching log line.
import { randomBytes } from 'node:crypto';
import { isAppError, StepUpRequired } from './errors.ts';
import type { ChatContext, DirectChat, Logger } from './ports.ts';

export function createChatResponder(deps: { chat: DirectChat; logger: Logger }) {
  return {
    async fail(ctx: ChatContext, err: unknown): Promise<void> {
      let text: string;
      if (err instanceof StepUpRequired) {
        text = `${err.message}\nConfirm it's you (single-use link, valid for a few minutes): ${err.url}`;
      } else if (isAppError(err)) {
        text = err.message;
      } else {
        const ref = `ERR-${randomBytes(4).toString('hex')}`;
        deps.logger.error({ err, ref, channel: ctx.channelId }, 'unhandled error in chat command');
        text = `Something went wrong on our side, reference ${ref}. Nothing was changed; try again or give the reference to an admin.`;
      }
      try {
        await deps.chat.notifyPrivately(ctx, text);
      } catch (sendErr) {
        deps.logger.error({ err: sendErr }, 'could not send an error reply to chat');
      }
    },
  };
}

export type ChatResponder = ReturnType<typeof createChatResponder>;
