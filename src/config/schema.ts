/**
 * The configuration's JSON Schema: its descriptions are the reference for every setting
 * (README.md's table is made from the same words). Validated once at start; secrets are
 * never part of it (PINs come from the environment or a file, see `hsm.pinSource`).
 */
import type { FromSchema } from 'json-schema-to-ts';

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
        shutdownDelayMs: {
          type: 'integer',
          minimum: 0,
          default: 5000,
          description:
            'On SIGTERM, how long the service keeps serving (every answer with Connection: close, /readyz failing) before it stops accepting connections, so a load balancer takes it out of rotation first; 0 stops accepting at once (env SHUTDOWN_DELAY_MS).',
        },
        shutdownGraceMs: {
          type: 'integer',
          minimum: 0,
          default: 10000,
          description: 'After the shutdown delay, how long in-flight requests may take to finish before their connections are cut (env SHUTDOWN_GRACE_MS).',
        },
        httpWorkers: {
          anyOf: [{ type: 'integer', minimum: 1, maximum: 256 }, { const: 'auto' }],
          default: 1,
          description: 'Worker processes serving the port (node:cluster), each a full replica on the same store and token; "auto" is one per core (env HTTP_WORKERS).',
        },
        opsPort: {
          type: ['integer', 'null'],
          minimum: 0,
          maximum: 65535,
          default: null,
          description: 'A separate plain-HTTP listener, on the same host, for /healthz, /readyz and /metrics only; 0 picks a free port (env OPS_PORT). Unset: they are served on the API port only.',
        },
        trustedProxies: {
          type: 'array',
          default: [],
          items: { type: 'string', minLength: 1 },
          description: 'CIDRs (or single addresses) of load balancers whose X-Forwarded-For is believed, for login throttling, rate limits and the audit trail (env TRUSTED_PROXIES, comma-separated). Empty: the peer address counts.',
        },
        tls: {
          type: ['object', 'null'],
          additionalProperties: false,
          required: ['certFile', 'keyFile'],
          description: 'Serve HTTPS instead of HTTP (env TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE).',
          properties: {
            certFile: { type: 'string', description: 'PEM certificate chain of the listener.' },
            keyFile: { type: 'string', description: 'PEM private key of the listener.' },
            clientCaFile: { type: ['string', 'null'], description: 'PEM CA certificates; when set, clients must present a certificate issued under one (mutual TLS).' },
            requestClientCertificate: {
              type: 'boolean',
              default: false,
              description: 'Ask every client for a certificate without requiring one, so EST clients can re-enroll with the certificate they hold (env TLS_REQUEST_CLIENT_CERTIFICATE=true). With clientCaFile set, one is required anyway.',
            },
          },
        },
        estClientCertificateHeader: {
          type: ['string', 'null'],
          pattern: '^[A-Za-z0-9-]{1,64}$',
          default: null,
          description: "Request header in which a TLS-terminating proxy passes the client certificate (URL-encoded PEM, as nginx's $ssl_client_escaped_cert, or base64 DER) for EST re-enrollment (env EST_CLIENT_CERTIFICATE_HEADER). Believed only from server.trustedProxies.",
        },
      },
    },
    dataDir: { type: 'string', description: 'Where the embedded token, the SQLite database and the admin credentials live (env DATA_DIR).' },
    database: {
      type: 'object',
      additionalProperties: false,
      properties: {
        path: { type: ['string', 'null'], description: 'SQLite file (env DATABASE_PATH); default DATA_DIR/hsm-signer.db. Ignored when `url` is set.' },
        url: {
          type: ['string', 'null'],
          pattern: '^postgres(ql)?://',
          description: 'PostgreSQL connection URL, postgres://user@host:port/db (env DATABASE_URL). Set: the store is that database, shared by every replica; unset: SQLite under DATA_DIR. Its password never appears in logs or errors.',
        },
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
        sessions: { type: 'integer', minimum: 1, maximum: 64, description: 'Token threads, each a worker thread making one blocking PKCS#11 call at a time on sessions of its own (env HSM_SESSIONS).' },
        acquireTimeoutMs: {
          type: 'integer',
          minimum: 1,
          description: 'How long a request may wait for the token, for a free session and its operation together, before a 503; a session whose call outlives it is never used again (env HSM_ACQUIRE_TIMEOUT_MS).',
        },
        keyGenerationTimeoutMs: { type: 'integer', minimum: 1, default: 60000, description: 'The same bound for key generation, which takes seconds for RSA-4096.' },
        readyTimeoutMs: { type: 'integer', minimum: 1, default: 1000, description: 'How long /readyz waits for its PKCS#11 call before answering 503.' },
      },
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      required: ['accessTokenTTL', 'accessTokenMaxTTL'],
      properties: {
        accessTokenTTL: { type: 'integer', minimum: 1, description: 'Seconds an access token lives after login or renew (env ACCESS_TOKEN_TTL).' },
        accessTokenMaxTTL: { type: 'integer', minimum: 1, description: 'Seconds after login past which renew is refused (env ACCESS_TOKEN_MAX_TTL).' },
        loginThrottle: {
          type: 'object',
          additionalProperties: false,
          default: {},
          description: 'Failed logins past these counts within the window are answered 429 until the window has passed.',
          properties: {
            maxFailuresPerClient: { type: 'integer', minimum: 1, default: 5, description: 'Failed logins per clientId.' },
            maxFailuresPerAddress: { type: 'integer', minimum: 1, default: 50, description: 'Failed logins per client IP address.' },
            windowSeconds: { type: 'integer', minimum: 1, default: 300, description: 'The window failures are counted in.' },
          },
        },
      },
    },
    rateLimit: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'Request rate limits (token buckets), per process: per identity on authenticated routes, and per client address in front of every API route before authentication; 429 past them.',
      properties: {
        perIdentityPerSecond: { type: 'number', minimum: 0, default: 1000, description: 'Sustained requests per second per identity; 0 turns the limit off (env RATE_LIMIT_PER_SECOND).' },
        burst: { type: 'integer', minimum: 1, default: 2000, description: 'Requests an identity may send at once after being idle.' },
        perAddressPerSecond: {
          type: 'number',
          minimum: 0,
          default: 2000,
          description: 'Sustained requests per second per client address (see server.trustedProxies), before authentication; 0 turns the limit off (env RATE_LIMIT_PER_ADDRESS_PER_SECOND).',
        },
        perAddressBurst: { type: 'integer', minimum: 1, default: 4000, description: 'Requests an address may send at once after being idle (env RATE_LIMIT_PER_ADDRESS_BURST).' },
      },
    },
    audit: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        signIntervalMs: { type: 'integer', minimum: 100, default: 60000, description: 'How often the head of the audit chain is signed by the audit key in the token (and once more at shutdown).' },
        deniedSummaryIntervalMs: {
          type: 'integer',
          minimum: 100,
          default: 60000,
          description: 'Requests refused before any identity was established are not audited one by one: each interval (and at shutdown) one auth.denied event per client address and status carries their count.',
        },
        retention: {
          type: ['string', 'null'],
          default: '365d',
          description:
            'How long events stay in the store, in ms notation (90d, 12h, 30m; env AUDIT_RETENTION, "off" for null). Older ones are pruned in the background, only up to a signed checkpoint and never past what the sink has exported; null keeps them all. The default follows PCI DSS 10.5.1 (12 months of audit history).',
        },
        maxEvents: {
          type: ['integer', 'null'],
          minimum: 1,
          default: null,
          description: 'At most this many events stay in the store (env AUDIT_MAX_EVENTS); the oldest beyond it are pruned like those past the retention. Null: no limit by count.',
        },
        sink: {
          type: ['string', 'null'],
          pattern: '^(stdout|syslog|syslog:/.+|file:/.+)$',
          default: null,
          description:
            'Where every event is also streamed, as JSON lines in chain order with the checkpoints and the audit public key (env AUDIT_SINK): file:/path/audit.jsonl (reopened on SIGHUP, for logrotate), stdout, syslog (the local /dev/log) or syslog:/path/to/socket. Null: none.',
        },
        sinkFailure: {
          enum: ['buffer', 'block'],
          default: 'buffer',
          description:
            'When the sink cannot write (env AUDIT_SINK_FAILURE): buffer keeps the events in the store (pruning waits for the sink) and retries every sinkIntervalMs; block also refuses every audited request with 503 until a write succeeds again.',
        },
        sinkIntervalMs: { type: 'integer', minimum: 10, default: 1000, description: 'How often the maintenance lease holder writes new events to the sink (at once again while a batch was full).' },
        pruneIntervalMs: { type: 'integer', minimum: 100, default: 60000, description: 'How often the maintenance lease holder prunes events past audit.retention or audit.maxEvents.' },
      },
    },
    pki: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        csrThreads: {
          type: 'integer',
          minimum: 0,
          maximum: 64,
          default: 1,
          description:
            'Worker threads that parse and verify the CSRs of sign-certificate, EST and ACME, so that work scales with cores instead of running on the event loop; 0 parses them on the main thread (env PKI_CSR_THREADS).',
        },
      },
    },
    acme: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'ACME (RFC 8555) challenge validation. The validator makes requests from the server to names clients choose, so private addresses are refused unless allowed.',
      properties: {
        http01Port: { type: 'integer', minimum: 1, maximum: 65535, default: 80, description: 'Port http-01 validation connects to (env ACME_HTTP01_PORT); RFC 8555 says 80.' },
        resolve: {
          type: 'array',
          default: [],
          items: { type: 'string', pattern: '^[A-Za-z0-9*_.-]+:.+$' },
          description:
            "Fixed answers for the validator's name lookups, 'name:address' like curl's --resolve (env ACME_RESOLVE, comma-separated). Addresses given here are used even when private or loopback: the operator chose them.",
        },
        allowPrivateAddresses: {
          type: 'boolean',
          default: false,
          description: 'Let the validator connect to loopback, link-local and private addresses found through DNS (env ACME_ALLOW_PRIVATE=true). Off, a client cannot point the server at its own internal network (SSRF).',
        },
        validationTimeoutMs: { type: 'integer', minimum: 100, maximum: 10000, default: 5000, description: 'How long one validation attempt may take (connect, request and answer).' },
        validationAttempts: { type: 'integer', minimum: 1, maximum: 5, default: 3, description: 'Attempts before a challenge is invalid (a second apart).' },
      },
    },
    logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], description: 'pino log level (env LOG_LEVEL).' },
    logSummaryIntervalMs: {
      type: 'integer',
      minimum: 100,
      default: 5000,
      description:
        'Refused requests (503, 429, 401) and repeated token failures are not logged one by one (each is at debug level): one summary line with their counts at most this often (env LOG_SUMMARY_INTERVAL_MS).',
    },
  },
} as const;

/**
 * The configuration as the service reads it after validation, taken from the schema itself
 * (settings with a default are always present: ajv fills them in, see load.ts).
 */
export type Config = FromSchema<typeof configSchema>;
