/**
 * Configuration: config/default.json, then config/test.json when NODE_ENV=test, then the file
 * named by CONFIG_FILE, then environment variables, then the caller's overrides; validated
 * against the schema once. PINs are not configuration: see `readPin`.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import ms from 'ms';
import { trustedProxyList } from '../http/client-address.js';
import { configSchema, type Config } from './schema.js';

export type { Config } from './schema.js';

export const CONFIG_DIR = fileURLToPath(new URL('../../config/', import.meta.url));

type Json = { [key: string]: unknown };
/** Any part of a setting's tree (nullable objects too: `server.tls` may be given in part). */
export type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;

function isPlainObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function merge(base: Json, overlay: Json): Json {
  const out: Json = { ...base };
  for (const [key, value] of Object.entries(overlay)) {
    if (value === undefined) continue;
    out[key] = isPlainObject(value) && isPlainObject(out[key]) ? merge(out[key] as Json, value) : value;
  }
  return out;
}

function readJson(path: string): Json {
  return JSON.parse(readFileSync(path, 'utf8')) as Json;
}

/** A number from the environment; what is not one is left as text for the schema to name. */
function number(value: string | undefined): number | string | undefined {
  if (value === undefined || value === '') return undefined;
  const parsed = Number(value);
  return Number.isFinite(parsed) ? parsed : value;
}

/** A comma-separated list, entries trimmed, empty ones dropped; undefined when unset or empty. */
function list(value: string | undefined): string[] | undefined {
  return value
    ? value
        .split(',')
        .map((entry) => entry.trim())
        .filter(Boolean)
    : undefined;
}

function integer(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const parsed = Number(value);
  if (!Number.isInteger(parsed)) throw new Error(`Expected an integer, got "${value}"`);
  return parsed;
}

/**
 * An RFC 7512 PKCS#11 URI, as step-ca configures its HSM:
 * `pkcs11:token=hsm-signer;serial=1234?module-path=/usr/lib/x.so&pin-source=file:/run/pin`.
 */
export function parsePkcs11Uri(uri: string): DeepPartial<Config['hsm']> {
  if (!uri.startsWith('pkcs11:')) throw new Error('HSM_URI must start with "pkcs11:"');
  const [path = '', query = ''] = uri.slice('pkcs11:'.length).split('?', 2);
  const attributes = new Map<string, string>();
  for (const part of [...path.split(';'), ...query.split('&')]) {
    if (!part) continue;
    const eq = part.indexOf('=');
    if (eq < 0) throw new Error(`HSM_URI attribute without a value: ${part}`);
    attributes.set(part.slice(0, eq), decodeURIComponent(part.slice(eq + 1)));
  }
  if (attributes.has('pin-value')) throw new Error('HSM_URI must not carry pin-value: use pin-source=file:... or HSM_PIN');
  const out: DeepPartial<Config['hsm']> = {};
  if (attributes.has('token')) out.tokenLabel = attributes.get('token');
  if (attributes.has('serial')) out.tokenSerial = attributes.get('serial');
  if (attributes.has('module-path')) {
    out.modulePath = attributes.get('module-path');
    out.embedded = false;
  }
  if (attributes.has('pin-source')) out.pinSource = attributes.get('pin-source')!.startsWith('env:') ? attributes.get('pin-source') : `file:${attributes.get('pin-source')!.replace(/^file:/, '')}`;
  return out;
}

