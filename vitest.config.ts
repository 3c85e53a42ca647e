import { defineConfig } from 'vitest/config';

process.env.NODE_ENV = 'test';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A throwaway PostgreSQL cluster for the tests that run the store on PostgreSQL.
    globalSetup: ['test/helpers/postgres-global-setup.ts'],
    // One process per test file: each loads the PKCS#11 module once, on its own token.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
