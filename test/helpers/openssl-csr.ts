/** CSRs made by OpenSSL itself, an independent producer, for the CSR parser's tests. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/**
 * A maker of PEM CSRs in a temporary directory of the calling test file (removed after it):
 * `openssl genpkey <keyArgs>`, then `openssl req -new <extraArgs>` with that key.
 */
export function opensslCsrMaker(prefix: string): (name: string, keyArgs: string[], extraArgs?: string[]) => string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return (name, keyArgs, extraArgs = []) => {
    const key = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    execFileSync('openssl', ['genpkey', ...keyArgs, '-out', key], { stdio: 'ignore' });
    execFileSync('openssl', ['req', '-new', '-key', key, '-out', csr, ...extraArgs], { stdio: 'ignore' });
    return readFileSync(csr, 'utf8');
  };
}
