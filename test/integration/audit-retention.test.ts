/**
 * The audit trail kept bounded and exported, end to end, as operators run it: two service
 * processes (`npm start`'s entry) on one data directory and one store (SQLite there, or one
 * PostgreSQL database), both writing the chain under load, both configured with a small
 * audit.maxEvents and the same file sink. Pruning (by whichever process holds the maintenance
 * lease) keeps the store bounded and `npm run audit:verify` green, saying where the kept trail
 * starts and why; the sink holds every event once, in chain order, across a logrotate-style
 * rename and SIGHUP, and `audit:verify --file` accepts the rotated files on their own and names
 * an edited line. Then one process with audit.sinkFailure = block: when its sink cannot write,
 * audited requests are refused with 503 (probes are not), and they are served again once it can.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newChildDataDir, ROOT, startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { login, request } from '../helpers/http.js';
import { parseMetrics } from '../helpers/metrics.js';
import { createTestDatabase, psql } from '../helpers/postgres.js';

const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const VERIFY = join(ROOT, 'scripts', 'verify-audit.ts');
const MAX_EVENTS = 80;
const ROUNDS = 12;
const PER_ROUND = 20;

function verifier(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [TSX, VERIFY, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'silent' } });
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function metrics(service: ListeningChildService): Promise<Map<string, number>> {
  return parseMetrics(await (await fetch(`${service.url}/metrics`)).text());
}

/** Audited requests `${tag}-<first>`..: key listings, one event each. */
async function burst(service: ListeningChildService, token: string, tag: string, first: number, count: number): Promise<number[]> {
  const sent = Array.from({ length: count }, (_, i) => request(service.url, 'GET', '/api/v1/kms/keys?projectId=default', { token, headers: { 'x-request-id': `${tag}-${first + i}` } }));
  return (await Promise.all(sent)).map((res) => res.status);
}

/** The event lines of the export files, in file order. */
function exportedEvents(files: string[]): Array<{ seq: number; reqId: string }> {
  return files.flatMap((file) =>
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => line.includes('"hsm-signer.audit.event"'))
      .map((line) => JSON.parse(line) as { seq: number; reqId: string }),
  );
}

