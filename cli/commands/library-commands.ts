import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { createScriptLibrary } from '../../bot/scripts/script-library.ts';
import type { CliContext } from '../cli-context.ts';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';

const library = (ctx: CliContext) =>
  createScriptLibrary({ db: ctx.db, audit: ctx.audit, maxScriptBytes: ctx.config.MAX_SCRIPT_BYTES });

export const libraryCommands: CommandGroup = {
  summary: 'the script library that `run` uses',
  commands: {
    add: {
      summary: 'add or replace a Python script',
      args: '<name> <file.py> [--read-only] [--params JSON] [--min-agent 1.2.0] [--os linux,windows] [--description text]',
      async run(ctx, argv) {
        const usage =
          'script add <name> <file.py> [--read-only] [--params JSON] [--min-agent 1.2.0] [--os linux,windows]';
        const { values, positionals } = cliArgs(argv, usage, 2, {
          'read-only': { type: 'boolean' },
          params: { type: 'string' },
          'min-agent': { type: 'string' },
          os: { type: 'string' },
          description: { type: 'string' },
        });
        const file = ctx.io.resolvePath(positionals[1]!);
        const size = statSync(file).size;
        if (size > ctx.config.MAX_SCRIPT_BYTES) {
          throw new CliUsageError(
            `${basename(file)} is ${size} bytes; the limit is ${ctx.config.MAX_SCRIPT_BYTES}.`,
            usage,
          );
        }
        let paramsSchema: unknown = {};
        if (values.params) {
          try {
            paramsSchema = JSON.parse(values.params);
          } catch {
            throw new CliUsageError(
              '--params is not valid JSON, e.g. {"path":{"type":"string","required":true}}',
              usage,
            );
          }
        }
        const row = await library(ctx).upsert({
          name: positionals[0]!,
          body: readFileSync(file, 'utf8'),
          readOnly: Boolean(values['read-only']),
          paramsSchema: paramsSchema as never,
          minAgentVersion: values['min-agent'],
          oses: values.os?.split(',').map((s) => s.trim()) as never,
          description: values.description,
        });
        ctx.out(
          `Saved script ${row.name} (sha256 ${row.sha256}, ${row.readOnly ? 'read-only' : 'changes endpoints'}).`,
        );
      },
    },
    list: {
      summary: 'list scripts',
      async run(ctx) {
        for (const s of await library(ctx).list()) {
          ctx.out(
            `${s.name.padEnd(28)} ${s.readOnly ? 'read-only' : 'write    '} ${s.sha256.slice(0, 16)}… ${s.oses.join(',')}`,
          );
        }
      },
    },
  },
};
