/**
 * vitest globalSetup: a throwaway PostgreSQL cluster for the tests that need one (initdb into
 * a temporary directory, trust authentication, listening on 127.0.0.1 at a free port), stopped
 * and removed at the end of the run. Test files get fresh databases on it through
 * helpers/postgres.ts createTestDatabase. Root cannot run PostgreSQL: as root, the cluster runs
 * as the `postgres` user that Debian's package makes.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the cluster's `postgres` database (create and drop test databases through it). */
    postgresAdminUrl: string;
  }
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
  const found = versions.map((v) => join(root, v, 'bin')).find((dir) => existsSync(join(dir, 'initdb')));
  if (!found) throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql');
  return found;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const bin = binDir();
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-pg-'));
  // As root, both programs run as `postgres` through spawn's uid/gid (not runuser, which would
  // stand between this process and the server and not pass the stop signal on).
  let user: { uid?: number; gid?: number } = {};
  if (process.getuid?.() === 0) {
    const [uid, gid] = [Number(execFileSync('id', ['-u', 'postgres']).toString()), Number(execFileSync('id', ['-g', 'postgres']).toString())];
    chownSync(dir, uid, gid);
    user = { uid, gid };
  }
  const data = join(dir, 'data');
  execFileSync(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8'], { stdio: 'ignore', cwd: dir, ...user });
  const port = await freePort();
  // fsync off: a throwaway cluster need not survive a power cut, and the tests run faster.
  const server: ChildProcess = spawn(
    join(bin, 'postgres'),
    ['-D', data, '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-p', String(port), '-c', 'fsync=off', '-c', 'max_connections=300'],
    { stdio: 'ignore', cwd: dir, ...user },
  );
  const adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const client = new pg.Client({ connectionString: adminUrl });
    try {
      await client.connect();
      await client.end();
      break;
    } catch (error) {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline || server.exitCode !== null) {
        server.kill('SIGINT');
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`the test PostgreSQL did not start: ${(error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  project.provide('postgresAdminUrl', adminUrl);
  return async () => {
    // SIGINT: PostgreSQL's fast shutdown (ends sessions, no waiting for clients).
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGINT');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    rmSync(dir, { recursive: true, force: true });
  };
}
