import { describe, expect, it } from 'vitest';
import type { ParsedCsr } from '../../../src/pki/csr.js';
import { evaluatePolicy, KEY_USAGE_BITS, type CertificatePolicy } from '../../../src/pki/policy.js';

const tlsServer: CertificatePolicy = {
  subject: [{ type: 'CN', allowed: ['*.svc.internal'], required: true }, { type: 'O', allowed: ['Example'] }, { type: 'OU', denied: true }],
  sans: { dns: ['*.svc.internal'], ip: ['10.0.0.0/8', 'fd00::/8'], emailDomains: ['example.com'], uriPrefixes: ['spiffe://example/'] },
  keyUsages: { allowed: ['keyEncipherment'], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: ['clientAuth'], always: ['serverAuth'] },
  keyAlgorithms: ['RSA_2048', 'RSA_4096', 'EC_prime256v1', 'EC_secp384r1'],
  maxValidity: '90d',
  allowCa: false,
};

function csr(overrides: Partial<ParsedCsr> = {}): ParsedCsr {
  return {
    subject: [{ type: 'CN', value: 'api.svc.internal' }],
    subjectDer: Buffer.alloc(0),
    publicKeySpki: Buffer.alloc(0),
    keyAlgorithm: { kind: 'ec', curve: 'P-256' },
    sans: [{ type: 'dns', value: 'api.svc.internal' }],
    requestsCa: false,
    ...overrides,
  };
}

describe('evaluatePolicy', () => {
  it('accepts a conforming request and adds the always-set usages', () => {
    const verdict = evaluatePolicy(tlsServer, csr({ keyUsages: KEY_USAGE_BITS.keyEncipherment, extendedKeyUsages: ['1.3.6.1.5.5.7.3.2'] }));
    expect(verdict.violations).toEqual([]);
    expect(verdict.keyUsages).toBe(KEY_USAGE_BITS.keyEncipherment | KEY_USAGE_BITS.digitalSignature);
    expect(verdict.extendedKeyUsages.sort()).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  });

  it('names every violated rule', () => {
    const verdict = evaluatePolicy(
      tlsServer,
      csr({
        subject: [{ type: 'CN', value: 'evil.example.org' }, { type: 'OU', value: 'x' }, { type: 'L', value: 'y' }],
        keyAlgorithm: { kind: 'rsa', bits: 1024 },
        sans: [
          { type: 'dns', value: 'a.b.svc.internal' },
          { type: 'ip', value: '192.168.1.1' },
          { type: 'email', value: 'x@evil.org' },
          { type: 'url', value: 'https://evil/' },
        ],
        keyUsages: KEY_USAGE_BITS.keyCertSign,
        extendedKeyUsages: ['1.3.6.1.5.5.7.3.3'],
        requestsCa: true,
      }),
    );
    const text = verdict.violations.join('\n');
    for (const expected of [
      /RSA keys shorter than 2048/,
      /subject CN "evil.example.org" does not match/,
      /OU is denied/,
      /L is not allowed/,
      /DNS name a\.b\.svc\.internal/,
      /IP address 192\.168\.1\.1/,
      /email x@evil\.org/,
      /URI https:\/\/evil\//,
      /key usage keyCertSign is not allowed/,
      /extended key usage codeSigning is not allowed/,
      /CA certificates cannot be requested/,
    ]) expect(text).toMatch(expected);
  });

  it('checks required attributes, key algorithms and IPv6 ranges', () => {
    expect(evaluatePolicy(tlsServer, csr({ subject: [] })).violations).toEqual(['subject attribute CN is required']);
    expect(evaluatePolicy(tlsServer, csr({ keyAlgorithm: { kind: 'ec', curve: 'P-521' } })).violations[0]).toMatch(/EC P-521 is not allowed/);
    expect(evaluatePolicy(tlsServer, csr({ keyAlgorithm: { kind: 'rsa', bits: 3072 } })).violations[0]).toMatch(/RSA_3072 is not allowed/);
    expect(evaluatePolicy(tlsServer, csr({ sans: [{ type: 'ip', value: 'fd00::1' }] })).violations).toEqual([]);
    expect(evaluatePolicy(tlsServer, csr({ sans: [{ type: 'ip', value: '10.200.3.4' }] })).violations).toEqual([]);
    expect(evaluatePolicy(tlsServer, csr({ sans: [{ type: 'ip', value: '2001:db8::1' }] })).violations).toHaveLength(1);
  });
});

describe('patterns', () => {
  it('reads ** as any depth and * as one label', () => {
    const open: CertificatePolicy = { ...tlsServer, subject: [{ type: 'CN', allowed: ['**'] }], sans: { dns: ['**.example.com'] } };
    expect(evaluatePolicy(open, csr({ subject: [{ type: 'CN', value: 'a.b.c' }], sans: [{ type: 'dns', value: 'x.y.example.com' }] })).violations).toEqual([]);
    expect(evaluatePolicy(open, csr({ sans: [{ type: 'dns', value: 'example.com' }] })).violations).toHaveLength(1);
    expect(evaluatePolicy(tlsServer, csr({ sans: [{ type: 'dns', value: 'svc.internal' }] })).violations).toHaveLength(1);
  });
});
