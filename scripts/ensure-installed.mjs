#!/usr/bin/env node
// Installs what `npm start` and `npm test` need and a fresh machine lacks: the npm packages
// (when node_modules is missing or older than package-lock.json) and Debian's softhsm2
// (plus openssl; for the tests also gnutls-bin for certificates and OCSP, curl for EST, certbot and lego for ACME, prometheus for promtool, gcc
// for the fault-injecting PKCS#11 module and postgresql for the store tests on PostgreSQL; for the benchmark golang-cfssl, the peer it
// measures in the same run) when running as root or with passwordless sudo. Otherwise it says exactly what to install. Node built-ins only: it runs
// before node_modules exists.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const forTests = process.argv.includes('--test');
const forBench = process.argv.includes('--bench');

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, ...options });
  if (result.status !== 0) {
    console.error(`ensure-installed: "${command} ${args.join(' ')}" failed (exit ${result.status ?? result.signal})`);
    process.exit(1);
  }
}

// 1. npm packages.
const marker = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');
if (!existsSync(marker) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(marker).mtimeMs)) {
  console.error('ensure-installed: installing npm packages');
  run('npm', existsSync(lock) ? ['ci', '--no-audit', '--no-fund'] : ['install', '--no-audit', '--no-fund']);
}

// 2. Debian packages.
const wanted = [
  { pkg: 'softhsm2', present: () => ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].some(existsSync) },
  { pkg: 'openssl', present: () => onPath('openssl') },
  ...(forTests
    ? [
        // certtool checks certificates; ocsptool is the second OCSP client of the OCSP tests.
        { pkg: 'gnutls-bin', present: () => onPath('certtool') && onPath('ocsptool') },
        // The EST tests speak to the service with curl, as the README's examples do.
        { pkg: 'curl', present: () => onPath('curl') },
        // The syslog audit sink hands its lines to util-linux's logger (Essential on Debian; named for other bases).
        { pkg: 'bsdutils', present: () => onPath('logger') },
        { pkg: 'prometheus', present: () => onPath('promtool') },
        { pkg: 'gcc', present: () => onPath('gcc') },
        { pkg: 'libc6-dev', present: () => existsSync('/usr/include/dlfcn.h') },
        // The ACME tests obtain, renew and revoke certificates with the two common ACME clients.
        { pkg: 'certbot', present: () => onPath('certbot') },
        { pkg: 'lego', present: () => onPath('lego') },
        // The store tests run on PostgreSQL too, in a throwaway cluster (test/helpers/postgres-cluster.ts).
        { pkg: 'postgresql', present: () => existsSync('/usr/lib/postgresql') && readdirSync('/usr/lib/postgresql').some((v) => existsSync(join('/usr/lib/postgresql', v, 'bin', 'initdb'))) && onPath('psql') },
      ]
    : []),
  ...(forBench ? [{ pkg: 'golang-cfssl', present: () => onPath('cfssl') }] : []),
];

function onPath(binary) {
  return spawnSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' }).status === 0;
}

const missing = wanted.filter((w) => !w.present()).map((w) => w.pkg);
if (missing.length > 0) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const sudo = !isRoot && onPath('sudo') && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0;
  if (!isRoot && !sudo) {
    console.error(`ensure-installed: missing Debian packages: ${missing.join(' ')}.\nInstall them with:\n  sudo apt-get update && sudo apt-get install -y ${missing.join(' ')}`);
    process.exit(1);
  }
  const prefix = isRoot ? [] : ['sudo', '-n'];
  const apt = (args) => run(prefix[0] ?? 'apt-get', prefix.length ? [...prefix.slice(1), 'apt-get', ...args] : args, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  console.error(`ensure-installed: installing Debian packages: ${missing.join(' ')}`);
  apt(['update', '-qq']);
  apt(['install', '-y', '-qq', '--no-install-recommends', ...missing]);
}

try {
  execFileSync('node', ['-e', "require('pkcs11js'); require('better-sqlite3')"], { cwd: root, stdio: 'pipe' });
} catch {
  console.error('ensure-installed: the native modules did not load; rebuilding them');
  run('npm', ['rebuild', 'pkcs11js', 'better-sqlite3']);
}