describe.each(['sqlite', 'postgres'] as const)('retention and export with two processes writing the trail (%s)', (engine) => {
  let dataDir: string;
  let sinkDir: string;
  let url: string;
  const services: ListeningChildService[] = [];
  const storeArgs = () => (engine === 'sqlite' ? ['--db', join(dataDir, 'hsm-signer.db')] : ['--url', url]);
  const query = (text: string): number[] =>
    engine === 'sqlite'
      ? (() => {
          const db = new Database(join(dataDir, 'hsm-signer.db'), { readonly: true });
          try {
            return Object.values(db.prepare(text).get() as object).map(Number);
          } finally {
            db.close();
          }
        })()
      : psql(url, text).split('|').map(Number);

  beforeAll(async () => {
    dataDir = newChildDataDir('hsm-signer-audit-retention-');
    sinkDir = join(dataDir, 'sink');
    if (engine === 'postgres') url = await createTestDatabase();
    const configFile = join(dataDir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ audit: { signIntervalMs: 200, sinkIntervalMs: 100, pruneIntervalMs: 300, maxEvents: MAX_EVENTS } }));
    const env = { CONFIG_FILE: configFile, RATE_LIMIT_PER_SECOND: '0', AUDIT_SINK: `file:${join(sinkDir, 'audit.jsonl')}`, ...(engine === 'postgres' ? { DATABASE_URL: url } : {}) };
    services.push(await startChildService(dataDir, env));
    services.push(await startChildService(dataDir, env));
  }, 120_000);

  afterAll(async () => {
    await Promise.all(services.map((service) => service.kill()));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps the store bounded and verifiable while both write, and exports every event once, in order, through a rotation', async () => {
    const [a, b] = services as [ListeningChildService, ListeningChildService];
    const [tokenA, tokenB] = await Promise.all([login(a.url, a.admin), login(b.url, b.admin)]);
    const statuses: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      if (round === ROUNDS / 2) {
        // logrotate: move the file away, then SIGHUP; the feeder starts a new file at its next write.
        await until('the sink file', () => existsSync(join(sinkDir, 'audit.jsonl')));
        renameSync(join(sinkDir, 'audit.jsonl'), join(sinkDir, 'audit.jsonl.1'));
        a.signal('SIGHUP');
        b.signal('SIGHUP');
      }
      const [fromA, fromB] = await Promise.all([burst(a, tokenA, 'ret-a', round * PER_ROUND, PER_ROUND), burst(b, tokenB, 'ret-b', round * PER_ROUND, PER_ROUND)]);
      statuses.push(...fromA, ...fromB);
      await sleep(150);
    }
    expect(new Set(statuses)).toEqual(new Set([200]));

    // One of them holds the maintenance lease: it prunes and feeds the sink; the other reports 0.
    const leader = await until('a prune round', async () => {
      for (const service of [a, b]) if (((await metrics(service)).get('hsm_signer_audit_events_pruned_total') ?? 0) > 0) return service;
      return undefined;
    });
    const other = leader === a ? b : a;
    const leaderMetrics = await metrics(leader);
    expect(leaderMetrics.get('hsm_signer_maintenance_leader')).toBe(1);
    expect(leaderMetrics.get('hsm_signer_audit_store_events')).toBeGreaterThan(0);
    expect(leaderMetrics.get('hsm_signer_audit_sink_failures_total')).toBe(0);
    expect((await metrics(other)).get('hsm_signer_audit_events_pruned_total')).toBe(0);
    const written = (await metrics(a)).get('hsm_signer_audit_events_written_total')! + (await metrics(b)).get('hsm_signer_audit_events_written_total')!;
    expect(written).toBeGreaterThanOrEqual(2 * ROUNDS * PER_ROUND);

    // Stopping: the other first, so the lease holder exports everything, the last checkpoint included.
    other.signal('SIGTERM');
    expect((await other.exited).code, other.output()).toBe(0);
    leader.signal('SIGTERM');
    expect((await leader.exited).code, leader.output()).toBe(0);
    expect(leader.output()).toContain('pruned audit events past the retention');

    const [first, last, kept] = query('SELECT min(seq) AS first, max(seq) AS last, count(*) AS kept FROM audit_events');
    expect(first).toBeGreaterThan(1);
    // Bounded: maxEvents plus what came after the last prune round (at most a round's worth here).
    expect(kept).toBeLessThan(last! / 2);
    expect(kept).toBe(last! - first! + 1);

    const store = verifier(...storeArgs());
    const explained = new RegExp(
      `^audit chain intact: ${kept} events, \\d+ signed checkpoints, last signed at seq ${last} \\(.*\\); kept from seq ${first}: the events before it were pruned by retention \\(the last audit\\.prune event, seq \\d+ at .*, pruned seq \\d+–(\\d+)\\), its first event linked to the checkpoint of seq ${first! - 1}$`,
    ).exec(store.output);
    expect(explained, store.output).not.toBeNull();
    // The last announced range reaches at least the kept start; further when the leader's stop
    // came between announcing a round and pruning all of it (the next round takes the rest).
    expect(Number(explained![1])).toBeGreaterThanOrEqual(first! - 1);
    expect(store.status).toBe(0);

    // The export: every event from seq 1 on, once, over the rotated file and the new one.
    const files = [join(sinkDir, 'audit.jsonl.1'), join(sinkDir, 'audit.jsonl')];
    const exported = exportedEvents(files);
    expect(exported.map((e) => e.seq)).toEqual(Array.from({ length: last! }, (_, i) => i + 1));
    for (const tag of ['ret-a', 'ret-b']) {
      const ids = exported.filter((e) => e.reqId.startsWith(`${tag}-`)).map((e) => e.reqId);
      expect(ids.sort()).toEqual(Array.from({ length: ROUNDS * PER_ROUND }, (_, n) => `${tag}-${n}`).sort());
    }
    const whole = verifier('--file', sinkDir);
    expect(whole.output).toMatch(new RegExp(`^audit export \\(2 files\\) intact: ${last} events, \\d+ signed checkpoints, last signed at seq ${last} \\(.*Z\\)$`));
    expect(whole.status).toBe(0);
    const newest = verifier('--file', join(sinkDir, 'audit.jsonl'));
    expect(newest.output).toMatch(/^audit export \(1 file\) intact: \d+ events, .*; starts at seq \d+ \(the events before it are not in what was read\)/);
    expect(newest.status).toBe(0);

    // An export edited after the fact is named, seq and kind.
    const copy = join(dataDir, 'sink-copy');
    cpSync(sinkDir, copy, { recursive: true });
    const victim = exported.find((e) => e.reqId === 'ret-b-5')!;
    const rotated = join(copy, 'audit.jsonl.1');
    writeFileSync(rotated, readFileSync(rotated, 'utf8').replace(/("reqId":"ret-b-5".*?"statusCode":)200/, '$1403'));
    const tampered = verifier('--file', copy);
    expect(tampered.output).toMatch(new RegExp(`^audit export \\(2 files\\) broken at seq ${victim.seq} \\(time .*\\): edited: its stored hash does not match its fields$`));
    expect(tampered.status).toBe(1);
  }, 120_000);
});

