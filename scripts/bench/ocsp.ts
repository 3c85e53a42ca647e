/**
 * OCSP in the benchmark: the DER request every load request carries (one CertID, SHA-1 as
 * clients send it, with or without a nonce), and the check of one sample answer: successful,
 * "good" for that serial, and signed by the CA's key (verified here with node:crypto).
 */
import { createHash, createPublicKey, randomBytes, verify, X509Certificate } from 'node:crypto';
import { children, encodeOid, only, sequence, TAG, tlv } from '../../src/pki/der.js';

/** Subject Name DER and SubjectPublicKeyInfo DER of a certificate. */
function issuerParts(caDer: Buffer): { name: Buffer; spki: Buffer } {
  const [tbs] = children(only(caDer, TAG.sequence).value);
  const fields = children(tbs!.value);
  const offset = fields[0]!.tag === 0xa0 ? 1 : 0;
  return { name: Buffer.from(fields[offset + 4]!.raw), spki: Buffer.from(fields[offset + 5]!.raw) };
}

export function ocspRequest(caDer: Buffer, serialHex: string, nonce: boolean): Buffer {
  const { name, spki } = issuerParts(caDer);
  const keyBits = children(only(spki, TAG.sequence).value)[1]!.value.subarray(1);
  const certId = sequence(
    sequence(encodeOid('1.3.14.3.2.26'), Buffer.from([0x05, 0x00])),
    tlv(TAG.octetString, createHash('sha1').update(name).digest()),
    tlv(TAG.octetString, createHash('sha1').update(keyBits).digest()),
    tlv(TAG.integer, Buffer.from(serialHex, 'hex')),
  );
  const extensions = nonce ? [tlv(0xa2, sequence(sequence(encodeOid('1.3.6.1.5.5.7.48.1.2'), tlv(TAG.octetString, tlv(TAG.octetString, randomBytes(32))))))] : [];
  return sequence(sequence(sequence(sequence(certId)), ...extensions));
}

/** Throws unless the answer is a successful, CA-signed "good" for the request's certificate. */
export function checkOcspAnswer(answer: Buffer, caDer: Buffer): string {
  const [status, bytes] = children(only(answer, TAG.sequence).value);
  if (!status || status.value[0] !== 0) throw new Error(`OCSP answered status ${status?.value[0]}`);
  const [, response] = children(children(bytes!.value)[0]!.value);
  const [tbs, , signature] = children(only(response!.value, TAG.sequence).value);
  const [, , responses] = children(tbs!.value);
  const [single] = children(responses!.value);
  const certStatus = children(single!.value)[1]!;
  if (certStatus.tag !== 0x80) throw new Error(`OCSP status is not good (tag ${certStatus.tag.toString(16)})`);
  const key = createPublicKey(new X509Certificate(caDer).publicKey.export({ type: 'spki', format: 'pem' }));
  if (!verify('sha256', tbs!.raw, { key, dsaEncoding: 'der' }, signature!.value.subarray(1))) throw new Error('the OCSP answer does not verify under the CA key');
  return `successful, good, ${answer.length}-byte answer, DER ECDSA signature verifies under the CA`;
}
