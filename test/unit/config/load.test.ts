import { describe, expect, it } from 'vitest';
import { loadConfig, parsePkcs11Uri } from '../../../src/config/load.js';

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
