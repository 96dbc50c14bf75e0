import type { Role } from '../../db/schema.ts';

/** A platform user as policy sees them: roles, organisation and MFA state resolved. */
export interface ResolvedUser {
  id: string;
  username: string;
  displayName: string;
  orgId: string;
  orgName: string;
  /** Member of an external organisation (an MDR provider, say). */
  external: boolean;
  roles: Role[];
  mfaEnrolled: boolean;
  disabled: boolean;
}
