// The versioned script library: the only scripts `run` may name. Each version is immutable (the database
// refuses to change one); a request pins a version and its SHA-256, and the exact bytes are hashed into the
// request's digest, so a new version can never ride on an approval given for an older one.
import { createHash } from 'node:crypto';
import { and, asc, desc, eq, isNull, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Db, DbOrTx } from '../../db/client.ts';
import { OSES, scripts } from '../../db/schema.ts';
import { LIMITS } from '../../protocol/actions.ts';
import { isSemver } from '../../protocol/semver.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { canonicalJson } from '../canonical-json.ts';
import { BadRequest, describeZodIssues, NotFound } from '../errors.ts';
import type { ScriptRow } from '../inventory/inventory-dal.ts';
import { checkParamsSchema } from './script-params.ts';

/** The older declaration form, still accepted for parameters (script-params.ts reads it as JSON Schema). */
export const paramSpecSchema = z.object({
  type: z.enum(['string', 'integer', 'boolean']),
  required: z.boolean().optional(),
  pattern: z.string().max(500).optional(),
  max: z.number().int().positive().optional(),
  description: z.string().max(500).optional(),
});

const scriptInput = z.object({
  name: z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9._-]{0,62}$/,
      'use 1 to 63 lower-case letters, digits, dot, underscore or hyphen',
    ),
  description: z.string().max(2000).default(''),
  readOnly: z.boolean().default(false),
  paramsSchema: z.unknown().default({}),
  minAgentVersion: z.string().refine(isSemver, 'a version such as 1.2.0').default('1.2.0'),
  oses: z.array(z.enum(OSES)).min(1).default(['windows', 'linux']),
  timeoutSeconds: z.number().int().min(1).max(LIMITS.maxTimeoutSeconds).default(600),
  outputCapBytes: z
    .number()
    .int()
    .min(LIMITS.minOutputCapBytes)
    .max(LIMITS.maxOutputCapBytes)
    .default(1_048_576),
});

export type ScriptInput = z.input<typeof scriptInput> & {
  body: string;
  actorId?: string | null;
  /** Shipped with the platform (bot/scripts/builtin-scripts.ts); audited as the system's, not an admin's. */
  builtin?: boolean;
};

/** The settings that make a version what it is: a repeat of the newest one adds nothing. */
const sameVersion = (
  a: ScriptRow,
  b: Omit<ScriptRow, 'id' | 'version' | 'createdAt' | 'updatedAt' | 'createdBy' | 'disabledAt'>,
) =>
  a.sha256 === b.sha256 &&
  a.builtin === b.builtin &&
  a.readOnly === b.readOnly &&
  a.minAgentVersion === b.minAgentVersion &&
  a.timeoutSeconds === b.timeoutSeconds &&
  a.outputCapBytes === b.outputCapBytes &&
  a.description === b.description &&
  [...a.oses].sort().join() === [...b.oses].sort().join() &&
  canonicalJson(a.paramsSchema) === canonicalJson(b.paramsSchema);

