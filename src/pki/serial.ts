/**
 * Certificate serial numbers: 20 random bytes from the CSPRNG with the top bit cleared, so
 * the DER INTEGER is positive and at most 20 octets (RFC 5280 §4.1.2.2), and a first byte of
 * at least 0x10, so the encoding is exactly 20 octets and the 40 lowercase hex characters the
 * API returns have no leading zero digit. Tools disagree on how they print a number with one:
 * `openssl crl -text` keeps it ("0E43..."), other tools and relying parties drop it
 * ("E43..."), and a serial that reads the same everywhere is the one to compare on.
 */
import { randomBytes } from 'node:crypto';

export function newSerialNumber(): Buffer {
  for (;;) {
    const serial = randomBytes(20);
    serial[0]! &= 0x7f;
    if (serial[0]! >= 0x10) return serial;
  }
}
