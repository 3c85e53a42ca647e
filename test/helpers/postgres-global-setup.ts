/**
 * vitest globalSetup: one throwaway PostgreSQL cluster for the whole run (postgres-cluster.ts),
 * its superuser URL handed to test files as inject('postgresAdminUrl'). Each test file that
 * needs PostgreSQL makes databases of its own in it (postgres.ts createTestDatabase), so files
 * running in parallel never share state.
 */
import type { TestProject } from 'vitest/node';
import { startPostgresCluster } from './postgres-cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresAdminUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await startPostgresCluster();
  project.provide('postgresAdminUrl', cluster.adminUrl);
  return () => cluster.stop();
}
