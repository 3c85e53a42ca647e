/**
 * Infisical's ciphertext format, byte by byte: IV (12) || AES-GCM body || tag (16) || "v01",
 * or || uint32 BE version || "v02" after a rotation; every ciphertext a key issued still
 * decrypts after rotations; anything tampered, truncated or foreign is a 400, never a 500.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, request, type ApiResponse } from '../helpers/http.js';
import { expectSpecEnvelope } from '../helpers/envelope.js';
import { startTestService, type TestService } from '../helpers/service.js';

const KEYS = '/api/v1/kms/keys';
const IV = 12;
const TAG = 16;
const MiB = 1024 * 1024;

const b64 = (value: Buffer) => value.toString('base64');

/** A 400 in the error envelope (never a 500, never a bare body). */


function expectBadRequest(res: ApiResponse, what: string): void {
  expect(res.status, `${what}: ${res.status} ${JSON.stringify(res.body)?.slice(0, 300)}`).toBe(400);
  expectSpecEnvelope(res);
  expect(Object.keys(res.body).sort()).toEqual(['error', 'message', 'reqId', 'statusCode']);
  expect(res.body).toMatchObject({ statusCode: 400, error: 'BadRequest' });
  expect(typeof res.body.message).toBe('string');
  expect(res.body.reqId).toBe(res.headers.get('x-request-id'));
  // Nothing of the token's internals leaks.
  expect(res.body.message).not.toMatch(/CKR_|pkcs|stack|at \w+ \(/i);
}

function flip(buffer: Buffer, index: number, mask = 0x01): Buffer {
  const copy = Buffer.from(buffer);
  copy[index] = copy[index]! ^ mask;
  return copy;
}

describe('KMS ciphertext', () => {
  let svc: TestService;
  let token: string;

  const createKey = async (name: string, extra: Record<string, unknown> = {}) => {
    const res = await request(svc.url, 'POST', KEYS, { token, body: { projectId: 'default', name, ...extra } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.key.id as string;
  };
  const encrypt = async (keyId: string, plaintext: Buffer): Promise<Buffer> => {
    const res = await request(svc.url, 'POST', `${KEYS}/${keyId}/encrypt`, { token, body: { plaintext: b64(plaintext) } });
    expect(res.status, JSON.stringify(res.body)?.slice(0, 300)).toBe(200);
    expect(Object.keys(res.body)).toEqual(['ciphertext']);
    expect(res.body.ciphertext).toMatch(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/);
    return Buffer.from(res.body.ciphertext, 'base64');
  };
  const decrypt = (keyId: string, ciphertext: Buffer) => request(svc.url, 'POST', `${KEYS}/${keyId}/decrypt`, { token, body: { ciphertext: b64(ciphertext) } });
  const decryptOk = async (keyId: string, ciphertext: Buffer): Promise<Buffer> => {
    const res = await decrypt(keyId, ciphertext);
    expect(res.status, JSON.stringify(res.body)?.slice(0, 300)).toBe(200);
    expect(Object.keys(res.body)).toEqual(['plaintext']);
    return Buffer.from(res.body.plaintext, 'base64');
  };
  const rotate = async (keyId: string) => {
    const res = await request(svc.url, 'POST', `${KEYS}/${keyId}/rotate`, { token });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.key.version as number;
  };

  beforeAll(async () => {
    svc = await startTestService();
    token = await login(svc.url, svc.admin);
  });
  afterAll(async () => {
    await svc?.close();
  });

  describe('layout', () => {
    it('version 1: IV(12) || body(n) || tag(16) || "v01"', async () => {
      const key = await createKey('layout-v1');
      for (const n of [0, 1, 15, 16, 17, 100, 4096]) {
        const plaintext = randomBytes(n);
        const ct = await encrypt(key, plaintext);
        expect(ct.length, `n=${n}`).toBe(IV + n + TAG + 3);
        expect(ct.subarray(-3).toString('latin1')).toBe('v01');
        expect((await decryptOk(key, ct)).equals(plaintext)).toBe(true);
      }
    });

    it('aes-128-gcm keys use the same layout', async () => {
      const key = await createKey('layout-128', { encryptionAlgorithm: 'aes-128-gcm' });
      const plaintext = Buffer.from('sixteen-byte key');
      const ct = await encrypt(key, plaintext);
      expect(ct.length).toBe(IV + plaintext.length + TAG + 3);
      expect(ct.subarray(-3).toString('latin1')).toBe('v01');
      expect((await decryptOk(key, ct)).equals(plaintext)).toBe(true);
    });

    it('after rotation: ... || tag || uint32 BE version || "v02"', async () => {
      const key = await createKey('layout-v2');
      const plaintext = Buffer.from('rotated plaintext');
      expect(await rotate(key)).toBe(2);
      const ct2 = await encrypt(key, plaintext);
      expect(ct2.length).toBe(IV + plaintext.length + TAG + 4 + 3);
      expect(ct2.subarray(-3).toString('latin1')).toBe('v02');
      expect(ct2.readUInt32BE(ct2.length - 7)).toBe(2);
      expect((await decryptOk(key, ct2)).equals(plaintext)).toBe(true);
      expect(await rotate(key)).toBe(3);
      const ct3 = await encrypt(key, plaintext);
      expect(ct3.length).toBe(IV + plaintext.length + TAG + 4 + 3);
      expect(ct3.readUInt32BE(ct3.length - 7)).toBe(3);
      expect(ct3.subarray(-3).toString('latin1')).toBe('v02');
    });

    it('the IV is fresh for every encryption of the same plaintext', async () => {
      const key = await createKey('fresh-iv');
      const plaintext = Buffer.from('same every time');
      const cts = await Promise.all(Array.from({ length: 8 }, () => encrypt(key, plaintext)));
      const ivs = new Set(cts.map((ct) => ct.subarray(0, IV).toString('hex')));
      expect(ivs.size).toBe(cts.length);
      const bodies = new Set(cts.map((ct) => ct.subarray(IV, -3).toString('hex')));
      expect(bodies.size).toBe(cts.length);
      for (const ct of cts) expect((await decryptOk(key, ct)).equals(plaintext)).toBe(true);
    });

    it('the ciphertext is not the plaintext in the clear', async () => {
      const key = await createKey('not-clear');
      const plaintext = Buffer.from('a very recognisable plaintext string, repeated: '.repeat(4));
      const ct = await encrypt(key, plaintext);
      expect(ct.includes(plaintext.subarray(0, 16))).toBe(false);
      expect(ct.subarray(IV, IV + plaintext.length).equals(plaintext)).toBe(false);
    });
  });

  describe('round trips', () => {
    it('an empty plaintext', async () => {
      const key = await createKey('empty');
      const ct = await encrypt(key, Buffer.alloc(0));
      expect(ct.length).toBe(IV + TAG + 3);
      const res = await decrypt(key, ct);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ plaintext: '' });
    });

    it('a 1 MiB plaintext', async () => {
      const key = await createKey('one-mib');
      const plaintext = randomBytes(MiB);
      const ct = await encrypt(key, plaintext);
      expect(ct.length).toBe(IV + MiB + TAG + 3);
      expect((await decryptOk(key, ct)).equals(plaintext)).toBe(true);
      // And after a rotation, with the longer trailer.
      await rotate(key);
      const ct2 = await encrypt(key, plaintext);
      expect(ct2.length).toBe(IV + MiB + TAG + 7);
      expect((await decryptOk(key, ct2)).equals(plaintext)).toBe(true);
    });

    it('old ciphertexts (v01, and v02 of version 2) still decrypt after two rotations', async () => {
      const key = await createKey('old-versions');
      const p1 = Buffer.from('written under version 1');
      const p2 = Buffer.from('written under version 2');
      const p3 = Buffer.from('written under version 3');
      const c1 = await encrypt(key, p1);
      await rotate(key);
      const c2 = await encrypt(key, p2);
      await rotate(key);
      const c3 = await encrypt(key, p3);
      expect(c1.subarray(-3).toString('latin1')).toBe('v01');
      expect(c2.readUInt32BE(c2.length - 7)).toBe(2);
      expect(c3.readUInt32BE(c3.length - 7)).toBe(3);
      expect((await decryptOk(key, c1)).equals(p1)).toBe(true);
      expect((await decryptOk(key, c2)).equals(p2)).toBe(true);
      expect((await decryptOk(key, c3)).equals(p3)).toBe(true);

      // Each version is a different key: relabelling a ciphertext with another version fails.
      const relabel = (ct: Buffer, version: number) => {
        const copy = Buffer.from(ct);
        copy.writeUInt32BE(version, copy.length - 7);
        return copy;
      };
      expectBadRequest(await decrypt(key, relabel(c2, 3)), 'v2 ciphertext labelled version 3');
      expectBadRequest(await decrypt(key, relabel(c3, 2)), 'v3 ciphertext labelled version 2');
      expectBadRequest(await decrypt(key, relabel(c3, 1)), 'v3 ciphertext labelled version 1');
      // The v01 body under a v02 trailer naming version 2 is not version 2's.
      expectBadRequest(await decrypt(key, Buffer.concat([c1.subarray(0, -3), Buffer.from([0, 0, 0, 2]), Buffer.from('v02')])), 'v1 body as version 2');
    });
  });

  describe('tampering is a 400, never a 500', () => {
    let key: string;
    let ct: Buffer;
    const plaintext = Buffer.from('tamper-evident');

    beforeAll(async () => {
      key = await createKey('tamper');
      ct = await encrypt(key, plaintext);
    });

    it('a flipped bit anywhere in IV, body or tag', async () => {
      const n = plaintext.length;
      for (let i = 0; i < IV + n + TAG; i++) {
        const region = i < IV ? 'IV' : i < IV + n ? 'body' : 'tag';
        expectBadRequest(await decrypt(key, flip(ct, i)), `${region} byte ${i} flipped`);
      }
      expectBadRequest(await decrypt(key, flip(ct, IV + n + TAG - 1, 0x80)), 'last tag bit');
      // The untouched ciphertext still decrypts: failed decrypts did not wedge the token sessions.
      expect((await decryptOk(key, ct)).equals(plaintext)).toBe(true);
    });

    it('truncated, extended, or with a wrong trailer', async () => {
      const n = plaintext.length;
      const cases: Array<[string, Buffer]> = [
        ['last byte dropped', ct.subarray(0, -1)],
        ['trailer dropped', ct.subarray(0, -3)],
        ['one tag byte dropped', Buffer.concat([ct.subarray(0, IV + n + TAG - 1), Buffer.from('v01')])],
        ['tag dropped', Buffer.concat([ct.subarray(0, IV + n), Buffer.from('v01')])],
        ['body byte dropped', Buffer.concat([ct.subarray(0, IV), ct.subarray(IV + 1)])],
        ['byte inserted', Buffer.concat([ct.subarray(0, IV + 2), Buffer.from([0x42]), ct.subarray(IV + 2)])],
        ['only IV and trailer', Buffer.concat([ct.subarray(0, IV), Buffer.from('v01')])],
        ['only the trailer', Buffer.from('v01')],
        ['trailer v03', Buffer.concat([ct.subarray(0, -3), Buffer.from('v03')])],
        ['trailer V01', Buffer.concat([ct.subarray(0, -3), Buffer.from('V01')])],
        ['trailer v00', Buffer.concat([ct.subarray(0, -3), Buffer.from('v00')])],
        ['no trailer, random bytes', randomBytes(64)],
        ['one byte', Buffer.from([1])],
        ['v02 with version 0', Buffer.concat([ct.subarray(0, -3), Buffer.from([0, 0, 0, 0]), Buffer.from('v02')])],
        ['v02 with a version that does not exist', Buffer.concat([ct.subarray(0, -3), Buffer.from([0, 0, 0, 9]), Buffer.from('v02')])],
        ['v02 with version 2^32-1', Buffer.concat([ct.subarray(0, -3), Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from('v02')])],
        ['v02 with a short version field', Buffer.concat([Buffer.from([0, 2]), Buffer.from('v02')])],
        ['doubled', Buffer.concat([ct, ct])],
      ];
      for (const [what, blob] of cases) expectBadRequest(await decrypt(key, blob), what);
      expect((await decryptOk(key, ct)).equals(plaintext)).toBe(true);
    });

    it('a ciphertext of key A given to key B', async () => {
      const other = await createKey('tamper-other');
      expectBadRequest(await decrypt(other, ct), 'A ciphertext to B');
      const fromOther = await encrypt(other, plaintext);
      expectBadRequest(await decrypt(key, fromOther), 'B ciphertext to A');
      // Also across versions: B rotated, its v02 ciphertext to A (which has no version 2).
      await rotate(other);
      const fromOtherV2 = await encrypt(other, plaintext);
      expectBadRequest(await decrypt(key, fromOtherV2), 'B v2 ciphertext to A');
      expect((await decryptOk(other, fromOtherV2)).equals(plaintext)).toBe(true);
    });

    it('a sign-verify key does not decrypt', async () => {
      const signer = await createKey('tamper-signer', { keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' });
      const res = await decrypt(signer, ct);
      expectBadRequest(res, 'decrypt with a sign-verify key');
      expect(res.body.message).toBe('Unsupported key type, expected encrypt-decrypt but got sign-verify');
    });

    it('many failures in a row leave the service healthy', async () => {
      const results = await Promise.all(Array.from({ length: 24 }, (_, i) => decrypt(key, flip(ct, i % (ct.length - 3)))));
      for (const res of results) expectBadRequest(res, 'concurrent tampered');
      const good = await Promise.all(Array.from({ length: 8 }, () => decryptOk(key, ct)));
      for (const p of good) expect(p.equals(plaintext)).toBe(true);
      const ready = await request(svc.url, 'GET', '/readyz');
      expect(ready.status).toBe(200);
    });
  });
});
