import { describe, expect, it } from 'vitest';
import { loadConfig, parsePkcs11Uri, retentionMs } from '../../../src/config/load.js';

describe('configuration', () => {
  it('overlays environment variables on the defaults', () => {
    const config = loadConfig({}, { PORT: '9000', DATA_DIR: '/tmp/x', HSM_SESSIONS: '6', ACCESS_TOKEN_TTL: '60' });
    expect(config.server.port).toBe(9000);
    expect(config.dataDir).toBe('/tmp/x');
    expect(config.hsm.sessions).toBe(6);
    expect(config.hsm.embedded).toBe(true);
    expect(config.auth.accessTokenTTL).toBe(60);
  });

  it('treats another module as a real HSM', () => {
    const config = loadConfig({}, { HSM_MODULE: '/opt/hsm/lib.so', HSM_TOKEN_LABEL: 'prod' });
    expect(config.hsm.embedded).toBe(false);
    expect(config.hsm.modulePath).toBe('/opt/hsm/lib.so');
    expect(config.hsm.tokenLabel).toBe('prod');
  });

  it('refuses invalid settings with a message naming them', () => {
    expect(() => loadConfig({}, { PORT: 'eighty' })).toThrow(/integer/);
    expect(() => loadConfig({}, { HSM_SESSIONS: '0' })).toThrow(/sessions/);
    expect(() => loadConfig({}, { LOG_LEVEL: 'loud' })).toThrow(/logLevel/);
  });

  it('reads the edge settings from the environment: workers, ops port, trusted proxies, per-address limit', () => {
    const config = loadConfig({}, { HTTP_WORKERS: 'auto', OPS_PORT: '9100', TRUSTED_PROXIES: ' 10.0.0.0/8 ,, ::1 ', RATE_LIMIT_PER_ADDRESS_PER_SECOND: '0.5', RATE_LIMIT_PER_ADDRESS_BURST: '7' });
    expect(config.server).toMatchObject({ httpWorkers: 'auto', opsPort: 9100, trustedProxies: ['10.0.0.0/8', '::1'] });
    expect(config.rateLimit).toMatchObject({ perAddressPerSecond: 0.5, perAddressBurst: 7, perIdentityPerSecond: 1000 });
    const defaults = loadConfig({}, {});
    expect(defaults.server).toMatchObject({ httpWorkers: 1, opsPort: null, trustedProxies: [] });
    expect(defaults.rateLimit).toMatchObject({ perAddressPerSecond: 2000, perAddressBurst: 4000 });
    expect(defaults.audit.deniedSummaryIntervalMs).toBe(60000);
    expect(() => loadConfig({}, { RATE_LIMIT_PER_ADDRESS_PER_SECOND: 'lots' })).toThrow(/perAddressPerSecond/);
    expect(() => loadConfig({}, { HTTP_WORKERS: '0' })).toThrow(/httpWorkers/);
  });

  it('reads the shutdown delay and the log summary interval, with their defaults', () => {
    const defaults = loadConfig({}, {});
    expect(defaults.server).toMatchObject({ shutdownDelayMs: 5000, shutdownGraceMs: 10000 });
    expect(defaults.logSummaryIntervalMs).toBe(5000);
    const config = loadConfig({}, { SHUTDOWN_DELAY_MS: '0', SHUTDOWN_GRACE_MS: '2500', LOG_SUMMARY_INTERVAL_MS: '1000' });
    expect(config.server).toMatchObject({ shutdownDelayMs: 0, shutdownGraceMs: 2500 });
    expect(config.logSummaryIntervalMs).toBe(1000);
    expect(() => loadConfig({}, { SHUTDOWN_DELAY_MS: '-1' })).toThrow(/shutdownDelayMs/);
    expect(() => loadConfig({}, { LOG_SUMMARY_INTERVAL_MS: '10' })).toThrow(/logSummaryIntervalMs/);
  });

  it('reads the ACME validator settings from the environment and refuses a resolve entry without an IP address', () => {
    expect(loadConfig({}, {}).acme).toEqual({ http01Port: 80, resolve: [], allowPrivateAddresses: false, validationTimeoutMs: 5000, validationAttempts: 3 });
    const config = loadConfig({}, { ACME_HTTP01_PORT: '5002', ACME_RESOLVE: 'a.test:127.0.0.1, b.test:::1,', ACME_ALLOW_PRIVATE: 'true' });
    expect(config.acme).toMatchObject({ http01Port: 5002, resolve: ['a.test:127.0.0.1', 'b.test:::1'], allowPrivateAddresses: true });
    expect(() => loadConfig({}, { ACME_RESOLVE: 'a.test:not-an-address' })).toThrow(/acme\.resolve entry "a\.test:not-an-address"/);
    expect(() => loadConfig({}, { ACME_RESOLVE: 'no-address' })).toThrow(/resolve/);
    expect(() => loadConfig({}, { ACME_HTTP01_PORT: '0' })).toThrow(/http01Port/);
  });

  it('reads the audit trail settings from the environment, and refuses a retention or sink it cannot use', () => {
    const defaults = loadConfig({}, {});
    expect(defaults.audit).toMatchObject({ retention: '365d', maxEvents: null, sink: null, sinkFailure: 'buffer', sinkIntervalMs: 1000, pruneIntervalMs: 60000 });
    expect(retentionMs(defaults)).toBe(365 * 86_400_000);
    const config = loadConfig({}, { AUDIT_RETENTION: '90d', AUDIT_MAX_EVENTS: '5000000', AUDIT_SINK: 'file:/var/log/hsm-signer/audit.jsonl', AUDIT_SINK_FAILURE: 'block' });
    expect(config.audit).toMatchObject({ retention: '90d', maxEvents: 5_000_000, sink: 'file:/var/log/hsm-signer/audit.jsonl', sinkFailure: 'block' });
    expect(retentionMs(config)).toBe(90 * 86_400_000);
    const off = loadConfig({}, { AUDIT_RETENTION: 'off', AUDIT_SINK: 'stdout' });
    expect([off.audit.retention, retentionMs(off), off.audit.sink]).toEqual([null, null, 'stdout']);
    expect(loadConfig({}, { AUDIT_SINK: 'syslog:/run/rsyslog/audit.sock' }).audit.sink).toBe('syslog:/run/rsyslog/audit.sock');
    expect(() => loadConfig({}, { AUDIT_RETENTION: 'a while' })).toThrow(/audit\.retention "a while"/);
    expect(() => loadConfig({}, { AUDIT_RETENTION: '10ms' })).toThrow(/audit\.retention/);
    expect(() => loadConfig({}, { AUDIT_SINK: 'file:relative.jsonl' })).toThrow(/\/audit\/sink/);
    expect(() => loadConfig({}, { AUDIT_SINK: 'kafka://x' })).toThrow(/\/audit\/sink/);
    expect(() => loadConfig({}, { AUDIT_SINK_FAILURE: 'drop' })).toThrow(/\/audit\/sinkFailure/);
    expect(() => loadConfig({}, { AUDIT_MAX_EVENTS: '0' })).toThrow(/\/audit\/maxEvents/);
  });

  it('reads the number of CSR threads from the environment: 1 by default, 0 allowed, no negative', () => {
    expect(loadConfig({}, {}).pki).toEqual({ csrThreads: 1 });
    expect(loadConfig({}, { PKI_CSR_THREADS: '0' }).pki.csrThreads).toBe(0);
    expect(loadConfig({}, { PKI_CSR_THREADS: '3' }).pki.csrThreads).toBe(3);
    expect(() => loadConfig({}, { PKI_CSR_THREADS: '-1' })).toThrow(/\/pki\/csrThreads/);
    expect(() => loadConfig({}, { PKI_CSR_THREADS: '1.5' })).toThrow(/integer/);
  });

  it('reads an RFC 7512 PKCS#11 URI and refuses an inline PIN', () => {
    expect(parsePkcs11Uri('pkcs11:token=my%20hsm;serial=42?module-path=/usr/lib/x.so&pin-source=file:/run/pin')).toEqual({
      tokenLabel: 'my hsm',
      tokenSerial: '42',
      modulePath: '/usr/lib/x.so',
      embedded: false,
      pinSource: 'file:/run/pin',
    });
    expect(() => parsePkcs11Uri('pkcs11:token=x?pin-value=1234')).toThrow(/pin-value/);
    expect(() => parsePkcs11Uri('http://x')).toThrow();
  });
});
