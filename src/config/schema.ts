/**
 * The configuration's JSON Schema: its descriptions are the reference for every setting
 * (README.md's table is made from the same words). Validated once at start; secrets are
 * never part of it (PINs come from the environment or a file, see `hsm.pinSource`).
 */
export const configSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['server', 'dataDir', 'database', 'hsm', 'auth', 'logLevel'],
  properties: {
    server: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port', 'bodyLimitBytes'],
      properties: {
        host: { type: 'string', description: 'Address to listen on (env HOST).' },
        port: { type: 'integer', minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one (env PORT).' },
        publicBaseUrl: { type: ['string', 'null'], description: 'Base URL relying parties reach the service at, for URLs put in certificates (env PUBLIC_BASE_URL); default http://HOST:PORT.' },
        bodyLimitBytes: { type: 'integer', minimum: 1024, description: 'Largest JSON request body accepted.' },
      },
    },
    dataDir: { type: 'string', description: 'Where the embedded token, the SQLite database and the admin credentials live (env DATA_DIR).' },
    database: {
      type: 'object',
      additionalProperties: false,
      properties: {
        path: { type: ['string', 'null'], description: 'SQLite file (env DATABASE_PATH); default DATA_DIR/hsm-signer.db.' },
      },
    },
    hsm: {
      type: 'object',
      additionalProperties: false,
      required: ['embedded', 'modulePath', 'sessions', 'acquireTimeoutMs'],
      properties: {
        embedded: {
          type: 'boolean',
          description: 'Use a SoftHSM2 token kept under DATA_DIR/softhsm, created on first start. False as soon as HSM_MODULE or HSM_URI names another module.',
        },
        modulePath: { type: 'string', description: 'PKCS#11 module (env HSM_MODULE).' },
        tokenLabel: { type: ['string', 'null'], description: 'Token label to find the token by (env HSM_TOKEN_LABEL).' },
        tokenSerial: { type: ['string', 'null'], description: 'Token serial number, instead of or with the label (env HSM_TOKEN_SERIAL).' },
        pinSource: {
          type: ['string', 'null'],
          pattern: '^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$',
          description: 'Where the user PIN is read from: "env:NAME" or "file:/path" (env HSM_PIN_SOURCE). Default: env HSM_PIN, else (embedded) DATA_DIR/softhsm/user-pin.',
        },
        sessions: { type: 'integer', minimum: 1, maximum: 64, description: 'Read-write sessions in the pool; also sizes libuv\'s thread pool (env HSM_SESSIONS).' },
        acquireTimeoutMs: { type: 'integer', minimum: 1, description: 'How long a request waits for a free session before a 503 (env HSM_ACQUIRE_TIMEOUT_MS).' },
      },
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      required: ['accessTokenTTL', 'accessTokenMaxTTL'],
      properties: {
        accessTokenTTL: { type: 'integer', minimum: 1, description: 'Seconds an access token lives after login or renew (env ACCESS_TOKEN_TTL).' },
        accessTokenMaxTTL: { type: 'integer', minimum: 1, description: 'Seconds after login past which renew is refused (env ACCESS_TOKEN_MAX_TTL).' },
      },
    },
    logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], description: 'pino log level (env LOG_LEVEL).' },
  },
} as const;

export interface Config {
  server: { host: string; port: number; publicBaseUrl?: string | null; bodyLimitBytes: number };
  dataDir: string;
  database: { path?: string | null };
  hsm: {
    embedded: boolean;
    modulePath: string;
    tokenLabel?: string | null;
    tokenSerial?: string | null;
    pinSource?: string | null;
    sessions: number;
    acquireTimeoutMs: number;
  };
  auth: { accessTokenTTL: number; accessTokenMaxTTL: number };
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}
