import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { Config } from '../app/config.ts';
import type { CliContext } from './cli-context.ts';

export type CliCommand = {
  summary: string;
  args?: string;
} & (
  | { run(ctx: CliContext, argv: string[]): Promise<void> }
  /** Commands that must not open the database as usual (setting up roles, printing a key). */
  | { runWithoutContext(config: Config, argv: string[]): Promise<void> }
);

export interface CommandGroup {
  summary: string;
  commands: Record<string, CliCommand>;
}

export class CliUsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
  }
}

/** parseArgs with strict options; an unknown flag or a missing positional becomes a CliUsageError. */
export function cliArgs<O extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  usage: string,
  positionals: number,
  options: O,
) {
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (e) {
    throw new CliUsageError((e as Error).message, usage);
  }
  if (parsed.positionals.length < positionals) {
    throw new CliUsageError(`Expected ${positionals} argument(s), got ${parsed.positionals.length}.`, usage);
  }
  return parsed as {
    values: { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string };
    positionals: string[];
  };
}
