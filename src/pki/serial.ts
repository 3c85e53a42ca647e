/**
 * Certificate serial numbers: 20 random bytes from the CSPRNG with the top bit cleared, so
 * the DER INTEGER is positive and at most 20 octets (RFC 5280 §4.1.2.2), and a non-zero first
 * byte, so the encoding is exactly 20 octets and the 40 lowercase hex characters the API
 * returns are the serial OpenSSL prints.
 */
import { randomBytes } from 'node:crypto';

export function newSerialNumber(): Buffer {
  for (;;) {
    const serial = randomBytes(20);
    serial[0]! &= 0x7f;
    if (serial[0] !== 0) return serial;
  }
}
