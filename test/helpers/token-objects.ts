/** Reads the objects of a test service's token through PKCS#11, from a separate process. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestService } from './service.js';

export interface TokenObject {
  class: 'private' | 'public' | 'secret' | 'other';
  id: string;
  label: string;
  token: boolean;
  /** CKA_KEY_TYPE (CKK_*), for key objects. */
  keyType?: number;
  sensitive?: boolean;
  extractable?: boolean;
  private?: boolean;
  neverExtractable?: boolean;
  alwaysSensitive?: boolean;
  valueReadable?: boolean;
}

const SCRIPT = fileURLToPath(new URL('./inspect-token.mjs', import.meta.url));

export function tokenObjects(service: Pick<TestService, 'dataDir' | 'config'>): TokenObject[] {
  const softhsm = join(service.dataDir, 'softhsm');
  const pin = readFileSync(join(softhsm, 'user-pin'), 'utf8').trim();
  const out = execFileSync(process.execPath, [SCRIPT, service.config.hsm.tokenLabel ?? 'hsm-signer', pin], {
    env: { ...process.env, SOFTHSM2_CONF: join(softhsm, 'softhsm2.conf') },
    encoding: 'utf8',
  });
  return JSON.parse(out) as TokenObject[];
}
