/**
 * OCSP messages against OpenSSL: requests made by `openssl ocsp` are read (CertID, serial,
 * nonce), responses built here are read and verified by `openssl ocsp -respin` (status, times,
 * nonce, signature under the CA), and anything else a client could send is a malformedRequest,
 * never another exception.
 */
import 'reflect-metadata';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCertificate, toPem } from '../../../src/pki/certificate-builder.js';
import { children, encodeOid, only, sequence, TAG, tlv } from '../../../src/pki/der.js';
import {
  buildOcspResponse,
  decodeGetRequest,
  generalizedTime,
  issuerMatcher,
  MAX_CERT_IDS,
  ocspErrorResponse,
  OcspRequestError,
  parseOcspRequest,
  responderKeyHash,
  type OcspCertId,
} from '../../../src/pki/ocsp.js';
import { newSerialNumber } from '../../../src/pki/serial.js';
import { softwareSigner } from '../../helpers/software-signer.js';

const dir = mkdtempSync(join(tmpdir(), 'ocsp-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => join(dir, name);
const spki = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });
const name = (dn: string) => Buffer.from(new x509.Name(dn).toArrayBuffer());
const openssl = (...args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

function malformedOf(input: Buffer): string {
  try {
    parseOcspRequest(input);
  } catch (error) {
    expect(error).toBeInstanceOf(OcspRequestError);
    return (error as OcspRequestError).status;
  }
  return 'parsed';
}

interface Ca {
  key: KeyObject;
  der: Buffer;
  pem: string;
  name: Buffer;
  publicKey: Buffer;
}

async function makeCa(cn: string, kind: 'ec' | 'rsa'): Promise<Ca> {
  const pair = kind === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const subject = name(`CN=${cn}`);
  const now = Date.now() - 60_000;
  const der = await buildCertificate(
    { serialNumber: newSerialNumber(), issuer: subject, subject, notBefore: new Date(now), notAfter: new Date(now + 86_400_000 * 30), subjectPublicKey: spki(pair.publicKey), issuerPublicKey: spki(pair.publicKey), ca: {}, keyUsages: 32 | 64 },
    softwareSigner(pair.privateKey),
  );
  const pem = toPem(der);
  writeFileSync(file(`${cn}.pem`), pem);
  return { key: pair.privateKey, der, pem, name: subject, publicKey: spki(pair.publicKey) };
}

async function makeLeaf(ca: Ca, label: string): Promise<{ serial: Buffer; path: string }> {
  const leaf = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const serial = newSerialNumber();
  const now = Date.now() - 60_000;
  const der = await buildCertificate(
    { serialNumber: serial, issuer: ca.name, subject: name(`CN=${label}.ocsp.test`), notBefore: new Date(now), notAfter: new Date(now + 86_400_000), subjectPublicKey: spki(leaf.publicKey), issuerPublicKey: ca.publicKey, keyUsages: 1 },
    softwareSigner(ca.key),
  );
  writeFileSync(file(`${label}.pem`), toPem(der));
  return { serial, path: file(`${label}.pem`) };
}

/** `openssl ocsp` makes the request; returns its DER. */
function opensslRequest(issuer: string, certs: string[], extra: string[] = []): Buffer {
  const out = file(`req-${Math.random().toString(36).slice(2)}.der`);
  // Options such as -sha256 apply to the -cert options after them.
  openssl('ocsp', '-issuer', issuer, ...extra, ...certs.flatMap((cert) => ['-cert', cert]), '-reqout', out);
  return readFileSync(out);
}

/**
 * `openssl ocsp -respin` reads and verifies a response against the CA; returns what it printed
 * (stdout + stderr) and its exit status. With the request given (-reqin), openssl checks the
 * nonce against it; it then prints statuses only in the response text (-cert would make it
 * build a new request with a nonce of its own).
 */
function opensslRead(response: Buffer, ca: Ca, certs: string[], requestDer?: Buffer) {
  const respPath = file(`resp-${Math.random().toString(36).slice(2)}.der`);
  writeFileSync(respPath, response);
  const args = ['ocsp', '-respin', respPath, '-issuer', file(`${caLabel(ca)}.pem`), '-CAfile', file(`${caLabel(ca)}.pem`), '-resp_text'];
  if (requestDer) {
    const reqPath = file(`reqin-${Math.random().toString(36).slice(2)}.der`);
    writeFileSync(reqPath, requestDer);
    args.push('-reqin', reqPath);
  } else args.push(...certs.flatMap((cert) => ['-cert', cert]));
  const result = spawnSync('openssl', args, { encoding: 'utf8' });
  return { status: result.status, text: `${result.stdout}${result.stderr}` };
}
const labels = new Map<Ca, string>();
const caLabel = (ca: Ca) => labels.get(ca)!;

describe('OCSP requests and responses', () => {
  let ecCa: Ca;
  let rsaCa: Ca;
  let other: Ca;
  let leaf: { serial: Buffer; path: string };
  let leaf2: { serial: Buffer; path: string };

  beforeAll(async () => {
    ecCa = await makeCa('ec-ca', 'ec');
    rsaCa = await makeCa('rsa-ca', 'rsa');
    other = await makeCa('other-ca', 'ec');
    labels.set(ecCa, 'ec-ca').set(rsaCa, 'rsa-ca').set(other, 'other-ca');
    leaf = await makeLeaf(ecCa, 'leaf');
    leaf2 = await makeLeaf(ecCa, 'leaf2');
  });

  const respond = async (ca: Ca, certIds: OcspCertId[], statuses: Array<'good' | 'revoked' | 'unknown'>, nonce?: Buffer) => {
    const thisUpdate = new Date(Math.floor(Date.now() / 1000) * 1000);
    return buildOcspResponse(
      {
        responderKeyHash: responderKeyHash(ca.publicKey),
        producedAt: thisUpdate,
        thisUpdate,
        nextUpdate: new Date(thisUpdate.getTime() + 3_600_000),
        responses: certIds.map((certId, index) => ({
          certId,
          status: statuses[index] === 'revoked' ? { kind: 'revoked', revokedAt: new Date('2026-01-02T03:04:05.678Z'), reason: 1 } : { kind: statuses[index]! },
        })),
        nonce,
        certificates: [ca.der],
      },
      softwareSigner(ca.key),
    );
  };

  it("reads openssl's request: SHA-1 CertID naming the CA, the serial, a 16-octet nonce", () => {
    const request = parseOcspRequest(opensslRequest(file('ec-ca.pem'), [leaf.path]));
    expect(request.certIds).toHaveLength(1);
    const [certId] = request.certIds;
    expect(certId!.hash).toBe('sha1');
    expect(certId!.serialHex).toBe(leaf.serial.toString('hex'));
    expect(issuerMatcher({ name: ecCa.name, publicKey: ecCa.publicKey })(certId!)).toBe(true);
    expect(issuerMatcher({ name: other.name, publicKey: other.publicKey })(certId!)).toBe(false);
    // extnValue = OCTET STRING { 16 random octets }.
    expect(only(request.nonce!, TAG.octetString).value).toHaveLength(16);
    expect(parseOcspRequest(opensslRequest(file('ec-ca.pem'), [leaf.path], ['-no_nonce'])).nonce).toBeUndefined();
  });

  it('reads SHA-256 CertIDs and several certificates in one request', () => {
    const request = parseOcspRequest(opensslRequest(file('ec-ca.pem'), [leaf.path, leaf2.path], ['-sha256']));
    expect(request.certIds.map((id) => [id.hash, id.serialHex])).toEqual([
      ['sha256', leaf.serial.toString('hex')],
      ['sha256', leaf2.serial.toString('hex')],
    ]);
    expect(request.certIds.every(issuerMatcher({ name: ecCa.name, publicKey: ecCa.publicKey }))).toBe(true);
  });

  it('reads a serial however it is encoded: leading zero octets are not part of the value, a negative serial names nothing', () => {
    const request = opensslRequest(file('ec-ca.pem'), [leaf.path], ['-no_nonce']);
    const [certId] = parseOcspRequest(request).certIds;
    const [algorithm, nameHash, keyHash] = children(only(certId!.raw, TAG.sequence).value);
    const withSerial = (serial: Buffer) => sequence(sequence(sequence(sequence(sequence(algorithm!.raw, nameHash!.raw, keyHash!.raw, tlv(TAG.integer, serial))))));
    expect(parseOcspRequest(withSerial(Buffer.concat([Buffer.from([0, 0]), leaf.serial]))).certIds[0]!.serialHex).toBe(leaf.serial.toString('hex'));
    expect(parseOcspRequest(withSerial(Buffer.from([0x00]))).certIds[0]!.serialHex).toBe('00');
    expect(parseOcspRequest(withSerial(Buffer.from([0xff, 0x01]))).certIds[0]!.serialHex).toBeUndefined();
  });

  for (const kind of ['ec', 'rsa'] as const) {
    it(`builds answers openssl verifies under the ${kind.toUpperCase()} CA: good, revoked with time and reason, unknown, and the nonce echoed`, async () => {
      const ca = kind === 'ec' ? ecCa : rsaCa;
      const caLeaf = kind === 'ec' ? leaf : await makeLeaf(rsaCa, 'rsa-leaf');
      const caLeaf2 = kind === 'ec' ? leaf2 : await makeLeaf(rsaCa, 'rsa-leaf2');
      const unknownLeaf = await makeLeaf(ca, `${kind}-unknown`);
      const requestDer = opensslRequest(file(`${caLabel(ca)}.pem`), [caLeaf.path, caLeaf2.path, unknownLeaf.path]);
      const request = parseOcspRequest(requestDer);
      const response = await respond(ca, request.certIds, ['good', 'revoked', 'unknown'], request.nonce);
      const withNonce = opensslRead(response, ca, [], requestDer);
      expect(withNonce.status, withNonce.text).toBe(0);
      expect(withNonce.text).toContain('Response verify OK');
      expect(withNonce.text).toMatch(/OCSP Nonce:/);
      expect(withNonce.text).not.toMatch(/nonce verify error/i);
      expect([...withNonce.text.matchAll(/Cert Status: (\w+)/g)].map((match) => match[1])).toEqual(['good', 'revoked', 'unknown']);
      expect(withNonce.text).toMatch(/Revocation Reason: keyCompromise \(0x1\)/);
      expect(withNonce.text).toMatch(/Revocation Time: Jan  2 03:04:05 2026 GMT/);
      if (kind === 'ec') expect(withNonce.text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
      // Matched to the certificates by CertID (openssl builds its own and compares).
      const plain = parseOcspRequest(opensslRequest(file(`${caLabel(ca)}.pem`), [caLeaf.path, caLeaf2.path, unknownLeaf.path], ['-no_nonce']));
      const read = opensslRead(await respond(ca, plain.certIds, ['good', 'revoked', 'unknown']), ca, [caLeaf.path, caLeaf2.path, unknownLeaf.path]);
      expect(read.text).toContain('Response verify OK');
      expect(read.text).toContain(`${caLeaf.path}: good`);
      expect(read.text).toContain(`${caLeaf2.path}: revoked`);
      expect(read.text).toMatch(/Reason: keyCompromise/);
      expect(read.text).toContain(`${unknownLeaf.path}: unknown`);
      expect(read.text).toMatch(/Next Update:/);
    });
  }

  it('a response whose nonce differs from the request is refused by openssl (the nonce is checked, not decoration)', async () => {
    const requestDer = opensslRequest(file('ec-ca.pem'), [leaf.path]);
    const request = parseOcspRequest(requestDer);
    const otherNonce = tlv(TAG.octetString, Buffer.alloc(16, 7));
    const read = opensslRead(await respond(ecCa, request.certIds, ['good'], otherNonce), ecCa, [leaf.path], requestDer);
    expect(read.text).toMatch(/nonce verify error/i);
  });

  it('a response signed by another key does not verify under the CA', async () => {
    const request = parseOcspRequest(opensslRequest(file('ec-ca.pem'), [leaf.path], ['-no_nonce']));
    const forged = await buildOcspResponse(
      { responderKeyHash: responderKeyHash(ecCa.publicKey), producedAt: new Date(), thisUpdate: new Date(), nextUpdate: new Date(Date.now() + 3_600_000), responses: [{ certId: request.certIds[0]!, status: { kind: 'good' } }], certificates: [ecCa.der] },
      softwareSigner(other.key),
    );
    const read = opensslRead(forged, ecCa, [leaf.path]);
    expect(read.status).not.toBe(0);
    expect(read.text).not.toContain('Response verify OK');
  });

  it('writes GeneralizedTime in whole seconds without a fraction, also for dates before 2050', () => {
    expect(generalizedTime(new Date('2026-11-30T23:59:58.999Z')).toString('latin1')).toBe('\x18\x0f20261130235958Z');
    expect(generalizedTime(new Date('2051-01-01T00:00:00Z')).toString('latin1')).toBe('\x18\x0f20510101000000Z');
  });

  it('error statuses are the bare OCSPResponse openssl reads', () => {
    for (const [status, text] of [['malformedRequest', 'malformedrequest'], ['unauthorized', 'unauthorized'], ['tryLater', 'trylater'], ['internalError', 'internalerror']] as const) {
      const path = file(`error-${status}.der`);
      writeFileSync(path, ocspErrorResponse(status));
      const read = spawnSync('openssl', ['ocsp', '-respin', path, '-resp_text', '-noverify'], { encoding: 'utf8' });
      expect(`${read.stdout}${read.stderr}`.toLowerCase()).toContain(text);
    }
  });

  describe('hostile requests are malformedRequest', () => {
    it('empty, truncated, garbage, trailing data, indefinite lengths', () => {
      const good = opensslRequest(file('ec-ca.pem'), [leaf.path]);
      expect(malformedOf(Buffer.alloc(0))).toBe('malformedRequest');
      for (let cut = 1; cut < good.length; cut += 7) expect(malformedOf(good.subarray(0, cut))).toBe('malformedRequest');
      expect(malformedOf(Buffer.concat([good, Buffer.from([0])]))).toBe('malformedRequest');
      expect(malformedOf(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toBe('malformedRequest');
      expect(malformedOf(Buffer.from([0x30, 0x80, 0x00, 0x00]))).toBe('malformedRequest');
      expect(malformedOf(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]))).toBe('malformedRequest');
    });

    const certIdOf = () => parseOcspRequest(opensslRequest(file('ec-ca.pem'), [leaf.path], ['-no_nonce'])).certIds[0]!.raw;
    const requestWith = (certIds: Buffer[], extensions?: Buffer[]) =>
      sequence(sequence(sequence(...certIds.map((certId) => sequence(certId))), ...(extensions ? [tlv(0xa2, sequence(...extensions))] : [])));
    const nonceExtension = (octets: number) => sequence(encodeOid('1.3.6.1.5.5.7.48.1.2'), tlv(TAG.octetString, tlv(TAG.octetString, Buffer.alloc(octets, 1))));

    it('a nonce of 0 or more than 128 octets (RFC 9654); 1 and 128 are taken', () => {
      const certId = certIdOf();
      expect(malformedOf(requestWith([certId], [nonceExtension(0)]))).toBe('malformedRequest');
      expect(malformedOf(requestWith([certId], [nonceExtension(129)]))).toBe('malformedRequest');
      expect(malformedOf(requestWith([certId], [nonceExtension(100_000)]))).toBe('malformedRequest');
      expect(parseOcspRequest(requestWith([certId], [nonceExtension(1)])).nonce).toBeDefined();
      expect(parseOcspRequest(requestWith([certId], [nonceExtension(128)])).nonce).toBeDefined();
    });

    it('no CertID, too many, an unsupported hash, an unknown critical extension', () => {
      const certId = certIdOf();
      expect(malformedOf(requestWith([]))).toBe('malformedRequest');
      expect(malformedOf(requestWith(Array.from({ length: MAX_CERT_IDS + 1 }, () => certId)))).toBe('malformedRequest');
      expect(parseOcspRequest(requestWith(Array.from({ length: MAX_CERT_IDS }, () => certId))).certIds).toHaveLength(MAX_CERT_IDS);
      const md5 = Buffer.from(certId.toString('hex').replace('06052b0e03021a', '06082a864886f70d0205'), 'hex');
      expect(malformedOf(requestWith([md5]))).toBe('malformedRequest');
      const critical = sequence(encodeOid('1.2.3.4'), tlv(TAG.boolean, Buffer.from([0xff])), tlv(TAG.octetString, Buffer.from([5, 0])));
      expect(malformedOf(requestWith([certId], [critical]))).toBe('malformedRequest');
      const nonCritical = sequence(encodeOid('1.2.3.4'), tlv(TAG.octetString, Buffer.from([5, 0])));
      expect(parseOcspRequest(requestWith([certId], [nonCritical])).certIds).toHaveLength(1);
    });

    it('random bytes and random mutations of a real request never throw anything else', () => {
      const good = opensslRequest(file('ec-ca.pem'), [leaf.path, leaf2.path]);
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
          try {
            parseOcspRequest(Buffer.from(bytes));
          } catch (error) {
            if (!(error instanceof OcspRequestError)) throw error;
          }
        }),
        { numRuns: 2000 },
      );
      fc.assert(
        fc.property(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 }), (index, value) => {
          const mutated = Buffer.from(good);
          mutated[index] = value;
          try {
            parseOcspRequest(mutated);
          } catch (error) {
            if (!(error instanceof OcspRequestError)) throw error;
          }
        }),
        { numRuns: 3000 },
      );
    });
  });

  it('decodes the GET form: percent-encoded or raw base64, and base64url', () => {
    const der = opensslRequest(file('ec-ca.pem'), [leaf.path]);
    const base64 = der.toString('base64');
    expect(decodeGetRequest(encodeURIComponent(base64))).toEqual(der);
    expect(decodeGetRequest(base64)).toEqual(der);
    expect(decodeGetRequest(der.toString('base64url'))).toEqual(der);
    expect(() => decodeGetRequest('%zz')).toThrow(OcspRequestError);
    expect(() => decodeGetRequest('not base64!')).toThrow(OcspRequestError);
    expect(() => decodeGetRequest('')).toThrow(OcspRequestError);
  });

  it('names the responder by key: SHA-1 of the CA public key bits, as openssl computes it', () => {
    const fromOpenssl = openssl('x509', '-in', file('ec-ca.pem'), '-noout', '-pubkey');
    const key = Buffer.from(fromOpenssl.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    expect(key.equals(ecCa.publicKey)).toBe(true);
    const bits = children(only(ecCa.publicKey, TAG.sequence).value)[1]!.value.subarray(1);
    expect(responderKeyHash(ecCa.publicKey)).toEqual(createHash('sha1').update(bits).digest());
  });
});
