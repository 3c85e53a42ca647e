/**
 * The OCSP responder's reuse of signed answers: the status is read from the store on every
 * request, a kept answer is served only for the statuses just read, a revocation is in the very
 * next answer, a nonce is always signed fresh, and an old answer is signed again.
 */
import 'reflect-metadata';
import { generateKeyPairSync } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildCertificate, type CertificateSigner } from '../../../src/pki/certificate-builder.js';
import { children, only, sequence, TAG, tlv, encodeOid } from '../../../src/pki/der.js';
import { newSerialNumber } from '../../../src/pki/serial.js';
import { createOcspService } from '../../../src/services/ocsp-service.js';
import type { CaRecord, CertificateStatusRecord } from '../../../src/store/pki-store.js';
import { softwareSigner } from '../../helpers/software-signer.js';
import { createHash } from 'node:crypto';

const CA_ID = '11111111-2222-3333-4444-555555555555';
const name = Buffer.from(new x509.Name('CN=Responder Test CA').toArrayBuffer());
const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const publicKey = pair.publicKey.export({ type: 'spki', format: 'der' });
const serial = newSerialNumber();

/** A CertID for `serialBytes` under the test CA, made the way clients make it (SHA-1). */
function request(serialBytes: Buffer, nonce?: Buffer): Buffer {
  const bits = children(only(publicKey, TAG.sequence).value)[1]!.value.subarray(1);
  const certId = sequence(
    sequence(encodeOid('1.3.14.3.2.26'), Buffer.from([5, 0])),
    tlv(TAG.octetString, createHash('sha1').update(name).digest()),
    tlv(TAG.octetString, createHash('sha1').update(bits).digest()),
    tlv(TAG.integer, serialBytes),
  );
  const extensions = nonce ? [tlv(0xa2, sequence(sequence(encodeOid('1.3.6.1.5.5.7.48.1.2'), tlv(TAG.octetString, tlv(TAG.octetString, nonce)))))] : [];
  return sequence(sequence(sequence(sequence(certId)), ...extensions));
}

