import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
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
        process.exitCode = 3;
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
        const out = values.out ? createWriteStream(values.out, { flags: 'wx', mode: 0o600 }) : process.stdout;
        let n = 0;
        for await (const r of ctx.audit.exportAll()) {
          const line = `${JSON.stringify({ ...r, at: r.at.toISOString() })}\n`;
          if (!out.write(line)) await once(out, 'drain');
          n++;
        }
        if (values.out) {
          (out as NodeJS.WritableStream).end();
          await once(out, 'finish');
          ctx.out(`Wrote ${n} records to ${values.out}.`);
        }
      },
    },
  },
};
