/**
 * Fresh, empty PostgreSQL databases for a test file, in the run's throwaway cluster
 * (postgres-global-setup.ts). Made with psql (Debian's postgresql-client, installed with
 * postgresql) so the helper needs nothing from the code under test.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';

/** The URL of a new empty database, named so that parallel test files never collide. */
export function createTestDatabase(): string {
  const adminUrl = inject('postgresAdminUrl');
  const name = `hsm_signer_test_${randomBytes(6).toString('hex')}`;
  execFileSync('psql', ['--no-psqlrc', '-v', 'ON_ERROR_STOP=1', '-q', '-d', adminUrl, '-c', `CREATE DATABASE ${name}`], { stdio: 'pipe' });
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Runs SQL in `databaseUrl` with psql and returns its unaligned, tuples-only output. */
export function psql(databaseUrl: string, sql: string): string {
  return execFileSync('psql', ['--no-psqlrc', '-v', 'ON_ERROR_STOP=1', '-qAt', '-d', databaseUrl, '-c', sql], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
}
