/**
 * Several writers on one audit trail, as issue #9 runs them: two service processes (as
 * `npm start` runs them) on one data directory, so one SoftHSM2 token and one store (a SQLite
 * file there, or one PostgreSQL database named by DATABASE_URL for both), both
 * under load at once (in rounds, each ended by a read that waits for each process's writer) and
 * both signing the head every 200 ms. Every request of either process
 * is recorded exactly once, in one gap-free chain that interleaves them, the last checkpoint
 * (whichever process signed it) names the last event, `npm run audit:verify` accepts the store,
 * and it still names an event of either process edited afterwards.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newChildDataDir, ROOT, startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { login, request } from '../helpers/http.js';
import { createTestDatabase } from '../helpers/postgres.js';

const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const VERIFY = join(ROOT, 'scripts', 'verify-audit.ts');
const ROUNDS = 25;
const REQUESTS_PER_ROUND = 6;
const REQUESTS_PER_PROCESS = ROUNDS * REQUESTS_PER_ROUND;

/** `npm run audit:verify -- ...`, without npm's own start-up. */
function verifier(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [TSX, VERIFY, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'silent' } });
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

/** Sends audited requests `${tag}-<first>` .. `${tag}-<first + count - 1>` all at once; returns the statuses. */
async function burst(service: ListeningChildService, token: string, tag: string, first: number, count: number): Promise<number[]> {
  const sent = Array.from({ length: count }, (_, i) =>
    request(service.url, 'GET', '/api/v1/kms/keys?projectId=default', { token, headers: { 'x-request-id': `${tag}-${first + i}` } }),
  );
  return (await Promise.all(sent)).map((res) => res.status);
}

type EventRow = { seq: number; req_id: string };

/** A PostgreSQL query on a connection of its own (the services' pools are theirs). */
async function pgQuery<T>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text, values)).rows as T[];
  } finally {
    await client.end();
  }
}

describe.each(['sqlite', 'postgres'] as const)('two service processes writing one audit trail (%s)', (engine) => {
  let dataDir: string;
  let dbPath: string;
  let url: string;
  const services: ListeningChildService[] = [];
  let events: EventRow[];
  /** audit:verify's arguments for the store (DATABASE_URL in its environment does as well). */
  const storeArgs = () => (engine === 'sqlite' ? ['--db', dbPath] : ['--url', url]);

  beforeAll(async () => {
    dataDir = newChildDataDir('hsm-signer-audit-writers-');
    dbPath = join(dataDir, 'hsm-signer.db');
    if (engine === 'postgres') url = await createTestDatabase();
    const configFile = join(dataDir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ audit: { signIntervalMs: 200 } }));
    const env = { CONFIG_FILE: configFile, RATE_LIMIT_PER_SECOND: '0', ...(engine === 'postgres' ? { DATABASE_URL: url } : {}) };
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
    const statuses: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Both processes answer (and their writers append) at the same time...
      const first = round * REQUESTS_PER_ROUND;
      const [fromA, fromB] = await Promise.all([burst(a, tokenA, 'writer-a', first, REQUESTS_PER_ROUND), burst(b, tokenB, 'writer-b', first, REQUESTS_PER_ROUND)]);
      // ...and a read on each waits for its writer, so this round is stored before the next one starts.
      const reads = await Promise.all([a, b].map((service, i) => request(service.url, 'GET', '/api/v1/audit-logs?limit=1', { token: [tokenA, tokenB][i]!, headers: { 'x-request-id': `read-${round}` } })));
      statuses.push(...fromA, ...fromB, ...reads.map((res) => res.status));
    }
    expect(new Set(statuses)).toEqual(new Set([200]));

    // Both shut down at once: each drains its writer and signs the head it then finds stored.
    a.signal('SIGTERM');
    b.signal('SIGTERM');
    const exits = await Promise.all([a.exited, b.exited]);
    expect(exits.map((exit) => exit.code), `${a.output()}\n${b.output()}`).toEqual([0, 0]);

    let lastCheckpoint: { seq: number } | undefined;
    if (engine === 'sqlite') {
      const db = new Database(dbPath, { readonly: true });
      events = db.prepare<[], EventRow>('SELECT seq, req_id FROM audit_events ORDER BY seq').all();
      lastCheckpoint = db.prepare<[], { seq: number }>('SELECT seq FROM audit_checkpoints ORDER BY seq DESC LIMIT 1').get();
      db.close();
    } else {
      events = (await pgQuery<EventRow>(url, 'SELECT seq::int AS seq, req_id FROM audit_events ORDER BY seq'));
      [lastCheckpoint] = await pgQuery<{ seq: number }>(url, 'SELECT seq::int AS seq FROM audit_checkpoints ORDER BY seq DESC LIMIT 1');
    }

    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const tagged = (tag: string) => events.filter((e) => e.req_id.startsWith(`${tag}-`)).map((e) => e.req_id);
    const expected = (tag: string) => Array.from({ length: REQUESTS_PER_PROCESS }, (_, n) => `${tag}-${n}`).sort();
    expect(tagged('writer-a').sort()).toEqual(expected('writer-a'));
    expect(tagged('writer-b').sort()).toEqual(expected('writer-b'));
    // Every round holds events of both, stored before the next round's: at least one switch of writer per round.
    const writers = events.filter((e) => e.req_id.startsWith('writer-')).map((e) => e.req_id.slice(0, 8));
    const switches = writers.filter((writer, i) => i > 0 && writer !== writers[i - 1]).length;
    expect(switches).toBeGreaterThanOrEqual(ROUNDS);
    expect(lastCheckpoint?.seq).toBe(events.length);

    const { status, output } = verifier(...storeArgs());
    expect(output).toMatch(new RegExp(`^audit chain intact: ${events.length} events, \\d+ signed checkpoints, last signed at seq ${events.length} \\(.*Z\\)$`));
    expect(status).toBe(0);
  }, 120_000);

  it('audit:verify still names an event of either process edited afterwards', async () => {
    expect(events?.length).toBeGreaterThan(2 * REQUESTS_PER_PROCESS);
    for (const tag of ['writer-a', 'writer-b']) {
      const victim = events.find((e) => e.req_id === `${tag}-${REQUESTS_PER_PROCESS / 2}`)!;
      const tamper = `UPDATE audit_events SET status_code = 403 WHERE seq = `;
      let result: { status: number | null; output: string };
      if (engine === 'sqlite') {
        const copy = join(dataDir, `tampered-${tag}.db`);
        copyFileSync(dbPath, copy);
        const db = new Database(copy);
        db.prepare(`${tamper}?`).run(victim.seq);
        db.close();
        result = verifier('--db', copy);
        rmSync(copy, { force: true });
      } else {
        // Edited in place, and put back after, so the other process's event is checked on an intact chain otherwise.
        const [original] = await pgQuery<{ status_code: number }>(url, 'SELECT status_code FROM audit_events WHERE seq = $1', [victim.seq]);
        await pgQuery(url, `${tamper}$1`, [victim.seq]);
        result = verifier('--url', url);
        await pgQuery(url, 'UPDATE audit_events SET status_code = $1 WHERE seq = $2', [original!.status_code, victim.seq]);
      }
      const { status, output } = result;
      expect(output).toMatch(new RegExp(`^audit chain broken at seq ${victim.seq} \\(time .*\\): edited: its stored hash does not match its fields$`));
      expect(status).toBe(1);
    }
  });
});
