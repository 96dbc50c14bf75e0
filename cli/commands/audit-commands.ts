import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';

export const auditCommands: CommandGroup = {
  summary: 'verify and export the tamper-evident audit log',
  commands: {
    verify: {
      summary: 'walk the hash chain; prints OK and the count, or the first broken record',
      async run(ctx) {
        const res = await ctx.audit.verify();
        if (res.ok) {
          ctx.out(`OK: ${res.count} records, chain intact (head ${res.lastHash.slice(0, 16)}…)`);
          return;
        }
        ctx.out(`BROKEN at record ${res.brokenAt}: ${res.problem}. ${res.count} records before it verify.`);
        return 3;
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