export function createScriptLibrary(deps: { db: Db; audit: AuditService; maxScriptBytes: number }) {
  const { db, audit, maxScriptBytes } = deps;

  /** Every version of a name, newest first. */
  const versionsOf = (tx: DbOrTx, name: string) =>
    tx.select().from(scripts).where(eq(scripts.name, name)).orderBy(desc(scripts.version));

  /**
   * Adds a script version. A name seen before gets the next version; versions never change, so requests
   * keep the version and SHA-256 they pinned, and approvals given for one version never carry over to
   * another (they bind to the request's digest). Adding exactly the newest version again (same bytes and
   * settings, not disabled) returns it unchanged. The parameter schema is checked as JSON Schema first.
   */
  async function add(input: ScriptInput): Promise<ScriptRow> {
    const parsed = scriptInput.safeParse(input);
    if (!parsed.success)
      throw new BadRequest('script.invalid', `Invalid script: ${describeZodIssues(parsed.error.issues)}.`);
    const bytes = Buffer.byteLength(input.body);
    if (bytes > maxScriptBytes) {
      throw new BadRequest(
        'script.too_large',
        `The script is ${bytes} bytes; the limit is ${maxScriptBytes} (MAX_SCRIPT_BYTES).`,
      );
    }
    const paramsSchema = checkParamsSchema(parsed.data.paramsSchema);
    const sha256 = createHash('sha256').update(input.body).digest('hex');
    const builtin = input.builtin === true;
    const values = { ...parsed.data, paramsSchema, body: input.body, sha256, builtin };
    return db.transaction(async (tx) => {
      // Two admins adding the same name at once get versions n and n+1, never the same number twice.
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`script:${values.name}`}))`);
      const [latest] = await versionsOf(tx, values.name);
      if (latest && !latest.disabledAt && sameVersion(latest, values)) return latest;
      const [row] = await tx
        .insert(scripts)
        .values({ ...values, version: (latest?.version ?? 0) + 1, createdBy: input.actorId ?? null })
        .returning();
      await audit.append(
        {
          actorType: input.actorId ? 'user' : 'system',
          actorId: input.actorId ?? (builtin ? 'builtin' : 'cli'),
          action: 'script.saved',
          outcome: 'ok',
          details: {
            name: values.name,
            builtin,
            version: row!.version,
            sha256,
            readOnly: values.readOnly,
            oses: values.oses,
            minAgentVersion: values.minAgentVersion,
            timeoutSeconds: values.timeoutSeconds,
            outputCapBytes: values.outputCapBytes,
            paramsSchema,
            payload: input.body,
          },
        },
        tx,
      );
      return row!;
    });
  }

  return {
    add,
    /** The name the demo seed and older callers use: the same as `add`. */
    upsert: add,
    /** The newest version of each script, enabled or not, by name. */
    async list(opts: { includeDisabled?: boolean } = {}): Promise<ScriptRow[]> {
      const rows = await db.select().from(scripts).orderBy(asc(scripts.name), desc(scripts.version));
      const newest = rows.filter((r, i) => i === 0 || rows[i - 1]!.name !== r.name);
      return opts.includeDisabled ? newest : newest.filter((r) => !r.disabledAt);
    },
    /** One version (default: the newest) of a script, and how many versions it has. */
    async show(name: string, version?: number): Promise<{ row: ScriptRow; versions: number }> {
      const all = await versionsOf(db, name);
      const row = version === undefined ? all[0] : all.find((r) => r.version === version);
      if (!row) {
        throw new NotFound(
          'script.not_found',
          version === undefined
            ? `No script called "${name.slice(0, 63)}".`
            : `Script ${name.slice(0, 63)} has no version ${version} (it has ${all.length}).`,
        );
      }
      return { row, versions: all.length };
    },
    /** The newest enabled version: what `run <name>` uses. */
    async get(name: string) {
      const [row] = (await versionsOf(db, name)).filter((r) => !r.disabledAt);
      return row;
    },
    /**
     * Disables every version of a script: `run` no longer finds it and requests not yet dispatched that
     * pinned one of its versions are refused at dispatch. Adding the name again starts a new version.
     */
    async disable(name: string, actorId?: string | null): Promise<number> {
      return db.transaction(async (tx) => {
        const rows = await tx
          .update(scripts)
          .set({ disabledAt: new Date() })
          .where(and(eq(scripts.name, name), isNull(scripts.disabledAt)))
          .returning({ version: scripts.version });
        if (!rows.length) {
          const [any] = await versionsOf(tx, name);
          if (!any) throw new NotFound('script.not_found', `No script called "${name.slice(0, 63)}".`);
          return 0;
        }
        await audit.append(
          {
            actorType: actorId ? 'user' : 'system',
            actorId: actorId ?? 'cli',
            action: 'script.disabled',
            outcome: 'ok',
            details: { name, versions: rows.map((r) => r.version) },
          },
          tx,
        );
        return rows.length;
      });
    },
  };
}

export type ScriptLibrary = ReturnType<typeof createScriptLibrary>;
