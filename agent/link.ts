// One live connection to the broker, as the actions see it: send frames, and route file frames by
// transfer id. A transfer is bound to the connection it started on and fails when that connection closes.
import type { WebSocket } from 'ws';
import type { BrokerFrame } from '../protocol/frames.ts';

export interface TransferHandler {
  frame(f: BrokerFrame): void;
  chunk(data: Buffer): void;
  closed(): void;
}

export function createLink(ws: WebSocket) {
  const transfers = new Map<string, TransferHandler>();
  let open = true;
  const sock = (ws as unknown as { _socket?: { remoteAddress?: string; remotePort?: number } })._socket;
  const remote = { address: sock?.remoteAddress ?? '', port: sock?.remotePort ?? 0 };
  return {
    remote,
    isOpen: () => open && ws.readyState === ws.OPEN,
    send(frame: object) {
      if (open && ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
    },
    sendBinary(buf: Buffer) {
      if (!open || ws.readyState !== ws.OPEN) throw new Error('the connection to the broker closed');
      ws.send(buf);
    },
    /** Resolves once the socket's send buffer is below `limit` bytes (backpressure for uploads). */
    async drained(limit = 1024 * 1024) {
      while (open && ws.bufferedAmount > limit) await new Promise((r) => setTimeout(r, 5));
      if (!open) throw new Error('the connection to the broker closed');
    },
    register(transferId: string, h: TransferHandler) {
      transfers.set(transferId, h);
    },
    unregister(transferId: string) {
      transfers.delete(transferId);
    },
    route(transferId: string | undefined): TransferHandler | undefined {
      return transferId ? transfers.get(transferId) : undefined;
    },
    markClosed() {
      open = false;
      for (const h of transfers.values()) h.closed();
      transfers.clear();
    },
  };
}

export type Link = ReturnType<typeof createLink>;
