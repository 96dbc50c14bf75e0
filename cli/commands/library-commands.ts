import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { createScriptLibrary } from '../../bot/scripts/script-library.ts';
import { describeParams } from '../../bot/scripts/script-params.ts';
import type { CliContext } from '../cli-context.ts';
import { CliUsageError, type CommandGroup, cliArgs } from '../cli-types.ts';

const library = (ctx: CliContext) =>
  createScriptLibrary({ db: ctx.db, audit: ctx.audit, maxScriptBytes: ctx.config.MAX_SCRIPT_BYTES });

const ADD_USAGE =
  'script add <name> <file.py> [--schema params.json] [--os linux,windows] [--min-agent X] [--timeout S] [--output-cap BYTES] [--read-only] [--description text]';

function readJson(path: string, what: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CliUsageError(`${what} is not valid JSON: ${(err as Error).message.slice(0, 200)}`, ADD_USAGE);
  }
}

function positiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,10}$/.test(value))
    throw new CliUsageError(`${flag} takes a whole number, not "${value}".`, ADD_USAGE);
  return Number(value);
}

export const libraryCommands: CommandGroup = {
  summary: 'the versioned script library that `run` uses',
  commands: {
    add: {
      summary: 'add a Python script, or the next version of one (versions never change)',
      args: '<name> <file.py> [--schema params.json] [--os linux,windows] [--min-agent X] [--timeout S] [--output-cap BYTES] [--read-only] [--description text]',
      async run(ctx, argv) {
        const { values, positionals } = cliArgs(argv, ADD_USAGE, 2, {
          'read-only': { type: 'boolean' },
          schema: { type: 'string' },
          params: { type: 'string' },
          'min-agent': { type: 'string' },
          os: { type: 'string' },
          timeout: { type: 'string' },
          'output-cap': { type: 'string' },
          description: { type: 'string' },
        });
        const file = ctx.io.resolvePath(positionals[1]!);
        const size = statSync(file).size;
        if (size > ctx.config.MAX_SCRIPT_BYTES) {
          throw new CliUsageError(
            `${basename(file)} is ${size} bytes; the limit is ${ctx.config.MAX_SCRIPT_BYTES}.`,
            ADD_USAGE,
          );
        }
        // --schema names a JSON Schema file; --params (inline JSON, the older form) is still read.
        let paramsSchema: unknown = {};
        if (values.schema) paramsSchema = readJson(ctx.io.resolvePath(values.schema), values.schema);
        else if (values.params) {
          try {
            paramsSchema = JSON.parse(values.params);
          } catch {
            throw new CliUsageError('--params is not valid JSON', ADD_USAGE);
          }
        }
        const row = await library(ctx).add({
          name: positionals[0]!,
          body: readFileSync(file, 'utf8'),
          readOnly: Boolean(values['read-only']),
          paramsSchema,
          minAgentVersion: values['min-agent'],
          oses: values.os?.split(',').map((s) => s.trim()) as never,
          timeoutSeconds: positiveInt(values.timeout, '--timeout'),
          outputCapBytes: positiveInt(values['output-cap'], '--output-cap'),
          description: values.description,
        });
        ctx.out(
          `Saved script ${row.name} v${row.version} (sha256 ${row.sha256}, ${row.readOnly ? 'read-only' : 'changes endpoints'}).`,
        );
      },
    },
    list: {
      summary: 'list scripts: the newest version of each, with its parameters',
      async run(ctx) {
        for (const s of await library(ctx).list({ includeDisabled: true })) {
          ctx.out(
            `${s.name.padEnd(28)} v${String(s.version).padEnd(4)} ${s.readOnly ? 'read-only' : 'write    '} ${s.sha256.slice(0, 16)}… ${s.oses.join(',')}${s.builtin ? ' built-in' : ''}${s.disabledAt ? ' (disabled)' : ''}`,
          );
          ctx.out(`${''.padEnd(28)} parameters: ${describeParams(s.paramsSchema)}`);
        }
      },
    },
    show: {
      summary: 'show one version of a script (default the newest): settings, parameters and source',
      args: '<name> [--version N]',
      async run(ctx, argv) {
        const usage = 'script show <name> [--version N]';
        const { values, positionals } = cliArgs(argv, usage, 1, { version: { type: 'string' } });
        const version = values.version === undefined ? undefined : Number(values.version);
        if (version !== undefined && !(Number.isInteger(version) && version > 0)) {
          throw new CliUsageError(
            `--version takes a version number such as 2, not "${values.version}".`,
            usage,
          );
        }
        const { row, versions } = await library(ctx).show(positionals[0]!, version);
        ctx.out(`${row.name} v${row.version} of ${versions}${row.disabledAt ? ' (disabled)' : ''}`);
        ctx.out(`sha256        ${row.sha256}`);
        ctx.out(`kind          ${row.readOnly ? 'read-only' : 'changes endpoints'}`);
        ctx.out(`author        ${row.builtin ? 'built-in (system)' : (row.createdBy ?? 'an admin (CLI)')}`);
        ctx.out(`os            ${row.oses.join(', ')}`);
        ctx.out(`min agent     ${row.minAgentVersion}`);
        ctx.out(`timeout       ${row.timeoutSeconds} s`);
        ctx.out(`output cap    ${row.outputCapBytes} bytes`);
        ctx.out(`parameters    ${describeParams(row.paramsSchema)}`);
        ctx.out(`schema        ${JSON.stringify(row.paramsSchema)}`);
        if (row.description) ctx.out(`description   ${row.description}`);
        ctx.out('---');
        ctx.out(row.body.replace(/\n$/, ''));
      },
    },
    disable: {
      summary: 'disable a script: run no longer finds it, and pending requests for it will not run',
      args: '<name>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'script disable <name>', 1, {});
        const n = await library(ctx).disable(positionals[0]!);
        ctx.out(
          n
            ? `Disabled ${positionals[0]} (${n} version${n === 1 ? '' : 's'}).`
            : `${positionals[0]} was already disabled.`,
        );
      },
    },
  },
};
