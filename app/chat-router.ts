// The core talks to one ChatPort; this one forwards each call to the adapter of the platform the message
// came from (or the card lives on). A platform without an adapter is a configuration error, said plainly.

import type { ChatContext, ChatMessageRef, ChatPort, RequestView } from '../bot/ports.ts';
import type { Platform } from '../db/schema.ts';

export function createChatRouter() {
  const ports = new Map<Platform, ChatPort>();
  const pick = (platform: Platform): ChatPort => {
    const port = ports.get(platform);
    if (!port) throw new Error(`no chat adapter is configured for ${platform}`);
    return port;
  };
  const chat: ChatPort = {
    postRequestCard: (ctx: ChatContext, view: RequestView) =>
      pick(ctx.identity.platform).postRequestCard(ctx, view),
    updateRequestCard: (ref: ChatMessageRef, view: RequestView) =>
      pick(ref.platform).updateRequestCard(ref, view),
    replyInThread: (ref: ChatMessageRef, text: string) => pick(ref.platform).replyInThread(ref, text),
    postThreadMessage: (ref: ChatMessageRef, text: string) => pick(ref.platform).postThreadMessage(ref, text),
    updateThreadMessage: (ref: ChatMessageRef, text: string) =>
      pick(ref.platform).updateThreadMessage(ref, text),
    notifyPrivately: (ctx: ChatContext, text: string) =>
      pick(ctx.identity.platform).notifyPrivately(ctx, text),
    reply: (ctx: ChatContext, text: string) => pick(ctx.identity.platform).reply(ctx, text),
    startThread: (ctx: ChatContext, text: string) => pick(ctx.identity.platform).startThread(ctx, text),
  };
  return {
    chat,
    register(platform: Platform, port: ChatPort) {
      ports.set(platform, port);
    },
    has: (platform: Platform) => ports.has(platform),
  };
}

export type ChatRouter = ReturnType<typeof createChatRouter>;
