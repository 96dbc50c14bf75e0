// Input schemas and small helpers of the user service: every boundary input is parsed here with zod, and
// a failure names the field and what was wrong.
import { z } from 'zod';
import { PLATFORMS, ROLES } from '../../db/schema.ts';
import { BadRequest, describeZodIssues } from '../errors.ts';

const ROLE_HELP = ROLES.join(', ');
export const username = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^[a-z0-9._-]{1,64}$/, 'use 1 to 64 characters from a-z, 0-9, dot, underscore and hyphen');
export const orgName = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(100, 'too long (max 100)')
  .regex(/^[A-Za-z0-9 ._-]+$/, 'use letters, digits, spaces, dot, underscore and hyphen');
export const role = z.enum(ROLES, { error: `not a role; roles are ${ROLE_HELP}` });
export const platform = z.enum(PLATFORMS, { error: `not a platform; platforms are ${PLATFORMS.join(', ')}` });
export const chatId = z.string().trim().min(1, 'must not be empty').max(200, 'too long (max 200)');
export const optionalActor = z.string().uuid('must be a user id').nullish();
export const userRef = z.string().trim().min(1, 'must not be empty').max(100, 'too long (max 100)');

export const createOrgInput = z.object({
  name: orgName,
  external: z.boolean(),
  allowedRoles: z.array(role).max(ROLES.length),
  actorId: optionalActor,
});
export const mapTenantInput = z.object({ platform, tenantId: chatId, orgName, actorId: optionalActor });
export const createUserInput = z.object({
  username,
  displayName: z.string().trim().min(1, 'must not be empty').max(200, 'too long (max 200)'),
  email: z.string().trim().max(320, 'too long (max 320)').pipe(z.email('not an e-mail address')).nullish(),
  password: z.string().max(4096, 'too long'),
  orgName: orgName.optional(),
  actorId: optionalActor,
});
export const linkInput = z.object({
  userId: userRef,
  platform,
  tenantId: chatId,
  chatUserId: chatId,
  actorId: optionalActor,
});
export const roleInput = z.object({ actorId: optionalActor, userId: userRef, role });

export function parse<T extends z.ZodType>(schema: T, input: unknown, what: string): z.output<T> {
  const res = schema.safeParse(input);
  if (!res.success)
    throw new BadRequest('user.invalid_input', `Invalid ${what}: ${describeZodIssues(res.error.issues)}.`);
  return res.data;
}

export function actor(actorId: string | null | undefined) {
  return actorId ? { actorType: 'user' as const, actorId } : { actorType: 'system' as const, actorId: null };
}

export function identityKey(i: { platform: string; tenantId: string; chatUserId: string }): string {
  return `${i.platform}:${i.tenantId}:${i.chatUserId}`;
}

/** A unique-constraint violation, whichever driver raised it (drizzle wraps the driver error in `cause`). */
export function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string; cause?: { code?: string } };
  return err?.code === '23505' || err?.cause?.code === '23505';
}
