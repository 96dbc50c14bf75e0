// The public HTTP server cuts clients that hold connections open: a body sent one byte at a time, headers
// that never finish, an idle keep-alive connection. Timeouts here are short so the test is quick; what it
// asserts is that the server closes the socket, not how fast (Node checks the request timeouts on an
// interval, so the cut comes some time after the limit).
import { connect, type Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHttpApp } from '../app/http-app.ts';

/** Resolves with everything the server sent once it closes the connection. */
function untilClosed(socket: Socket): Promise<string> {
  let received = '';
  socket.on('data', (d) => {
    received += d;
  });
  return new Promise((resolve) => socket.once('close', () => resolve(received)));
}

/** Sends one byte every `everyMs` until the socket closes: too slow to finish, too busy to look idle. */
function trickle(socket: Socket, byte: string, everyMs: number): void {
  const timer = setInterval(() => {
    if (socket.destroyed) clearInterval(timer);
    else socket.write(byte);
  }, everyMs);
  socket.once('close', () => clearInterval(timer));
}

describe('HTTP server timeouts', () => {
  let app: FastifyInstance;
  let port: number;

  beforeAll(async () => {
    app = buildHttpApp({
      bodyLimit: 1024,
      timeouts: {
        requestTimeout: 1_000,
        headersTimeout: 500,
        keepAliveTimeout: 300,
        connectionTimeout: 20_000,
      },
    });
    app.post('/echo', async (req) => ({ got: String(req.body).length }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await app.close();
  });

  const open = () => connect(port, '127.0.0.1');

  it('cuts a client that sends its body too slowly', async () => {
    const socket = open();
    const closed = untilClosed(socket);
    socket.write('POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\n');
    trickle(socket, 'a', 100);
    const received = await closed;
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('cuts a client whose headers never finish', async () => {
    const socket = open();
    const closed = untilClosed(socket);
    socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    trickle(socket, 'X-Slow: 1\r\n', 100);
    const received = await closed;
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('closes an idle keep-alive connection after a request was answered', async () => {
    const socket = open();
    const closed = untilClosed(socket);
    socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
    const received = await closed;
    expect(received).toMatch(/^HTTP\/1\.1 200 /);
    expect(received).toContain('"status":"ok"');
  });

  it('answers a body over the limit with 413 and does not read it', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/echo',
      headers: { 'content-type': 'text/plain' },
      payload: 'x'.repeat(2048),
    });
    expect(res.statusCode).toBe(413);
  });

  it('still serves a client that sends at a normal pace', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/echo',
      headers: { 'content-type': 'text/plain' },
      payload: 'hello',
    });
    expect(res.json()).toEqual({ got: 5 });
  });
});
