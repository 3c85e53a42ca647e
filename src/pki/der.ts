/**
 * A minimal strict DER reader and writer for the certificate hot path. @peculiar/asn1-schema
 * costs ~70 µs to parse a one-attribute Name and ~160 µs for a whole CSR on this machine
 * (measured), more than the main thread may spend on a certificate; walking the few
 * structures a CSR and a certificate have is a few µs. Only definite lengths and one-byte tags
 * are read: a CSR is DER (RFC 2986), and anything else is refused as unreadable.
 */

export interface Tlv {
  /** The identifier octet: class, constructed bit and tag number. */
  tag: number;
  /** The contents octets. */
  value: Buffer;
  /** The whole element, header included. */
  raw: Buffer;
}

export class DerError extends Error {}

export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  teletexString: 0x14,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  universalString: 0x1c,
  bmpString: 0x1e,
  sequence: 0x30,
  set: 0x31,
} as const;

/** Reads the element at `offset`; its end is `offset + raw.length`. */
export function readTlv(buffer: Buffer, offset = 0): Tlv {
  const tag = buffer[offset];
  if (tag === undefined) throw new DerError('truncated element');
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte tags are not used here');
  let first = buffer[offset + 1];
  if (first === undefined) throw new DerError('truncated length');
  let length = first;
  let header = 2;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 4) throw new DerError('indefinite or oversized length');
    length = 0;
    for (let i = 0; i < count; i++) {
      first = buffer[offset + 2 + i];
      if (first === undefined) throw new DerError('truncated length');
      length = length * 256 + first;
    }
    header += count;
  }
  const end = offset + header + length;
  if (end > buffer.length) throw new DerError('element runs past its container');
  return { tag, value: buffer.subarray(offset + header, end), raw: buffer.subarray(offset, end) };
}

/** The elements inside a constructed value, in order. */
export function children(value: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let offset = 0; offset < value.length; ) {
    const tlv = readTlv(value, offset);
    out.push(tlv);
    offset += tlv.raw.length;
  }
  return out;
}

/** The one element a buffer holds, with nothing after it. */
export function only(buffer: Buffer, tag?: number): Tlv {
  const tlv = readTlv(buffer);
  if (tlv.raw.length !== buffer.length) throw new DerError('data after the element');
  if (tag !== undefined && tlv.tag !== tag) throw new DerError(`expected tag ${tag}, got ${tlv.tag}`);
  return tlv;
}

export function expectTag(tlv: Tlv | undefined, tag: number): Tlv {
  if (!tlv || tlv.tag !== tag) throw new DerError(`expected tag ${tag}, got ${tlv?.tag}`);
  return tlv;
}

export function decodeOid(value: Buffer): string {
  if (value.length === 0 || (value[value.length - 1]! & 0x80) !== 0) throw new DerError('malformed OID');
  const arcs: Array<number | bigint> = [];
  let arc = 0;
  let big: bigint | undefined;
  for (const byte of value) {
    if (big !== undefined) big = big * 128n + BigInt(byte & 0x7f);
    else if (arc > 2 ** 45) big = BigInt(arc) * 128n + BigInt(byte & 0x7f);
    else arc = arc * 128 + (byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(big ?? arc);
      arc = 0;
      big = undefined;
    }
  }
  const head = arcs[0]!;
  const [first, second] = typeof head === 'bigint' ? [2, head - 80n] : head < 80 ? [Math.floor(head / 40), head % 40] : [2, head - 80];
  return [first, second, ...arcs.slice(1)].join('.');
}

/** Two's complement INTEGER that fits a double exactly; larger ones are refused. */
export function decodeSmallInteger(value: Buffer): number {
  if (value.length === 0 || value.length > 6) throw new DerError('INTEGER out of range');
  return value.readIntBE(0, value.length);
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

function lengthOctets(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One element: tag, length, and the contents given as parts. */
export function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const value = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), lengthOctets(value.length), value]);
}

export const sequence = (...parts: Buffer[]) => tlv(TAG.sequence, ...parts);

export function encodeOid(oid: string): Buffer {
  const arcs = oid.split('.').map((arc) => BigInt(arc));
  if (arcs.length < 2) throw new DerError(`malformed OID ${oid}`);
  const bytes: number[] = [];
  for (const arc of [arcs[0]! * 40n + arcs[1]!, ...arcs.slice(2)]) {
    const chunk = [Number(arc & 0x7fn)];
    for (let rest = arc >> 7n; rest > 0n; rest >>= 7n) chunk.unshift(Number(rest & 0x7fn) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(TAG.oid, Buffer.from(bytes));
}

export const DER_TRUE = Buffer.from([TAG.boolean, 0x01, 0xff]);
export const DER_NULL = Buffer.from([TAG.null, 0x00]);

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 §4.1.2.5); whole seconds, in UTC. */
export function encodeTime(date: Date): Buffer {
  const year = date.getUTCFullYear();
  const two = (n: number) => String(n).padStart(2, '0');
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  return year >= 1950 && year <= 2049 ? tlv(TAG.utcTime, Buffer.from(`${two(year % 100)}${rest}`, 'latin1')) : tlv(TAG.generalizedTime, Buffer.from(`${String(year).padStart(4, '0')}${rest}`, 'latin1'));
}

/** The DER of every PEM block with this label in `pem`, in order. */
export function pemToDer(pem: string, label: string): Buffer[] {
  const blocks = [...pem.matchAll(new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`, 'g'))];
  return blocks.map((block) => Buffer.from(block[1]!.replace(/\s/g, ''), 'base64'));
}
