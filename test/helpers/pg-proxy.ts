// A TCP proxy in front of the real PostgreSQL, for fault tests: `cut()` drops every connection through it
// and refuses new ones (the database is "down" for whoever connects through it, and for nobody else);
// `restore()` listens again on the same port. Opened `down`, it holds its port without listening until the
// first `restore()`: a database that is not there yet.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { freePort } from './ports.ts';

export interface PgProxy {
  /** The database URL through the proxy. */
  url: string;
  cut(): Promise<void>;
  restore(): Promise<void>;
}

export async function openPgProxy(databaseUrl: string, opts: { down?: boolean } = {}): Promise<PgProxy> {
  const target = new URL(databaseUrl);
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: Server | undefined;

  async function listen() {
    server = createServer((client) => {
      const upstream = connect(Number(target.port || 5432), target.hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => server!.listen(port, '127.0.0.1', () => r()));
  }
  if (!opts.down) await listen();
  const via = new URL(databaseUrl);
  via.hostname = '127.0.0.1';
  via.port = String(port);
  return {
    url: via.toString(),
    async cut() {
      const s = server;
      server = undefined;
      if (!s) return;
      const closed = new Promise<void>((r) => s.close(() => r()));
      for (const sock of sockets) sock.destroy();
      await closed;
    },
    async restore() {
      if (!server) await listen();
    },
  };
}
