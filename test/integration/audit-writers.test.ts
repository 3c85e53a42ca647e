/**
 * Several writers on one audit trail, as issue #9 runs them: two service processes (as
 * `npm start` runs them) on one data directory, so one SQLite file and one SoftHSM2 token, both
 * under load at once and both signing the head every 200 ms. Every request of either process
 * is recorded exactly once, in one gap-free chain that interleaves them, the last checkpoint
 * (whichever process signed it) names the last event, `npm run audit:verify` accepts the store,
 * and it still names an event of either process edited afterwards.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newChildDataDir, ROOT, startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { login, request } from '../helpers/http.js';

const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const VERIFY = join(ROOT, 'scripts', 'verify-audit.ts');
const REQUESTS_PER_PROCESS = 150;
const CONCURRENCY_PER_PROCESS = 6;

/** `npm run audit:verify -- ...`, without npm's own start-up. */
function verifier(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [TSX, VERIFY, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'silent' } });
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

/** Sends `count` audited requests tagged `${tag}-<n>`, `concurrency` at a time; returns the statuses. */
async function load(service: ListeningChildService, token: string, tag: string, count: number, concurrency: number): Promise<number[]> {
  const statuses: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const n = next++;
      const res = await request(service.url, 'GET', '/api/v1/kms/keys?projectId=default', { token, headers: { 'x-request-id': `${tag}-${n}` } });
      statuses.push(res.status);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return statuses;
}

describe('two service processes writing one audit trail', () => {
  let dataDir: string;
  let dbPath: string;
  const services: ListeningChildService[] = [];
  let events: Array<{ seq: number; req_id: string; prev_hash: string; hash: string }>;

  beforeAll(async () => {
    dataDir = newChildDataDir('hsm-signer-audit-writers-');
    dbPath = join(dataDir, 'hsm-signer.db');
    const configFile = join(dataDir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ audit: { signIntervalMs: 200 } }));
    const env = { CONFIG_FILE: configFile, RATE_LIMIT_PER_SECOND: '0' };
    // One after the other: the first start initialises the token and writes the admin identity.
    services.push(await startChildService(dataDir, env));
    services.push(await startChildService(dataDir, env));
  }, 120_000);

  afterAll(async () => {
    await Promise.all(services.map((service) => service.kill()));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('records every request of both, in one interleaved chain signed up to its last event, that audit:verify accepts', async () => {
    const [a, b] = services as [ListeningChildService, ListeningChildService];
    const [tokenA, tokenB] = await Promise.all([login(a.url, a.admin), login(b.url, b.admin)]);
    const [statusesA, statusesB] = await Promise.all([
      load(a, tokenA, 'writer-a', REQUESTS_PER_PROCESS, CONCURRENCY_PER_PROCESS),
      load(b, tokenB, 'writer-b', REQUESTS_PER_PROCESS, CONCURRENCY_PER_PROCESS),
    ]);
    expect(new Set([...statusesA, ...statusesB])).toEqual(new Set([200]));

    // Both shut down at once: each drains its writer and signs the head it then finds stored.
    a.signal('SIGTERM');
    b.signal('SIGTERM');
    const exits = await Promise.all([a.exited, b.exited]);
    expect(exits.map((exit) => exit.code), `${a.output()}\n${b.output()}`).toEqual([0, 0]);

    const db = new Database(dbPath, { readonly: true });
    events = db.prepare<[], (typeof events)[number]>('SELECT seq, req_id, prev_hash, hash FROM audit_events ORDER BY seq').all();
    const lastCheckpoint = db.prepare<[], { seq: number }>('SELECT seq FROM audit_checkpoints ORDER BY seq DESC LIMIT 1').get();
    db.close();

    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const tagged = (tag: string) => events.filter((e) => e.req_id.startsWith(`${tag}-`)).map((e) => e.req_id);
    const expected = (tag: string) => Array.from({ length: REQUESTS_PER_PROCESS }, (_, n) => `${tag}-${n}`).sort();
    expect(tagged('writer-a').sort()).toEqual(expected('writer-a'));
    expect(tagged('writer-b').sort()).toEqual(expected('writer-b'));
    // Both wrote while the other did: the chain switches writer more than once.
    const writers = events.filter((e) => e.req_id.startsWith('writer-')).map((e) => e.req_id.slice(0, 8));
    const switches = writers.filter((writer, i) => i > 0 && writer !== writers[i - 1]).length;
    expect(switches).toBeGreaterThan(1);
    expect(lastCheckpoint?.seq).toBe(events.length);

    const { status, output } = verifier('--db', dbPath);
    expect(output).toMatch(new RegExp(`^audit chain intact: ${events.length} events, \\d+ signed checkpoints, last signed at seq ${events.length} \\(.*Z\\)$`));
    expect(status).toBe(0);
  }, 120_000);

  it('audit:verify still names an event of either process edited afterwards', () => {
    expect(events?.length).toBeGreaterThan(2 * REQUESTS_PER_PROCESS);
    for (const tag of ['writer-a', 'writer-b']) {
      const victim = events.find((e) => e.req_id === `${tag}-${REQUESTS_PER_PROCESS / 2}`)!;
      const copy = join(dataDir, `tampered-${tag}.db`);
      copyFileSync(dbPath, copy);
      const db = new Database(copy);
      db.prepare(`UPDATE audit_events SET status_code = 403, outcome = 'denied' WHERE seq = ?`).run(victim.seq);
      db.close();
      const { status, output } = verifier('--db', copy);
      rmSync(copy, { force: true });
      expect(output).toMatch(new RegExp(`^audit chain broken at seq ${victim.seq} \\(id .*\\): edited: its stored hash does not match its fields$`));
      expect(status).toBe(1);
    }
  });
});