function fromEnvironment(env: NodeJS.ProcessEnv): Json {
  const hsm: DeepPartial<Config['hsm']> = {
    ...(env.HSM_URI ? parsePkcs11Uri(env.HSM_URI) : {}),
    tokenLabel: env.HSM_TOKEN_LABEL || undefined,
    tokenSerial: env.HSM_TOKEN_SERIAL || undefined,
    pinSource: env.HSM_PIN_SOURCE || undefined,
    sessions: integer(env.HSM_SESSIONS),
    acquireTimeoutMs: integer(env.HSM_ACQUIRE_TIMEOUT_MS),
  };
  if (env.HSM_MODULE) {
    hsm.modulePath = env.HSM_MODULE;
    hsm.embedded = false;
  }
  return {
    server: {
      host: env.HOST || undefined,
      port: integer(env.PORT),
      publicBaseUrl: env.PUBLIC_BASE_URL || undefined,
      shutdownDelayMs: integer(env.SHUTDOWN_DELAY_MS),
      shutdownGraceMs: integer(env.SHUTDOWN_GRACE_MS),
      httpWorkers: env.HTTP_WORKERS === 'auto' ? 'auto' : integer(env.HTTP_WORKERS),
      opsPort: integer(env.OPS_PORT),
      trustedProxies: list(env.TRUSTED_PROXIES),
      tls:
        env.TLS_CERT_FILE || env.TLS_KEY_FILE
          ? { certFile: env.TLS_CERT_FILE, keyFile: env.TLS_KEY_FILE, clientCaFile: env.TLS_CLIENT_CA_FILE || null, requestClientCertificate: env.TLS_REQUEST_CLIENT_CERTIFICATE === 'true' }
          : undefined,
      estClientCertificateHeader: env.EST_CLIENT_CERTIFICATE_HEADER || undefined,
    },
    dataDir: env.DATA_DIR || undefined,
    database: { path: env.DATABASE_PATH || undefined, url: env.DATABASE_URL || undefined },
    hsm,
    auth: { accessTokenTTL: integer(env.ACCESS_TOKEN_TTL), accessTokenMaxTTL: integer(env.ACCESS_TOKEN_MAX_TTL) },
    rateLimit: {
      perIdentityPerSecond: number(env.RATE_LIMIT_PER_SECOND),
      perAddressPerSecond: number(env.RATE_LIMIT_PER_ADDRESS_PER_SECOND),
      perAddressBurst: integer(env.RATE_LIMIT_PER_ADDRESS_BURST),
    },
    pki: { csrThreads: integer(env.PKI_CSR_THREADS) },
    acme: {
      http01Port: integer(env.ACME_HTTP01_PORT),
      resolve: list(env.ACME_RESOLVE),
      allowPrivateAddresses: env.ACME_ALLOW_PRIVATE === undefined || env.ACME_ALLOW_PRIVATE === '' ? undefined : env.ACME_ALLOW_PRIVATE === 'true',
    },
    audit: {
      retention: env.AUDIT_RETENTION === 'off' ? null : env.AUDIT_RETENTION || undefined,
      maxEvents: env.AUDIT_MAX_EVENTS === 'off' ? null : integer(env.AUDIT_MAX_EVENTS),
      sink: env.AUDIT_SINK === 'off' ? null : env.AUDIT_SINK || undefined,
      sinkFailure: env.AUDIT_SINK_FAILURE || undefined,
    },
    logLevel: env.LOG_LEVEL || undefined,
    logSummaryIntervalMs: integer(env.LOG_SUMMARY_INTERVAL_MS),
  };
}

/** audit.retention in milliseconds (null: keep everything); loadConfig has checked it parses. */
export function retentionMs(config: Pick<Config, 'audit'>): number | null {
  if (config.audit.retention === null) return null;
  const value = ms(config.audit.retention as ms.StringValue);
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 1000) {
    throw new Error(`Invalid configuration: audit.retention "${config.audit.retention}" is not a duration of at least a second in ms notation (90d, 12h, 30m)`);
  }
  return value;
}

export function loadConfig(overrides: DeepPartial<Config> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  let raw = readJson(resolve(CONFIG_DIR, 'default.json'));
  if (env.NODE_ENV === 'test') raw = merge(raw, readJson(resolve(CONFIG_DIR, 'test.json')));
  if (env.CONFIG_FILE) raw = merge(raw, readJson(resolve(env.CONFIG_FILE)));
  raw = merge(raw, fromEnvironment(env));
  raw = merge(raw, overrides as Json);

  const validate = new Ajv({ allErrors: true, useDefaults: true }).compile<Config>(configSchema);
  if (!validate(raw)) {
    const problems = (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
    throw new Error(`Invalid configuration: ${problems}`);
  }
  const config = raw as unknown as Config;
  config.dataDir = isAbsolute(config.dataDir) ? config.dataDir : resolve(process.cwd(), config.dataDir);
  if (!config.hsm.tokenLabel && !config.hsm.tokenSerial) throw new Error('Invalid configuration: hsm.tokenLabel or hsm.tokenSerial is required');
  // Parsed here too (the HTTP layer parses it again to use it) so a bad entry stops the start
  // with its name, before anything is opened.
  trustedProxyList(config.server.trustedProxies);
  for (const entry of config.acme.resolve) {
    const address = entry.slice(entry.indexOf(':') + 1);
    if (isIP(address) === 0) throw new Error(`Invalid configuration: acme.resolve entry "${entry}" is not name:address with an IP address`);
  }
  retentionMs(config);
  if (config.auth.accessTokenMaxTTL < config.auth.accessTokenTTL) throw new Error('Invalid configuration: auth.accessTokenMaxTTL is shorter than auth.accessTokenTTL');
  return config;
}
