import { defineConfig } from 'vitest/config';

process.env.NODE_ENV = 'test';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One process per test file: each loads the PKCS#11 module once, on its own token.
    pool: 'forks',
    // One throwaway PostgreSQL cluster for the run; files make their own databases in it.
    globalSetup: ['test/helpers/postgres-global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