describe('a sink that cannot write, with audit.sinkFailure = block', () => {
  let dataDir: string;
  let service: ListeningChildService;
  const sinkPath = () => join(dataDir, 'sink', 'audit.jsonl');

  beforeAll(async () => {
    dataDir = newChildDataDir('hsm-signer-audit-block-');
    const configFile = join(dataDir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ audit: { signIntervalMs: 200, sinkIntervalMs: 100 } }));
    service = await startChildService(dataDir, { CONFIG_FILE: configFile, AUDIT_SINK: `file:${join(dataDir, 'sink', 'audit.jsonl')}`, AUDIT_SINK_FAILURE: 'block' });
  }, 60_000);

  afterAll(async () => {
    await service?.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('refuses audited requests with 503 while the sink fails, serves probes, and serves again once it writes', async () => {
    const token = await login(service.url, service.admin);
    const list = () => request(service.url, 'GET', '/api/v1/kms/keys?projectId=default', { token });
    expect((await list()).status).toBe(200);
    await until('the sink file', () => existsSync(sinkPath()));

    // The file's place taken by a directory: the reopen after SIGHUP fails (EISDIR).
    renameSync(sinkPath(), `${sinkPath()}.1`);
    mkdirSync(sinkPath());
    service.signal('SIGHUP');
    expect((await list()).status).toBe(200); // an event for the feeder to fail on
    const refused = await until('a refusal', async () => {
      const res = await list();
      return res.status === 503 ? res : undefined;
    });
    expectSpecEnvelope(refused);
    expect(refused.body).toMatchObject({ error: 'ServiceUnavailable', message: expect.stringContaining('audit sink') });
    expect((await request(service.url, 'GET', '/healthz')).status).toBe(200);
    const failing = await metrics(service);
    expect(failing.get('hsm_signer_audit_sink_failures_total')).toBeGreaterThan(0);
    expect(failing.get('hsm_signer_audit_sink_lag_events')).toBeGreaterThan(0);
    expect(service.output()).toContain('the audit sink cannot write; the events stay in the store until it can');

    rmSync(sinkPath(), { recursive: true });
    await until('requests served again', async () => ((await list()).status === 200 ? true : undefined));
    expect(service.output()).toContain('the audit sink writes again');

    service.signal('SIGTERM');
    expect((await service.exited).code, service.output()).toBe(0);
    // Nothing was lost meanwhile: the refusals too are in the export, which verifies whole.
    const exported = exportedEvents([`${sinkPath()}.1`, sinkPath()]);
    expect(exported.map((e) => e.seq)).toEqual(exported.map((_, i) => i + 1));
    const { status, output } = verifier('--file', join(dataDir, 'sink'));
    expect(output).toMatch(/^audit export \(2 files\) intact: /);
    expect(status).toBe(0);
  }, 60_000);
});