describe('OCSP responder reuse of signed answers', () => {
  let ca: CaRecord;
  beforeAll(async () => {
    const certificate = await buildCertificate(
      { serialNumber: newSerialNumber(), issuer: name, subject: name, notBefore: new Date(), notAfter: new Date(Date.now() + 86_400_000), subjectPublicKey: publicKey, issuerPublicKey: publicKey, ca: {}, keyUsages: 96 },
      softwareSigner(pair.privateKey),
    );
    ca = { id: CA_ID, subject: name, publicKey, certificate, objectId: Buffer.alloc(16), keyAlgorithm: 'EC_prime256v1' } as CaRecord;
  });

  function setup() {
    let clock = Date.parse('2026-11-30T12:00:00Z');
    const statuses = new Map<string, CertificateStatusRecord>([[serial.toString('hex'), { status: 'active', revocationReason: null, revokedAt: null }]]);
    let reads = 0;
    let signatures = 0;
    const signer = softwareSigner(pair.privateKey);
    const counting: CertificateSigner = { algorithm: signer.algorithm, sign: (tbs) => (signatures++, signer.sign(tbs)) };
    const service = createOcspService({
      pkiStore: {
        getCa: async (id) => (id === CA_ID ? ca : undefined),
        certificateStatus: async (caId, serialHex) => (reads++, caId === CA_ID ? statuses.get(serialHex) : undefined),
      },
      cas: { signerFor: () => counting },
      now: () => clock,
    });
    return {
      service,
      statuses,
      advance: (ms: number) => (clock += ms),
      counts: () => ({ reads, signatures }),
    };
  }

  it('reads the status on every request and signs once for the same status', async () => {
    const { service, counts } = setup();
    const first = await service.answer(CA_ID, request(serial));
    const second = await service.answer(CA_ID, request(serial));
    expect(first.responseStatus).toBe('successful');
    expect(first.source).toBe('token');
    expect(second.source).toBe('cache');
    expect(second.der).toEqual(first.der);
    expect(counts()).toEqual({ reads: 2, signatures: 1 });
  });

  it('a revocation is in the very next answer, whatever was kept', async () => {
    const { service, statuses, counts } = setup();
    const good = await service.answer(CA_ID, request(serial));
    statuses.set(serial.toString('hex'), { status: 'revoked', revocationReason: 'KEY_COMPROMISE', revokedAt: '2026-11-30T12:00:00.000Z' });
    const revoked = await service.answer(CA_ID, request(serial));
    expect(revoked.der).not.toEqual(good.der);
    expect(revoked.source).toBe('token');
    // The revoked status and its reason are in the signed data: [1] RevokedInfo with [0] reason 1.
    expect(revoked.der.toString('hex')).toContain(Buffer.from('20261130120000Z').toString('hex') + 'a0030a0101');
    expect(counts().signatures).toBe(2);
  });

  it('signs every request with a nonce afresh and never keeps it', async () => {
    const { service, counts } = setup();
    const a = await service.answer(CA_ID, request(serial, Buffer.alloc(16, 1)));
    const b = await service.answer(CA_ID, request(serial, Buffer.alloc(16, 2)));
    expect(a.cacheable).toBe(false);
    expect(b.der).not.toEqual(a.der);
    await service.answer(CA_ID, request(serial));
    expect(counts().signatures).toBe(3);
  });

  it('signs again once a kept answer is older than the refresh age, with new times', async () => {
    const { service, advance, counts } = setup();
    const first = await service.answer(CA_ID, request(serial));
    advance(9 * 60_000);
    expect((await service.answer(CA_ID, request(serial))).source).toBe('cache');
    advance(2 * 60_000);
    const later = await service.answer(CA_ID, request(serial));
    expect(later.source).toBe('token');
    expect(later.nextUpdate!.getTime() - first.nextUpdate!.getTime()).toBe(11 * 60_000);
    expect(later.nextUpdate!.getTime() - later.thisUpdate!.getTime()).toBe(60 * 60_000);
    expect(counts().signatures).toBe(2);
  });

  it('many requests at once for one certificate share one signature', async () => {
    const { service, counts } = setup();
    const answers = await Promise.all(Array.from({ length: 20 }, () => service.answer(CA_ID, request(serial))));
    expect(new Set(answers.map((answer) => answer.der.toString('hex'))).size).toBe(1);
    expect(counts().signatures).toBe(1);
  });

  it('unknown serial: unknown; unknown CA, bad CA id or another CA: unauthorized; garbage: malformedRequest', async () => {
    const { service, counts } = setup();
    const unknown = await service.answer(CA_ID, request(newSerialNumber()));
    expect(unknown.responseStatus).toBe('successful');
    expect(unknown.der.includes(Buffer.from([0x82, 0x00]))).toBe(true);
    expect((await service.answer('99999999-2222-3333-4444-555555555555', request(serial))).responseStatus).toBe('unauthorized');
    expect((await service.answer('../etc', request(serial))).responseStatus).toBe('unauthorized');
    const foreign = Buffer.from(request(serial));
    const nameHashAt = foreign.indexOf(createHash('sha1').update(name).digest());
    foreign[nameHashAt] = foreign[nameHashAt]! ^ 0xff; // another issuer's name
    expect((await service.answer(CA_ID, foreign)).responseStatus).toBe('unauthorized');
    expect((await service.answer(CA_ID, Buffer.from('garbage'))).responseStatus).toBe('malformedRequest');
    expect((await service.answer(CA_ID, Buffer.from('garbage'))).der).toEqual(Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x01]));
    // A negative serial names no certificate: answered unknown without a store read.
    const before = counts().reads;
    const negative = await service.answer(CA_ID, request(Buffer.from([0xff])));
    expect(negative.der.includes(Buffer.from([0x82, 0x00]))).toBe(true);
    expect(counts().reads).toBe(before);
  });
});
