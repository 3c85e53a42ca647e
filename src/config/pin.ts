/**
 * Where the token's user PIN comes from: `hsm.pinSource` ("env:NAME" or "file:/path"), else
 * the HSM_PIN environment variable, else (embedded SoftHSM2 only) DATA_DIR/softhsm/user-pin,
 * generated once at first start with mode 0600. The PIN is never written to config, logs or
 * errors.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from './schema.js';

export const embeddedTokenDir = (config: Config) => join(config.dataDir, 'softhsm');

/**
 * Writes a secret file readable by its owner only, unless it already exists. Safe when several
 * processes start at once on one DATA_DIR: the value is written whole to a file of this
 * process's own and then hard-linked into place, which fails if the name exists, so every
 * process ends up reading the one value that won, and never a half-written file.
 */
export function writeSecretFileOnce(path: string, value: string): void {
  if (existsSync(path)) return;
  const draft = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(draft, value, { mode: 0o600, flag: 'wx' });
  chmodSync(draft, 0o600);
  try {
    linkSync(draft, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    rmSync(draft, { force: true });
  }
}

function readSecretFile(path: string, what: string): string {
  let value: string;
  try {
    value = readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new Error(`Cannot read the ${what} from ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (!value) throw new Error(`The ${what} file ${path} is empty`);
  return value;
}

/**
 * Returns a reader for the user PIN (the pool calls it again to log in after a token failure).
 * For the embedded token, creates the PIN files on first start.
 */
export function pinReader(config: Config, env: NodeJS.ProcessEnv = process.env): () => string {
  const source = config.hsm.pinSource ?? (env.HSM_PIN ? 'env:HSM_PIN' : undefined);
  if (source?.startsWith('env:')) {
    const name = source.slice('env:'.length);
    const value = env[name];
    if (!value) throw new Error(`The HSM user PIN variable ${name} is not set`);
    return () => value;
  }
  if (source?.startsWith('file:')) {
    const path = source.slice('file:'.length);
    return () => readSecretFile(path, 'HSM user PIN');
  }
  if (!config.hsm.embedded) throw new Error('No HSM user PIN: set HSM_PIN or hsm.pinSource (env:NAME or file:/path)');
  const path = join(embeddedTokenDir(config), 'user-pin');
  mkdirSync(embeddedTokenDir(config), { recursive: true, mode: 0o700 });
  writeSecretFileOnce(path, randomBytes(16).toString('hex'));
  return () => readSecretFile(path, 'HSM user PIN');
}
