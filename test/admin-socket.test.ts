// The admin socket itself: private, one server per DATA_DIR, and strict about what it accepts. The end-to-end
// path (the real CLI against the real server) is in cli-live-server.test.ts.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { runOnServer } from '../cli/admin-client.ts';
import { ADMIN_SOCKET, MAX_REQUEST_BYTES } from '../cli/admin-protocol.ts';
import { startAdminServer } from '../cli/admin-server.ts';

const dir = mkdtempSync(join(tmpdir(), 'ar-sock-'));
const logger = { info() {}, warn() {}, error() {}, debug() {} };
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A server whose command prints its argv and the path it was given, reads one line, and exits 7. */
function echoServer(socketPath: string) {
  return startAdminServer({
    socketPath,
    logger,
    async run(request, io) {
      io.out(`argv=${request.argv.join(' ')}`);
      io.out(`path=${io.resolvePath('x.txt')}`);
      io.err(`line=${await io.readLine()}`);
      return 7;
    },
  });
}

/** Sends raw bytes and collects the reply until the server closes. */
function raw(socketPath: string, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('error', () => {});
    s.on('close', () => resolve(got));
    s.write(bytes);
  });
}

describe('admin socket', () => {
  it('is a 0600 socket that streams output, answers stdin requests and passes the exit code', async () => {
    const path = join(dir, ADMIN_SOCKET);
    const server = await echoServer(path);
    try {
      expect(statSync(path).isSocket()).toBe(true);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      const stdin = new PassThrough();
      stdin.end('typed line\n');
      let out = '';
      let err = '';
      stdout.on('data', (d) => (out += d));
      stderr.on('data', (d) => (err += d));
      const code = await runOnServer(path, ['user', 'list'], { stdout, stderr, stdin, cwd: '/srv/ops' });
      expect(code).toBe(7);
      expect(out).toBe('argv=user list\npath=/srv/ops/x.txt\n');
      expect(err).toBe('line=typed line\n');
    } finally {
      await server.close();
    }
  });

  it('refuses to start while another server answers on the same socket', async () => {
    const path = join(dir, 'live.sock');
    const first = await echoServer(path);
    try {
      await expect(echoServer(path)).rejects.toThrow(/Another server is answering on .*live\.sock/);
    } finally {
      await first.close();
    }
  });

  it('replaces a socket left behind by a server that is gone, and refuses a file that is not a socket', async () => {
    const stale = join(dir, 'stale.sock');
    // A server killed outright leaves its socket file with nobody listening.
    const listenAndDie = `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', listenAndDie]);
    expect(statSync(stale).isSocket()).toBe(true);
    const server = await echoServer(stale);
    await server.close();

    const notSocket = join(dir, 'plain.sock');
    writeFileSync(notSocket, 'x');
    await expect(echoServer(notSocket)).rejects.toThrow(/exists and is not a socket/);
  });

  it('answers a malformed request with exit 2 and runs nothing', async () => {
    const path = join(dir, 'strict.sock');
    let ran = 0;
    const server = await startAdminServer({
      socketPath: path,
      logger,
      async run() {
        ran++;
        return 0;
      },
    });
    try {
      for (const bad of [
        'not json\n',
        '{"argv":[]}\n',
        '{"argv":["a"],"cwd":"relative"}\n',
        '{"argv":"user list"}\n',
      ]) {
        const reply = await raw(path, bad);
        expect(reply).toContain('"exit":2');
        expect(reply).toContain('expects {\\"argv\\"');
      }
      expect(await raw(path, 'x'.repeat(MAX_REQUEST_BYTES + 10))).toBe('');
      expect(ran).toBe(0);
    } finally {
      await server.close();
    }
  });
});
