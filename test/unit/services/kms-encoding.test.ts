import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeCiphertext, ecdsaDerToRaw, ecdsaRawToDer, encodeCiphertext } from '../../../src/services/kms-encoding.js';

describe('ciphertext trailer', () => {
  const iv = Buffer.alloc(12, 1);
  const sealed = Buffer.concat([Buffer.from('secret'), Buffer.alloc(16, 2)]);

  it('ends version 1 with "v01" and later versions with uint32 BE version || "v02"', () => {
    const v1 = encodeCiphertext(1, iv, sealed);
    expect(v1.length).toBe(12 + 6 + 16 + 3);
    expect(v1.subarray(-3).toString()).toBe('v01');
    const v7 = encodeCiphertext(7, iv, sealed);
    expect(v7.length).toBe(12 + 6 + 16 + 4 + 3);
    expect(v7.readUInt32BE(v7.length - 7)).toBe(7);
    expect(v7.subarray(-3).toString()).toBe('v02');
  });

  it('decodes what it encodes', () => {
    for (const version of [1, 2, 300]) {
      const decoded = decodeCiphertext(encodeCiphertext(version, iv, sealed));
      expect(decoded?.version).toBe(version);
      expect(decoded?.iv.equals(iv)).toBe(true);
      expect(decoded?.ciphertextAndTag.equals(sealed)).toBe(true);
    }
  });

  it('refuses what cannot be a ciphertext', () => {
    expect(decodeCiphertext(Buffer.alloc(0))).toBeUndefined();
    expect(decodeCiphertext(Buffer.from('v01'))).toBeUndefined();
    expect(decodeCiphertext(Buffer.concat([Buffer.alloc(27), Buffer.from('v01')]))).toBeUndefined(); // shorter than IV + tag
    expect(decodeCiphertext(Buffer.concat([Buffer.alloc(28), Buffer.from('v03')]))).toBeUndefined();
    expect(decodeCiphertext(Buffer.concat([Buffer.alloc(28), Buffer.alloc(4), Buffer.from('v02')]))).toBeUndefined(); // version 0
  });
});

describe('ECDSA signature encoding', () => {
  it('re-encodes raw r||s into DER that OpenSSL verifies, and back', () => {
    for (const namedCurve of ['P-256', 'P-384', 'P-521'] as const) {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
      for (let i = 0; i < 20; i++) {
        const data = Buffer.from(`message ${i}`);
        const raw = sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        const der = ecdsaRawToDer(raw);
        expect(verify('sha256', data, { key: publicKey, dsaEncoding: 'der' }, der)).toBe(true);
        expect(ecdsaDerToRaw(der, raw.length / 2)?.equals(raw)).toBe(true);
      }
    }
  });

  it('refuses DER that is not strict', () => {
    const raw = Buffer.concat([Buffer.alloc(32, 0x11), Buffer.alloc(32, 0x22)]);
    const der = ecdsaRawToDer(raw);
    expect(ecdsaDerToRaw(Buffer.concat([der, Buffer.from([0])]), 32)).toBeUndefined(); // trailing byte
    expect(ecdsaDerToRaw(der.subarray(0, der.length - 1), 32)).toBeUndefined(); // truncated
    expect(ecdsaDerToRaw(Buffer.from('3006020100020100', 'hex'), 32)).toBeDefined(); // zeros are well-formed
    expect(ecdsaDerToRaw(Buffer.from('300702020001020101', 'hex'), 32)).toBeUndefined(); // non-minimal integer
    expect(ecdsaDerToRaw(Buffer.from('3006020180020101', 'hex'), 32)).toBeUndefined(); // negative integer
    expect(ecdsaDerToRaw(Buffer.concat([Buffer.from('3026022100', 'hex'), Buffer.alloc(32, 0xff), Buffer.from('020101', 'hex')]), 16)).toBeUndefined(); // too long for the curve
    expect(ecdsaDerToRaw(Buffer.from('not der'), 32)).toBeUndefined();
  });
});
