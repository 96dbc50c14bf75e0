import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { CHECKPOINT_FILE, resolveCheckpointKeys } from '../../app/audit-anchoring.ts';
import { resolveSecretKey } from '../../app/config.ts';
import { publicKeyPem } from '../../bot/audit/audit-keys.ts';
import type { ProblemKind } from '../../bot/audit/audit-verify.ts';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';

/** The verdict word after each problem, with the first sequence number it affects. */
const VERDICT: Record<ProblemKind, (seq: number) => string> = {
  rewritten: (n) => `REWRITTEN from seq ${n}`,
  missing: (n) => `MISSING: seq ${n} was deleted`,
  truncated: (n) => `TRUNCATED: first missing seq ${n}`,
  forged_checkpoint: (n) => `FORGED CHECKPOINT for seq ${n}`,
  damaged_checkpoint: (n) => `DAMAGED CHECKPOINT FILE: records from seq ${n} lose that anchor`,
  unanchored: (n) => `UNANCHORED from seq ${n}`,
};

export const auditCommands: CommandGroup = {
  summary: 'verify, checkpoint and export the tamper-evident audit log',
  commands: {
    verify: {
      summary: 'walk the keyed hash chain and check it against the signed checkpoints; exit 3 when broken',
      async run(ctx) {
        const res = await ctx.audit.verify({ anchors: await ctx.anchors() });
        if (res.ok) {
          const cp = res.lastCheckpoint
            ? `last signed checkpoint: record ${res.lastCheckpoint.seq} at ${res.lastCheckpoint.at} (${res.checkpoints} checked)`
            : 'no signed checkpoint yet (the server signs one within a minute of new records)';
          ctx.out(`OK: ${res.count} records, chain intact (head ${res.lastHash.slice(0, 16)}…); ${cp}`);
          return;
        }
        ctx.out(
          `BROKEN at record ${res.brokenAt}: ${res.problem}. ${VERDICT[res.kind](res.brokenAt)}. ${res.count} records before it verify.`,
        );
        for (const p of res.problems.slice(1))
          ctx.out(`  also: ${p.message}. ${VERDICT[p.kind](p.firstSeq)}.`);
        return 3;
      },
    },
    checkpoint: {
      summary: `sign the chain's head now into DATA_DIR/${CHECKPOINT_FILE} (the server does this every minute)`,
      async run(ctx) {
        const cp = await ctx.checkpointer.checkpointNow();
        if (!cp) {
          const head = await ctx.audit.head();
          ctx.out(
            head
              ? `Nothing to sign: record ${head.seq} is already covered by a checkpoint, or is not keyed (run audit verify).`
              : 'Nothing to sign: the audit log is empty.',
          );
          return;
        }
        ctx.out(`Signed checkpoint for record ${cp.seq} (hash ${cp.hash.slice(0, 16)}…) at ${cp.at}.`);
      },
    },
    'public-key': {
      summary: 'print the Ed25519 public key that checks the checkpoint signatures (for auditors)',
      async runWithoutContext(config, _argv, io) {
        const keys = resolveCheckpointKeys(config, resolveSecretKey(config));
        await io.write(publicKeyPem(keys));
      },
    },
    export: {
      summary: 'export every record in order as JSON lines',
      args: '--format jsonl [--out file]',
      async run(ctx, argv) {
        const usage = 'audit export --format jsonl [--out file]';
        const { values } = cliArgs(argv, usage, 0, { format: { type: 'string' }, out: { type: 'string' } });
        if ((values.format ?? 'jsonl') !== 'jsonl')
          throw new CliUsageError(`Unknown format "${values.format}"; only jsonl is supported.`, usage);
        const file = values.out
          ? createWriteStream(ctx.io.resolvePath(values.out), { flags: 'wx', mode: 0o600 })
          : undefined;
        if (file) {
          // Inside the server an unhandled stream error would end the process, not just this command.
          file.on('error', () => {});
          try {
            await once(file, 'open');
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
            throw new CliUsageError(`${values.out} already exists; choose a new file name.`, usage);
          }
        }
        const write = async (line: string) => {
          if (!file) return ctx.io.write(line);
          if (!file.write(line)) await once(file, 'drain');
        };
        let n = 0;
        for await (const r of ctx.audit.exportAll()) {
          await write(`${JSON.stringify({ ...r, at: r.at.toISOString() })}\n`);
          n++;
        }
        if (file) {
          file.end();
          await finished(file);
          ctx.out(`Wrote ${n} records to ${values.out}.`);
        }
      },
    },
  },
};
