// Which audit records a member of one organisation may read. An external organisation's people (an MDR
// provider) see the records of their own organisation's requests, and the records their own users made
// outside any request; nothing of another organisation's requests, so no script body of theirs either.
import { and, eq, isNull, or, type SQL, sql } from 'drizzle-orm';
import { actionRequests, auditLog, users } from '../../db/schema.ts';

/** The condition on `audit_log` for records visible to members of organisation `orgId`. */
export function orgScope(orgId: string): SQL {
  const orgRequests = sql`(select ${actionRequests.id} from ${actionRequests} inner join ${users} on ${users.id} = ${actionRequests.requesterId} where ${users.orgId} = ${orgId})`;
  const orgUsers = sql`(select ${users.id}::text from ${users} where ${users.orgId} = ${orgId})`;
  return or(
    sql`${auditLog.requestId} in ${orgRequests}`,
    and(isNull(auditLog.requestId), eq(auditLog.actorType, 'user'), sql`${auditLog.actorId} in ${orgUsers}`),
  )!;
}
