// The agent's state directory: its key and certificate, the CA and platform signing key it got at
// enrolment, the journal of deliveries it has run, and its isolation state. Writes are atomic and fsync'd,
// because the journal and isolation state are what keep a restarted agent from running anything twice or
// forgetting it was isolated.
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';

export const identitySchema = z.object({
  endpointId: z.string(),
  broker: z.string(),
  hostname: z.string(),
  os: z.enum(['windows', 'linux', 'macos']),
  enrolledAt: z.string(),
});
export type Identity = z.infer<typeof identitySchema>;

export const isolationSchema = z.object({
  isolated: z.boolean(),
  allow: z.array(z.object({ address: z.string(), port: z.number() })),
  changedAt: z.string(),
});
export type IsolationState = z.infer<typeof isolationSchema>;

/**
 * Writes a file atomically: temp file, fsync, rename, fsync the directory. Throws when any step fails (a
 * full disk: ENOSPC), leaving the old file as it was and no temp file behind: a half-written temp file would
 * hold on to the very space the next attempt needs.
 */
export function writeFileDurable(file: string, data: string | Buffer, mode = 0o600) {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w', mode);
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      // writeSync may write less than asked (a nearly full disk): loop, so a short write is an error, not a
      // truncated file renamed into place.
      for (let at = 0; at < buf.length; ) at += writeSync(fd, buf, at, buf.length - at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  try {
    const dfd = openSync(dirname(file), 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    // Some platforms (Windows) cannot open a directory; the rename is still atomic there.
  }
}

export function createAgentState(dir: string) {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, 'journal'), { recursive: true, mode: 0o700 });
  const f = (n: string) => join(dir, n);
  const read = (n: string) => readFileSync(f(n), 'utf8');
  const tryRead = (n: string) => {
    try {
      return read(n);
    } catch {
      return undefined;
    }
  };

  return {
    dir,
    path: f,
    enrolled(): boolean {
      return tryRead('identity.json') !== undefined;
    },
    identity(): Identity {
      return identitySchema.parse(JSON.parse(read('identity.json')));
    },
    tls() {
      return { key: read('key.pem'), cert: read('cert.pem'), ca: read('ca.pem') };
    },
    signingPublicKey: () => read('signing-pub.pem'),
    saveEnrolment(e: {
      identity: Identity;
      keyPem: string;
      certPem: string;
      caPem: string;
      signingPem: string;
    }) {
      writeFileDurable(f('key.pem'), e.keyPem, 0o600);
      writeFileDurable(f('cert.pem'), e.certPem, 0o644);
      writeFileDurable(f('ca.pem'), e.caPem, 0o644);
      writeFileDurable(f('signing-pub.pem'), e.signingPem, 0o644);
      // identity.json last: its presence means the enrolment is complete.
      writeFileDurable(f('identity.json'), JSON.stringify(e.identity, null, 2), 0o600);
    },
    isolation(): IsolationState {
      const t = tryRead('isolation.json');
      return t ? isolationSchema.parse(JSON.parse(t)) : { isolated: false, allow: [], changedAt: '' };
    },
    saveIsolation(s: IsolationState) {
      writeFileDurable(f('isolation.json'), JSON.stringify(s));
    },
  };
}

export type AgentState = ReturnType<typeof createAgentState>;
