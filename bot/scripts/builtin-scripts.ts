// The scripts shipped with the platform (their Python lives in ./builtin/, written against the agent's
// helper module) and their installation into the versioned library at start. Installing is idempotent: the
// same bytes and settings add nothing; changed ones add a new version, which no approval given for an older
// version covers (approvals bind to the request digest, which holds the exact bytes).
import { readFileSync } from 'node:fs';
import { AppError } from '../errors.ts';
import type { Logger } from '../ports.ts';
import type { ScriptInput, ScriptLibrary } from './script-library.ts';

/** A built-in as the library stores it; `file` is its Python beside this module. */
export interface BuiltinScript extends Omit<ScriptInput, 'body' | 'actorId' | 'builtin'> {
  name: string;
  file: string;
}

const ABSOLUTE_PATH = '^(/|[A-Za-z]:[\\\\/]|\\\\\\\\)';

export const BUILTIN_SCRIPTS: readonly BuiltinScript[] = [
  {
    name: 'process-list',
    file: 'process-list.py',
    description:
      'List the processes running on the endpoint, optionally only those whose name contains a text.',
    readOnly: true,
    paramsSchema: {
      type: 'object',
      properties: {
        name: {
          type: 'string',
          minLength: 1,
          maxLength: 255,
          description: 'only processes whose name contains this',
        },
      },
    },
    oses: ['linux', 'windows'],
    minAgentVersion: '1.5.0',
    timeoutSeconds: 60,
    outputCapBytes: 256 * 1024,
  },
  {
    name: 'network-connections',
    file: 'network-connections.py',
    description:
      'List the TCP and UDP sockets and the process owning each (/proc/net on Linux, netstat -ano on Windows).',
    readOnly: true,
    paramsSchema: {
      type: 'object',
      properties: {
        port: {
          type: 'integer',
          minimum: 1,
          maximum: 65535,
          description: 'only sockets with this local or remote port',
        },
      },
    },
    oses: ['linux', 'windows'],
    minAgentVersion: '1.5.0',
    timeoutSeconds: 60,
    outputCapBytes: 256 * 1024,
  },
  {
    name: 'file-hash',
    file: 'file-hash.py',
    description: 'The SHA-256 and size of one file (a directory is refused).',
    readOnly: true,
    paramsSchema: {
      type: 'object',
      properties: {
        path: {
          type: 'string',
          minLength: 1,
          maxLength: 4096,
          pattern: ABSOLUTE_PATH,
          description: 'the absolute path of the file',
        },
      },
      required: ['path'],
    },
    oses: ['linux', 'windows'],
    minAgentVersion: '1.5.0',
    timeoutSeconds: 900,
    outputCapBytes: 16 * 1024,
  },
  {
    name: 'triage-bundle',
    file: 'triage-bundle.py',
    description:
      'Collect hostname, OS release, uptime, processes, connections and recent auth log lines into a zip, uploaded as evidence.',
    readOnly: true,
    paramsSchema: {
      type: 'object',
      properties: {
        auth_lines: {
          type: 'integer',
          minimum: 1,
          maximum: 5000,
          description: 'lines of the authentication log to keep (default 200)',
        },
      },
    },
    oses: ['linux', 'windows'],
    minAgentVersion: '1.5.0',
    timeoutSeconds: 300,
    outputCapBytes: 64 * 1024,
  },
  {
    name: 'isolation-control',
    file: 'isolation-control.py',
    description:
      "Isolate the endpoint, lift its isolation, or report it, through the agent's own firewall backend (nftables, netsh).",
    readOnly: false,
    paramsSchema: {
      type: 'object',
      properties: {
        action: {
          type: 'string',
          enum: ['isolate', 'unisolate', 'status'],
          description: 'what to do',
        },
      },
      required: ['action'],
    },
    oses: ['linux', 'windows'],
    minAgentVersion: '1.5.0',
    timeoutSeconds: 120,
    outputCapBytes: 64 * 1024,
  },
];

/** The Python of a built-in, exactly as shipped. */
export function builtinBody(b: BuiltinScript): string {
  return readFileSync(new URL(`./builtin/${b.file}`, import.meta.url), 'utf8');
}

export interface BuiltinInstallReport {
  /** The versions added (first install, or changed bytes or settings). */
  installed: { name: string; version: number }[];
  unchanged: string[];
  /** Names left alone, with why: an admin disabled the script, or the newest version is an admin's. */
  skipped: { name: string; why: string }[];
}

/**
 * Installs the built-ins into the library, as the system. A name whose newest version an admin added, or
 * that an admin disabled, is left alone: the admin's decision outlives a platform upgrade. Safe to run from
 * several processes at once (the library serialises versions per name). `scripts` defaults to all of them,
 * and `bodyOf` to reading the shipped files (an upgrade test hands in other bytes).
 */
export async function installBuiltinScripts(
  library: ScriptLibrary,
  logger: Logger,
  scripts: readonly BuiltinScript[] = BUILTIN_SCRIPTS,
  bodyOf: (b: BuiltinScript) => string = builtinBody,
): Promise<BuiltinInstallReport> {
  const report: BuiltinInstallReport = { installed: [], unchanged: [], skipped: [] };
  for (const b of scripts) {
    const { file: _file, ...settings } = b;
    const newest = await library.show(b.name).then(
      (s) => s.row,
      (e) => {
        if (e instanceof AppError && e.code === 'script.not_found') return undefined;
        throw e;
      },
    );
    if (newest?.disabledAt) {
      report.skipped.push({ name: b.name, why: 'disabled by an admin' });
      continue;
    }
    if (newest && !newest.builtin) {
      report.skipped.push({ name: b.name, why: `version ${newest.version} was added by an admin` });
      continue;
    }
    const row = await library.add({ ...settings, body: bodyOf(b), builtin: true });
    if (row.id === newest?.id) report.unchanged.push(b.name);
    else report.installed.push({ name: b.name, version: row.version });
  }
  if (report.installed.length || report.skipped.length)
    logger.info(
      { installed: report.installed, skipped: report.skipped },
      'built-in scripts installed into the library',
    );
  return report;
}
