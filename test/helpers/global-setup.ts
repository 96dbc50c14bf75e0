// With REQUIRE_POSTGRES=1 (CI) the run fails when PostgreSQL is missing, instead of quietly testing only
// the embedded driver.
import postgres from 'postgres';

export default async function setup() {
  const url = process.env.DATABASE_URL;
  if (process.env.REQUIRE_POSTGRES !== '1') return;
  if (!url) throw new Error('REQUIRE_POSTGRES=1 but DATABASE_URL is not set');
  const sql = postgres(url, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    await sql`select 1`;
  } catch (e) {
    throw new Error(
      `REQUIRE_POSTGRES=1 but PostgreSQL at DATABASE_URL is unreachable: ${(e as Error).message}`,
    );
  } finally {
    await sql.end();
  }
}
