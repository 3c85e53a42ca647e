/**
 * Starts the real service in this process on a fresh SoftHSM2 token and SQLite file under a
 * new temporary DATA_DIR, listening on 127.0.0.1 port 0. One service at a time per test file
 * (the PKCS#11 module is loaded once per process).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startService, type RunningService } from '../../src/app.js';
import { loadConfig, type Config, type DeepPartial } from '../../src/config/load.js';
import { createLogger } from '../../src/logger.js';

export interface AdminCredentials {
  clientId: string;
  clientSecret: string;
  projectId: string;
}

export interface TestService {
  url: string;
  dataDir: string;
  admin: AdminCredentials;
  service: RunningService;
  config: Config;
  close(options?: { keepData?: boolean }): Promise<void>;
}

export function newDataDir(): string {
  return mkdtempSync(join(tmpdir(), 'hsm-signer-test-'));
}

export async function startTestService(overrides: DeepPartial<Config> = {}, dataDir = newDataDir()): Promise<TestService> {
  const config = loadConfig({ dataDir, server: { host: '127.0.0.1', port: 0 }, logLevel: 'silent', ...overrides }, { NODE_ENV: 'test' });
  const service = await startService(config, createLogger(config.logLevel));
  const admin = JSON.parse(readFileSync(join(dataDir, 'admin-credentials.json'), 'utf8')) as AdminCredentials;
  return {
    url: service.url,
    dataDir,
    admin,
    service,
    config,
    async close(options = {}) {
      await service.close();
      if (!options.keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
