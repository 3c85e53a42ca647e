import { describe, expect, it } from 'vitest';
import { AppError } from '../../../src/errors.js';
import { opensslCsrMaker } from '../../helpers/openssl-csr.js';
import { parseCsr } from '../../../src/pki/csr.js';

const opensslCsr = opensslCsrMaker('csr-');

describe('parseCsr (CSRs made by the openssl CLI)', () => {
  it('reads subject, key, SANs, key usages and EKUs of an RSA CSR', async () => {
    const pem = opensslCsr('rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], [
      '-subj', '/CN=api.svc.internal/O=Example/C=DE',
      '-addext', 'subjectAltName=DNS:api.svc.internal,IP:10.0.0.7,email:ops@example.com,URI:spiffe://example/api',
      '-addext', 'keyUsage=critical,digitalSignature,keyEncipherment',
      '-addext', 'extendedKeyUsage=serverAuth,clientAuth',
    ]);
    const csr = await parseCsr(pem);
    expect(csr.keyAlgorithm).toEqual({ kind: 'rsa', bits: 2048 });
    expect(csr.subject).toEqual(expect.arrayContaining([{ type: 'CN', value: 'api.svc.internal' }, { type: 'O', value: 'Example' }, { type: 'C', value: 'DE' }]));
    expect(csr.sans).toEqual(
      expect.arrayContaining([
        { type: 'dns', value: 'api.svc.internal' },
        { type: 'ip', value: '10.0.0.7' },
        { type: 'email', value: 'ops@example.com' },
        { type: 'url', value: 'spiffe://example/api' },
      ]),
    );
    expect(csr.keyUsages! & 1).toBe(1); // digitalSignature
    expect(csr.keyUsages! & 4).toBe(4); // keyEncipherment
    expect(csr.extendedKeyUsages).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    expect(csr.requestsCa).toBe(false);
  });

  it('reads an EC P-384 CSR without extensions', async () => {
    const csr = await parseCsr(opensslCsr('ec', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-subj', '/CN=plain']));
    expect(csr.keyAlgorithm).toEqual({ kind: 'ec', curve: 'P-384' });
    expect(csr.sans).toEqual([]);
    expect(csr.keyUsages).toBeUndefined();
  });

  it('reads an Ed25519 CSR', async () => {
    const csr = await parseCsr(opensslCsr('ed25519', ['-algorithm', 'ed25519'], ['-subj', '/CN=edwards']));
    expect(csr.keyAlgorithm).toEqual({ kind: 'ed25519' });
  });

  it('a curve OID that does not end (its last byte has the continuation bit) is a 400, not a crash (seen from the hostile-input test)', async () => {
    const pem = opensslCsr('badcurve', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-subj', '/CN=curve']);
    const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    const secp384r1 = Buffer.from('06052b81040022', 'hex');
    const at = der.indexOf(secp384r1);
    expect(at).toBeGreaterThan(0);
    der[at + secp384r1.length - 1] = 0x9a;
    const mangled = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    const refused = await parseCsr(mangled).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(AppError);
    expect((refused as AppError).statusCode).toBe(400);
    expect((refused as AppError).message).toBe('The CSR public key cannot be read');
  });

  it('refuses a CSR whose signature does not verify, and text that is no CSR', async () => {
    const pem = opensslCsr('bad', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-subj', '/CN=tampered']);
    const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    der[der.length - 10]! ^= 0x01; // inside the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(parseCsr(tampered)).rejects.toBeInstanceOf(AppError);
    await expect(parseCsr(tampered)).rejects.toThrow(/signature/);
    await expect(parseCsr('hello')).rejects.toThrow(/not a PEM-encoded PKCS#10/);
  });
});
