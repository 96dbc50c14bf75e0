import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { Config } from '../app/config.ts';
import type { CliContext } from './cli-context.ts';

/**
 * Where a command reads and writes. A command never touches process.stdout, stdin or the working directory
 * itself, so the same implementation runs in the CLI's own process and, for a CLI talking to the running
 * server, inside the server with its output streamed back.
 */
export interface CliIo {
  /** One line of output. */
  out(line: string): void;
  /** One line on the error stream. */
  err(line: string): void;
  /** Raw output, resolving when it may continue (back-pressure for long exports). */
  write(chunk: string): Promise<void>;
  /** One line of the caller's standard input; undefined when it is empty or closed. */
  readLine(): Promise<string | undefined>;
  /** A path the caller typed, made absolute against the caller's working directory. */
  resolvePath(path: string): string;
}

/** Resolves to the exit code when it is not 0 (e.g. 3: the audit chain is broken). */
// biome-ignore lint/suspicious/noConfusingVoidType: most commands return nothing, which TypeScript types as void.
type ExitCode = Promise<number | void>;

export type CliCommand = {
  summary: string;
  args?: string;
} & (
  | { run(ctx: CliContext, argv: string[]): ExitCode }
  /**
   * Commands that must not open the database as usual (setting up roles as the owner, printing a key):
   * they always run in the CLI's own process.
   */
  | { runWithoutContext(config: Config, argv: string[], io: CliIo): ExitCode }
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
