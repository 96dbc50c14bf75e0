// What the server and the CLI share to anchor the audit chain outside the database: the chain key, the
// checkpoint signing key (derived from SECRET_KEY, or AUDIT_SIGNING_KEY's PEM file) and the checkpoint file
// `DATA_DIR/audit-checkpoints.jsonl`.
import { readFileSync } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  type AuditCheckpoint,
  type CheckpointLog,
  parseCheckpointLog,
} from '../bot/audit/audit-checkpoint.ts';
import {
  type CheckpointKeys,
  checkpointKeysFromPem,
  checkpointKeysFromSecret,
} from '../bot/audit/audit-keys.ts';
import { type Config, ConfigError } from './config.ts';

export const CHECKPOINT_FILE = 'audit-checkpoints.jsonl';

/** AUDIT_SIGNING_KEY's Ed25519 key when set, else the one derived from SECRET_KEY. */
export function resolveCheckpointKeys(config: Config, secretKey: Buffer): CheckpointKeys {
  if (!config.AUDIT_SIGNING_KEY) return checkpointKeysFromSecret(secretKey);
  let pem: string;
  try {
    pem = readFileSync(config.AUDIT_SIGNING_KEY, 'utf8');
  } catch (e) {
    throw new ConfigError(
      `AUDIT_SIGNING_KEY: cannot read ${config.AUDIT_SIGNING_KEY} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  try {
    return checkpointKeysFromPem(pem, `AUDIT_SIGNING_KEY (${config.AUDIT_SIGNING_KEY})`);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

/**
 * The checkpoint log as a JSON-lines file (mode 0600). Each checkpoint is one short line written with
 * O_APPEND and fsynced before append() resolves, so several processes can append to it and a crash never
 * leaves a checkpoint that was reported as written but is not on disk.
 */
export function createFileCheckpointLog(path: string): CheckpointLog {
  return {
    async append(cp: AuditCheckpoint): Promise<void> {
      await mkdir(dirname(path), { recursive: true });
      const fh = await open(path, 'a', 0o600);
      try {
        await fh.chmod(0o600);
        await fh.appendFile(`${JSON.stringify({ seq: cp.seq, hash: cp.hash, at: cp.at, sig: cp.sig })}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
    },
    async readAll() {
      try {
        return parseCheckpointLog(await readFile(path, 'utf8'));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw e;
      }
    },
  };
}

export function checkpointLogFor(config: Config): CheckpointLog {
  return createFileCheckpointLog(join(config.DATA_DIR, CHECKPOINT_FILE));
}
