/**
 * The service as `npm start` runs it: a separate process on the embedded default, first start
 * and second start on the same DATA_DIR, SIGTERM, and a wrong PIN.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { login, request } from '../helpers/http.js';

const ROOT = join(import.meta.dirname, '..', '..');

interface Started {
  child: ChildProcess;
  url: string;
  output: () => string;
}

function startProcess(dataDir: string, extraEnv: Record<string, string> = {}): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info', SHUTDOWN_DELAY_MS: '0', ...extraEnv };
  // libuv's pool at its default, as under `npm start`.
  delete env.UV_THREADPOOL_SIZE;
  delete env.NODE_ENV;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

async function startListening(dataDir: string, extraEnv: Record<string, string> = {}): Promise<Started & { exited: Promise<number | null> }> {
  const started = startProcess(dataDir, extraEnv);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const match = /"url":"(http:\/\/[^"]+)".*hsm-signer is listening/.exec(started.output());
    if (match) return { ...started, url: match[1]! };
    if (started.child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  started.child.kill('SIGKILL');
  throw new Error(`service did not start:\n${started.output()}`);
}

describe('npm start path (separate process)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'hsm-signer-start-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('first start creates token, PIN and admin credentials (0600), logs the path but no secret, and stops on SIGTERM with 0', async () => {
    const svc = await startListening(dataDir);
    expect((await request(svc.url, 'GET', '/healthz')).status).toBe(200);
    expect((await request(svc.url, 'GET', '/readyz')).status).toBe(200);

    const credentialsPath = join(dataDir, 'admin-credentials.json');
    expect(statSync(credentialsPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(dataDir, 'softhsm', 'user-pin')).mode & 0o777).toBe(0o600);
    const credentials = JSON.parse(readFileSync(credentialsPath, 'utf8'));
    expect(Object.keys(credentials).sort()).toEqual(['caId', 'clientId', 'clientSecret', 'profileId', 'projectId']);
    expect(credentials.projectId).toBe('default');

    const token = await login(svc.url, credentials);
    const key = await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId: 'default', name: 'survives-restart' } });
    expect(key.status).toBe(200);

    svc.child.kill('SIGTERM');
    expect(await svc.exited).toBe(0);
    const log = svc.output();
    expect(log).toContain(credentialsPath);
    expect(log).not.toContain(credentials.clientSecret);
    expect(log).not.toContain(readFileSync(join(dataDir, 'softhsm', 'user-pin'), 'utf8').trim());
    expect(log).not.toContain(token);
  });

  it('a second start reuses the token, the store and the credentials', async () => {
    const before = readFileSync(join(dataDir, 'admin-credentials.json'), 'utf8');
    const svc = await startListening(dataDir);
    try {
      expect(readFileSync(join(dataDir, 'admin-credentials.json'), 'utf8')).toBe(before);
      const token = await login(svc.url, JSON.parse(before));
      const found = await request(svc.url, 'GET', '/api/v1/kms/keys/key-name/survives-restart?projectId=default', { token });
      expect(found.status).toBe(200);
      const encrypted = await request(svc.url, 'POST', `/api/v1/kms/keys/${found.body.key.id}/encrypt`, { token, body: { plaintext: 'aGk=' } });
      expect(encrypted.status).toBe(200);
    } finally {
      svc.child.kill('SIGTERM');
      await svc.exited;
    }
  });

  it('a wrong PIN stops the start after one try with a clear message, and does not lock the token', async () => {
    const wrong = startProcess(dataDir, { HSM_PIN: 'definitely-not-the-pin' });
    expect(await wrong.exited).toBe(1);
    expect(wrong.output()).toMatch(/refused the user PIN \(CKR_PIN_INCORRECT\)/);
    expect(wrong.output()).not.toContain('definitely-not-the-pin');

    const svc = await startListening(dataDir);
    svc.child.kill('SIGTERM');
    expect(await svc.exited).toBe(0);
  });
});
