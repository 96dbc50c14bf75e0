// Read-only queries over the inventory the request service resolves commands against: endpoints by name or
// segment, segments, library scripts and files.
import { and, count, desc, eq, inArray, isNotNull, isNull, or, sql } from 'drizzle-orm';
import type { DbOrTx } from '../../db/client.ts';
import { endpoints, files, type Os, scripts, segments } from '../../db/schema.ts';
import type { EndpointInfo, SegmentInfo } from '../policy/policy-rules.ts';

export type ScriptRow = typeof scripts.$inferSelect;
export type FileRow = typeof files.$inferSelect;

const endpointCols = {
  id: endpoints.id,
  hostname: endpoints.hostname,
  os: endpoints.os,
  agentVersion: endpoints.agentVersion,
  segmentId: endpoints.segmentId,
  revokedAt: endpoints.revokedAt,
  reportedHostname: endpoints.reportedHostname,
};

/** Chunked so a long host list never becomes one giant parameter list. */
export async function endpointsByHostnames(db: DbOrTx, hostnames: string[]): Promise<EndpointInfo[]> {
  const out: EndpointInfo[] = [];
  for (let i = 0; i < hostnames.length; i += 500) {
    const chunk = hostnames.slice(i, i + 500);
    out.push(...(await db.select(endpointCols).from(endpoints).where(inArray(endpoints.hostname, chunk))));
  }
  return out;
}

/** Endpoints in these segments, of these OSes only when `oses` is given. */
export async function endpointsInSegments(
  db: DbOrTx,
  segmentIds: string[],
  oses?: readonly Os[],
): Promise<EndpointInfo[]> {
  if (!segmentIds.length) return [];
  return db
    .select(endpointCols)
    .from(endpoints)
    .where(
      and(
        inArray(endpoints.segmentId, segmentIds),
        oses?.length ? inArray(endpoints.os, [...oses]) : undefined,
      ),
    );
}

/** How many endpoints `endpointsInSegments` would return: checked before loading a fleet-sized list. */
export async function countEndpointsInSegments(
  db: DbOrTx,
  segmentIds: string[],
  oses?: readonly Os[],
): Promise<number> {
  if (!segmentIds.length) return 0;
  const [row] = await db
    .select({ n: count() })
    .from(endpoints)
    .where(
      and(
        inArray(endpoints.segmentId, segmentIds),
        oses?.length ? inArray(endpoints.os, [...oses]) : undefined,
      ),
    );
  return Number(row?.n ?? 0);
}

/** The segments with Active Response enabled: what `all` selects. */
export async function enabledSegments(db: DbOrTx): Promise<SegmentInfo[]> {
  return db
    .select({ id: segments.id, name: segments.name, activeResponseEnabled: segments.activeResponseEnabled })
    .from(segments)
    .where(eq(segments.activeResponseEnabled, true));
}

export async function segmentsByNames(db: DbOrTx, names: string[]): Promise<SegmentInfo[]> {
  if (!names.length) return [];
  return db
    .select({ id: segments.id, name: segments.name, activeResponseEnabled: segments.activeResponseEnabled })
    .from(segments)
    .where(inArray(segments.name, names));
}

export async function segmentsByIds(db: DbOrTx, ids: string[]): Promise<SegmentInfo[]> {
  if (!ids.length) return [];
  return db
    .select({ id: segments.id, name: segments.name, activeResponseEnabled: segments.activeResponseEnabled })
    .from(segments)
    .where(inArray(segments.id, [...new Set(ids)]));
}

export async function endpointByHostname(db: DbOrTx, hostname: string) {
  const [row] = await db.select().from(endpoints).where(eq(endpoints.hostname, hostname.toLowerCase()));
  return row ?? null;
}

/** The newest enabled version of a script: what `run <name>` uses. */
export async function scriptByName(db: DbOrTx, name: string): Promise<ScriptRow | null> {
  const [row] = await db
    .select()
    .from(scripts)
    .where(and(eq(scripts.name, name), isNull(scripts.disabledAt)))
    .orderBy(desc(scripts.version))
    .limit(1);
  return row ?? null;
}

/** One script version by its row id: what a request pinned. */
export async function scriptById(db: DbOrTx, id: string): Promise<ScriptRow | null> {
  const [row] = await db.select().from(scripts).where(eq(scripts.id, id));
  return row ?? null;
}

/** A library file by name or by SHA-256 (fetched evidence is never pushed back out). */
export async function libraryFile(db: DbOrTx, ref: string): Promise<FileRow | null> {
  const bySha = /^[0-9a-f]{64}$/i.test(ref);
  const [row] = await db
    .select()
    .from(files)
    .where(
      and(
        eq(files.kind, 'library'),
        bySha ? or(eq(files.sha256, ref.toLowerCase()), eq(files.name, ref)) : eq(files.name, ref),
      ),
    )
    .limit(1);
  return row ?? null;
}

/** One text parameter cast to uuid[]: any number of ids in a single bind, whatever the driver's limit. */
const uuidArray = (ids: readonly string[]) => sql`${`{${ids.join(',')}}`}::uuid[]`;

/** How many of these endpoints hold a live broker connection now. */
export async function countOnline(db: DbOrTx, endpointIds: readonly string[]): Promise<number> {
  if (!endpointIds.length) return 0;
  const [row] = await db
    .select({ n: count() })
    .from(endpoints)
    .where(and(sql`${endpoints.id} = any(${uuidArray(endpointIds)})`, isNotNull(endpoints.brokerId)));
  return Number(row?.n ?? 0);
}

/** Which of these endpoints hold a live broker connection now. */
export async function onlineIds(db: DbOrTx, endpointIds: readonly string[]): Promise<Set<string>> {
  if (!endpointIds.length) return new Set();
  const rows = await db
    .select({ id: endpoints.id })
    .from(endpoints)
    .where(and(sql`${endpoints.id} = any(${uuidArray(endpointIds)})`, isNotNull(endpoints.brokerId)));
  return new Set(rows.map((r) => r.id));
}
