// The script library: the only scripts `run` may name. A script's exact bytes are hashed into every request
// digest that uses it, so replacing a script's body can never ride on an earlier approval.
import { createHash } from 'node:crypto';
import { asc, eq, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.ts';
import { OSES, scripts } from '../../db/schema.ts';
import { isSemver } from '../../protocol/semver.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { BadRequest, describeZodIssues } from '../errors.ts';

/** How a script declares its parameters; `run` validates `name=value` pairs against this. */
export const paramSpecSchema = z.object({
  type: z.enum(['string', 'integer', 'boolean']),
  required: z.boolean().optional(),
  pattern: z.string().max(500).optional(),
  max: z.number().int().positive().optional(),
  description: z.string().max(500).optional(),
});
export const paramsSchemaSchema = z
  .record(
    z.string().regex(/^[a-z_][a-z0-9_]{0,31}$/, 'parameter names are lower-case letters, digits and _'),
    paramSpecSchema,
  )
  .refine((o) => Object.keys(o).length <= 50, 'at most 50 parameters');

const scriptInput = z.object({
  name: z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9._-]{0,62}$/,
      'use 1 to 63 lower-case letters, digits, dot, underscore or hyphen',
    ),
  description: z.string().max(2000).default(''),
  readOnly: z.boolean().default(false),
  paramsSchema: paramsSchemaSchema.default({}),
  minAgentVersion: z.string().refine(isSemver, 'a version such as 1.2.0').default('1.2.0'),
  oses: z.array(z.enum(OSES)).min(1).default(['windows', 'linux']),
});

export function createScriptLibrary(deps: { db: Db; audit: AuditService; maxScriptBytes: number }) {
  const { db, audit, maxScriptBytes } = deps;
  return {
    /**
     * Adds a script, or replaces its body: a changed body is a new version with a new SHA-256, so pending
     * requests keep the digest (and version) they were made with and their approvals never carry over.
     */
    async upsert(input: z.input<typeof scriptInput> & { body: string; actorId?: string | null }) {
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
      const sha256 = createHash('sha256').update(input.body).digest('hex');
      const values = { ...parsed.data, body: input.body, sha256 };
      return db.transaction(async (tx) => {
        const [row] = await tx
          .insert(scripts)
          .values(values)
          .onConflictDoUpdate({
            target: scripts.name,
            set: {
              ...values,
              version: sql`case when ${scripts.sha256} = excluded.sha256 then ${scripts.version} else ${scripts.version} + 1 end`,
              updatedAt: new Date(),
            },
          })
          .returning();
        await audit.append(
          {
            actorType: input.actorId ? 'user' : 'system',
            actorId: input.actorId ?? 'cli',
            action: 'script.saved',
            outcome: 'ok',
            details: {
              name: values.name,
              version: row!.version,
              sha256,
              readOnly: values.readOnly,
              payload: input.body,
            },
          },
          tx,
        );
        return row!;
      });
    },
    list: () => db.select().from(scripts).orderBy(asc(scripts.name)),
    async get(name: string) {
      const [row] = await db.select().from(scripts).where(eq(scripts.name, name));
      return row;
    },
  };
}

export type ScriptLibrary = ReturnType<typeof createScriptLibrary>;
