// `file add|list`: the file library that `put` pushes to endpoints. The bytes are hashed as they stream into
// the store; the SHA-256 printed here is the one a `put` request shows its approvers and the agent checks.
import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';

export const fileCommands: CommandGroup = {
  summary: 'the file library that `put` pushes to endpoints',
  commands: {
    add: {
      summary: 'add a file to the library (prints its size and SHA-256)',
      args: '<path> [--name <name>] [--sha256 <expected>]',
      async run(ctx, argv) {
        const usage = 'file add <path> [--name <name>] [--sha256 <expected>]';
        const { values, positionals } = cliArgs(argv, usage, 1, {
          name: { type: 'string' },
          sha256: { type: 'string' },
        });
        const path = ctx.io.resolvePath(positionals[0]!);
        let size: number;
        try {
          const st = statSync(path);
          if (!st.isFile()) throw new CliUsageError(`${positionals[0]} is not a regular file.`, usage);
          size = st.size;
        } catch (e) {
          if (e instanceof CliUsageError) throw e;
          throw new CliUsageError(
            `Cannot read ${positionals[0]}: ${(e as NodeJS.ErrnoException).code ?? e}.`,
            usage,
          );
        }
        if (size > ctx.config.MAX_FILE_BYTES) {
          throw new CliUsageError(
            `${basename(path)} is ${size} bytes; the library takes at most ${ctx.config.MAX_FILE_BYTES} (MAX_FILE_BYTES).`,
            usage,
          );
        }
        const row = await ctx.library.add({
          name: values.name ?? basename(path),
          source: createReadStream(path),
          actor: { type: 'system', id: 'cli' },
          expectedSha256: values.sha256,
        });
        ctx.out(`Added ${row.name} to the library: ${row.size} bytes, sha256 ${row.sha256}.`);
        ctx.out(`Push it with: put <host> ${row.name} <destination-path> --reason "<why>"`);
      },
    },
    list: {
      summary: 'list library files',
      async run(ctx) {
        const rows = await ctx.library.list();
        if (!rows.length) ctx.out('The file library is empty. Add one with: file add <path>');
        for (const f of rows) ctx.out(`${f.name.padEnd(32)} ${String(f.size).padStart(12)}  ${f.sha256}`);
      },
    },
  },
};
