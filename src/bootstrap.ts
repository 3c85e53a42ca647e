/**
 * First start of the embedded default: a SoftHSM2 configuration and token under
 * DATA_DIR/softhsm, and an admin machine identity whose credentials are written to
 * DATA_DIR/admin-credentials.json (mode 0600). Every step is idempotent: a second start
 * reuses what the first made.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { embeddedTokenDir, writeSecretFileOnce } from './config/pin.js';
import type { Config } from './config/schema.js';
import type { CertificatePolicy } from './pki/policy.js';
import type { CaService } from './services/ca-service.js';
import type { CertificateService } from './services/certificate-service.js';
import type { IdentityService } from './services/identity-service.js';
import type { IdentityStore } from './store/identity-store.js';

export const DEFAULT_PROJECT_ID = 'default';

/** Held while the embedded token is looked for and, on first start, created (file-lock.ts). */
export const embeddedTokenLockPath = (config: Config) => join(config.dataDir, 'softhsm.lock');

/** Points SoftHSM2 at DATA_DIR/softhsm; must run before the module is initialized. */
export function prepareEmbeddedSoftHsm(config: Config): { soPin: string } {
  const dir = embeddedTokenDir(config);
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  const wanted = `# Written by hsm-signer for its embedded token.\ndirectories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`;
  if (!existsSync(conf) || readFileSync(conf, 'utf8') !== wanted) writeFileSync(conf, wanted, { mode: 0o600 });
  process.env.SOFTHSM2_CONF = conf;
  // The SO PIN is needed only to create the token; kept (0600) so an operator can reset the user PIN.
  const soPinPath = join(dir, 'so-pin');
  writeSecretFileOnce(soPinPath, randomBytes(16).toString('hex'));
  return { soPin: readFileSync(soPinPath, 'utf8').trim() };
}

export const adminCredentialsPath = (config: Config) => join(config.dataDir, 'admin-credentials.json');

/**
 * The demo PKI of the first start: a TLS server profile under an intermediate, admitting what a
 * TLS server certificate needs (README, "First start", lists it rule by rule).
 */
const DEMO_TLS_POLICY: CertificatePolicy = {
  subject: [
    { type: 'CN', allowed: ['**'] },
    { type: 'O', allowed: ['**'] },
    { type: 'OU', allowed: ['**'] },
    { type: 'C', allowed: ['**'] },
    { type: 'ST', allowed: ['**'] },
    { type: 'L', allowed: ['**'] },
  ],
  sans: { dns: ['**'], ip: ['0.0.0.0/0', '::/0'] },
  keyUsages: { allowed: ['keyEncipherment'], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: ['clientAuth'], always: ['serverAuth'] },
  keyAlgorithms: ['RSA_2048', 'RSA_3072', 'RSA_4096', 'EC_prime256v1', 'EC_secp384r1', 'ED25519'],
  maxValidity: '397d',
  allowCa: false,
};

async function createDemoPki(cas: CaService, certificates: CertificateService): Promise<{ caId: string; profileId: string }> {
  const root = await cas.create('bootstrap', { projectId: DEFAULT_PROJECT_ID, type: 'root', commonName: 'hsm-signer demo root CA', organization: 'hsm-signer demo', keyAlgorithm: 'EC_prime256v1', ttl: '10y', maxPathLength: 1 });
  const intermediate = await cas.create('bootstrap', {
    projectId: DEFAULT_PROJECT_ID,
    type: 'intermediate',
    commonName: 'hsm-signer demo intermediate CA',
    organization: 'hsm-signer demo',
    keyAlgorithm: 'EC_prime256v1',
    ttl: '5y',
    parentCaId: root.id,
  });
  const profile = await certificates.createProfile('bootstrap', {
    projectId: DEFAULT_PROJECT_ID,
    caId: intermediate.id,
    slug: 'tls-server',
    description: 'Demo TLS server profile made at first start',
    policy: DEMO_TLS_POLICY,
    defaults: { ttl: '90d' },
    // certbot and lego work against it with one command (README, "ACME").
    acme: { enabled: true, requireEab: false },
  });
  return { caId: intermediate.id, profileId: profile.id };
}

/**
 * First start: creates the admin identity (when the store has none) and, for the embedded
 * default, a demo root CA, an intermediate and a `tls-server` profile; writes the admin's
 * credentials with the profile and CA ids. Returns the path written, or undefined when an
 * identity already existed.
 */
export async function ensureAdminIdentity(
  config: Config,
  identities: IdentityService,
  store: Pick<IdentityStore, 'list'>,
  pki: { cas: CaService; certificates: CertificateService },
): Promise<string | undefined> {
  if ((await store.list()).length > 0) return undefined;
  // Every action on every project: the admin makes the project-scoped identities others use.
  const identity = await identities.createIdentity('bootstrap', 'admin', [{ projectId: '*', actions: ['*'] }]);
  const { clientSecret } = await identities.createClientSecret('bootstrap', identity.id, 'created at first start');
  const demo = config.hsm.embedded ? await createDemoPki(pki.cas, pki.certificates) : undefined;
  const path = adminCredentialsPath(config);
  mkdirSync(config.dataDir, { recursive: true });
  writeFileSync(path, `${JSON.stringify({ clientId: identity.clientId, clientSecret, projectId: DEFAULT_PROJECT_ID, ...demo }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}
