/**
 * Infisical's KMS byte formats, so ciphertexts and signatures interoperate.
 *
 * Ciphertext: IV (12) || AES-GCM ciphertext || tag (16) || trailer, where the trailer is
 * "v01" for key version 1, and uint32 big-endian version || "v02" after a rotation. The
 * trailer names the key version that decrypts, so every ciphertext a key ever made still
 * decrypts after any number of rotations; decoding refuses anything shorter than IV + tag.
 *
 * ECDSA signatures: DER SEQUENCE { INTEGER r, INTEGER s } (a token returns raw r || s).
 */
import { GCM_IV_BYTES, GCM_TAG_BYTES } from '../pkcs11/mechanisms.js';

const V01 = Buffer.from('v01');
const V02 = Buffer.from('v02');

export function encodeCiphertext(version: number, iv: Buffer, ciphertextAndTag: Buffer): Buffer {
  if (version <= 1) return Buffer.concat([iv, ciphertextAndTag, V01]);
  const versionBytes = Buffer.alloc(4);
  versionBytes.writeUInt32BE(version);
  return Buffer.concat([iv, ciphertextAndTag, versionBytes, V02]);
}

export interface DecodedCiphertext {
  version: number;
  iv: Buffer;
  ciphertextAndTag: Buffer;
}

/** Undefined when the bytes cannot be one of our ciphertexts. */
export function decodeCiphertext(blob: Buffer): DecodedCiphertext | undefined {
  let version: number;
  let body: Buffer;
  const marker = blob.subarray(blob.length - 3);
  if (blob.length >= 3 && marker.equals(V01)) {
    version = 1;
    body = blob.subarray(0, blob.length - 3);
  } else if (blob.length >= 7 && marker.equals(V02)) {
    version = blob.readUInt32BE(blob.length - 7);
    body = blob.subarray(0, blob.length - 7);
  } else {
    return undefined;
  }
  if (version < 1 || body.length < GCM_IV_BYTES + GCM_TAG_BYTES) return undefined;
  return { version, iv: body.subarray(0, GCM_IV_BYTES), ciphertextAndTag: body.subarray(GCM_IV_BYTES) };
}

function derInteger(unsigned: Buffer): Buffer {
  let start = 0;
  while (start < unsigned.length - 1 && unsigned[start] === 0) start++;
  let value = unsigned.subarray(start);
  if (value[0]! & 0x80) value = Buffer.concat([Buffer.from([0]), value]);
  return Buffer.concat([Buffer.from([0x02]), derLength(value.length), value]);
}

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  if (length < 0x100) return Buffer.from([0x81, length]);
  return Buffer.from([0x82, length >> 8, length & 0xff]);
}

/** raw r || s (each half the same length) → DER. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}

/**
 * DER → raw r || s with each half `size` bytes; undefined for anything that is not a strict
 * DER encoding of two positive integers that fit (a verify of such input is simply false).
 */
export function ecdsaDerToRaw(der: Buffer, size: number): Buffer | undefined {
  let offset = 0;
  const readLength = (): number | undefined => {
    const first = der[offset++];
    if (first === undefined) return undefined;
    if (first < 0x80) return first;
    const count = first & 0x7f;
    if (count === 0 || count > 2) return undefined;
    let length = 0;
    for (let i = 0; i < count; i++) {
      const byte = der[offset++];
      if (byte === undefined) return undefined;
      length = length * 256 + byte;
    }
    return length < 0x80 || (count === 2 && length < 0x100) ? undefined : length;
  };
  const readInteger = (): Buffer | undefined => {
    if (der[offset++] !== 0x02) return undefined;
    const length = readLength();
    if (length === undefined || length === 0 || offset + length > der.length) return undefined;
    const value = der.subarray(offset, offset + length);
    offset += length;
    if (value[0]! & 0x80) return undefined; // negative
    if (value.length > 1 && value[0] === 0 && !(value[1]! & 0x80)) return undefined; // not minimal
    const stripped = value[0] === 0 && value.length > 1 ? value.subarray(1) : value;
    if (stripped.length > size) return undefined;
    return Buffer.concat([Buffer.alloc(size - stripped.length), stripped]);
  };
  if (der[offset++] !== 0x30) return undefined;
  const total = readLength();
  if (total === undefined || offset + total !== der.length) return undefined;
  const r = readInteger();
  const s = r && readInteger();
  if (!r || !s || offset !== der.length) return undefined;
  return Buffer.concat([r, s]);
}
