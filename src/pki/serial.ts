/**
 * Certificate serial numbers: 20 random bytes from the CSPRNG with the top bit cleared, so
 * the DER INTEGER is positive and at most 20 octets (RFC 5280 §4.1.2.2), and a first byte of
 * at least 0x10, so the encoding is exactly 20 octets and the 40 lowercase hex characters the
 * API returns have no leading zero digit. Tools disagree on how they print a number with one:
 * `openssl crl -text` keeps it ("0E43..."), other tools and relying parties drop it
 * ("E43..."), and a serial that reads the same everywhere is the one to compare on.
 */
import { randomFillSync } from 'node:crypto';

/**
 * Random bytes are drawn 4 KiB at a time and handed out 20 at a time, as node:crypto's
 * randomUUID does: one call into the CSPRNG costs about as much as 4 KiB of its output (~5 µs
 * here), and a serial is issued on every certificate request. The bytes are not secret (each
 * one is published in its certificate); each is handed out once.
 */
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

function randomSerialBytes(): Buffer {
  if (poolOffset + 20 > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  // A copy: the caller keeps it while the pool is refilled.
  const bytes = Buffer.from(pool.subarray(poolOffset, poolOffset + 20));
  poolOffset += 20;
  return bytes;
}

export function newSerialNumber(): Buffer {
  for (;;) {
    const serial = randomSerialBytes();
    serial[0]! &= 0x7f;
    if (serial[0]! >= 0x10) return serial;
  }
}
