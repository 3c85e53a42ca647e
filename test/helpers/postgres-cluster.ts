/**
 * A throwaway PostgreSQL cluster for one test run: initdb in a temporary directory, postgres
 * on a free loopback port with trust authentication (it accepts only 127.0.0.1, and lives as
 * long as the run), stopped and removed at the end. Debian's `postgresql` package provides the
 * binaries (scripts/ensure-installed.mjs --test installs it). PostgreSQL refuses to run as
 * root, so as root the cluster runs as the `postgres` user the package creates.
 *
 * Durability is switched off (fsync, synchronous_commit, full_page_writes): the data is thrown
 * away at the end, and the suite measures behaviour, not the disk.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PostgresCluster {
  /** postgres://postgres@127.0.0.1:PORT/postgres: the superuser's URL, to create databases with. */
  adminUrl: string;
  stop(): Promise<void>;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : [];
  if (versions.length === 0) throw new Error('PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `node scripts/ensure-installed.mjs --test`');
  versions.sort((a, b) => Number(b) - Number(a));
  return join(root, versions[0]!, 'bin');
}

/** As root, the uid/gid of the `postgres` user to run the cluster as; otherwise this process's own. */
function clusterOwner(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function startPostgresCluster(): Promise<PostgresCluster> {
  const bin = binDir();
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-pg-'));
  const dataDir = join(dir, 'data');
  const owner = clusterOwner();
  if (owner.uid !== undefined) chownSync(dir, owner.uid, owner.gid!);
  execFileSync(join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C'], { stdio: 'pipe', ...owner, cwd: dir });

  // A free port can be taken between the probe and postgres binding it: try a few.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn(join(bin, 'postgres'), [
      '-D', dataDir, '-k', dir, '-p', String(port),
      '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
      '-c', 'max_connections=300', '-c', 'shared_buffers=64MB',
    ], { stdio: ['ignore', 'ignore', 'pipe'], ...owner, cwd: dir });
    let log = '';
    child.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const ready = await waitReady(child, () => log, port);
    if (ready === 'ready') {
      return {
        adminUrl: `postgres://postgres@127.0.0.1:${port}/postgres`,
        async stop() {
          await stopChild(child);
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    await stopChild(child);
    if (attempt === 3) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`PostgreSQL did not start:\n${log}`);
    }
  }
}

async function waitReady(child: ChildProcess, log: () => string, port: number): Promise<'ready' | 'failed'> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return 'failed';
    if (log().includes('database system is ready to accept connections')) return 'ready';
    if (/could not bind|Address already in use/.test(log())) return 'failed';
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`PostgreSQL on port ${port} was not ready after 30 s:\n${log()}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // SIGINT: PostgreSQL's fast shutdown (ends sessions, no waiting for clients to leave).
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}
