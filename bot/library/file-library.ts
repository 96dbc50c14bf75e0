// The file library: the only files `put` can push to an endpoint. A file is streamed into the FileStore
// while it is hashed and counted; a file over the size cap, or whose SHA-256 is not the one the person said
// to expect, is removed again and never gets a row. Names are unique, so `put <name>` names one file, and a
// request binds the file's id and SHA-256, so a replaced file can never ride on an earlier approval.
import { and, asc, eq } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.ts';
import { files, users } from '../../db/schema.ts';
import type { AuditService } from '../audit/audit-service.ts';
import { BadRequest, Conflict, describeZodIssues, Forbidden } from '../errors.ts';
import type { FileStore } from '../ports.ts';
import type { ResolvedUser } from '../users/user-types.ts';

export const libraryFileNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, {
  error: 'use 1 to 128 letters, digits, dot, underscore or hyphen, starting with a letter or digit',
});

const addInput = z.object({
  name: libraryFileNameSchema,
  expectedSha256: z
    .string()
    .trim()
    .toLowerCase()
    .regex(/^[0-9a-f]{64}$/, { error: 'must be 64 hex characters (a SHA-256)' })
    .optional(),
});

export class FileTooLarge extends BadRequest {}

/** Counts bytes as they pass and fails the stream as soon as the cap is passed. */
async function* capped(source: AsyncIterable<Uint8Array>, max: number) {
  let n = 0;
  for await (const chunk of source) {
    n += chunk.byteLength;
    if (n > max) {
      throw new FileTooLarge(
        'library.too_large',
        `The file is larger than ${max} bytes (MAX_FILE_BYTES); nothing was stored.`,
      );
    }
    yield chunk;
  }
}

/** Who may add library files: people who ask for actions, and admins. */
export function requireLibraryEditor(user: Pick<ResolvedUser, 'roles' | 'disabled'>) {
  if (user.disabled || !(user.roles.includes('active_response') || user.roles.includes('admin'))) {
    throw new Forbidden(
      'library.forbidden',
      'Adding files to the library needs the Active Response or admin role. Ask a platform admin.',
    );
  }
}

export function createFileLibrary(deps: {
  db: Db;
  audit: AuditService;
  fileStore: FileStore;
  maxFileBytes: number;
}) {
  const { db, audit, fileStore, maxFileBytes } = deps;

  async function refuse(
    actor: { type: 'user' | 'system'; id: string },
    name: string,
    code: string,
    msg: string,
  ) {
    await audit.append({
      actorType: actor.type,
      actorId: actor.id,
      action: 'library.file_added',
      outcome: 'refused',
      details: { name: name.slice(0, 200), code, message: msg },
    });
  }

  return {
    /**
     * Stores `source` as library file `name`. With `expectedSha256`, a file whose bytes hash to anything else
     * is refused (and removed). Every attempt is audited, refusals included.
     */
    async add(input: {
      name: string;
      source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream;
      actor: { type: 'user' | 'system'; id: string };
      expectedSha256?: string;
    }) {
      const parsed = addInput.safeParse({
        name: input.name,
        expectedSha256: input.expectedSha256 || undefined,
      });
      if (!parsed.success) {
        const msg = `That file was not added: ${describeZodIssues(parsed.error.issues)}.`;
        await refuse(input.actor, String(input.name), 'library.invalid', msg);
        throw new BadRequest('library.invalid', msg);
      }
      const { name, expectedSha256 } = parsed.data;
      const [taken] = await db
        .select({ id: files.id })
        .from(files)
        .where(and(eq(files.kind, 'library'), eq(files.name, name)));
      if (taken) {
        const msg = `The library already has a file named "${name}". Choose another name.`;
        await refuse(input.actor, name, 'library.name_taken', msg);
        throw new Conflict('library.name_taken', msg);
      }
      let stored: { key: string; size: number; sha256: string };
      try {
        stored = await fileStore.put(capped(input.source as AsyncIterable<Uint8Array>, maxFileBytes));
      } catch (err) {
        if (err instanceof FileTooLarge) await refuse(input.actor, name, err.code, err.message);
        throw err;
      }
      if (expectedSha256 && stored.sha256 !== expectedSha256) {
        await fileStore.remove(stored.key);
        const msg = `The uploaded bytes hash to ${stored.sha256}, not the expected ${expectedSha256}; nothing was stored. Check you picked the right file.`;
        await refuse(input.actor, name, 'library.hash_mismatch', msg);
        throw new BadRequest('library.hash_mismatch', msg);
      }
      try {
        return await db.transaction(async (tx) => {
          const [row] = await tx
            .insert(files)
            .values({
              kind: 'library',
              name,
              size: stored.size,
              sha256: stored.sha256,
              storageKey: stored.key,
              createdBy: input.actor.type === 'user' ? input.actor.id : null,
            })
            .returning();
          await audit.append(
            {
              actorType: input.actor.type,
              actorId: input.actor.id,
              action: 'library.file_added',
              outcome: 'ok',
              details: { fileId: row!.id, name, size: stored.size, sha256: stored.sha256 },
            },
            tx,
          );
          return row!;
        });
      } catch (err) {
        // Two uploads of one name at once: the unique index decides, the loser's bytes go.
        await fileStore.remove(stored.key);
        if ((err as { code?: string }).code === '23505' || /files_library_name/.test(String(err))) {
          throw new Conflict('library.name_taken', `The library already has a file named "${name}".`);
        }
        throw err;
      }
    },

    /** Every library file, by name, with who added it. */
    list() {
      return db
        .select({
          id: files.id,
          name: files.name,
          size: files.size,
          sha256: files.sha256,
          createdAt: files.createdAt,
          addedBy: users.username,
        })
        .from(files)
        .leftJoin(users, eq(users.id, files.createdBy))
        .where(eq(files.kind, 'library'))
        .orderBy(asc(files.name));
    },
  };
}

export type FileLibrary = ReturnType<typeof createFileLibrary>;
