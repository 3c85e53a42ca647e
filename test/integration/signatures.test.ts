/**
 * Signatures over plain HTTP, checked by verifiers that owe nothing to the service: the
 * `openssl` CLI (public key converted from the served DER by openssl itself) and Node's crypto.
 * Then the service's own verify endpoint on good and bad signatures, digest-length checks,
 * the signing-algorithm lists, and algorithm/key family mismatches.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { constants, createHash, createPublicKey, randomBytes, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, request, type ApiResponse } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';

type Hash = 'sha256' | 'sha384' | 'sha512';
const HASH_BYTES: Record<Hash, number> = { sha256: 32, sha384: 48, sha512: 64 };

const RSA_ALGORITHMS = [
  'RSASSA_PSS_SHA_512',
  'RSASSA_PSS_SHA_384',
  'RSASSA_PSS_SHA_256',
  'RSASSA_PKCS1_V1_5_SHA_512',
  'RSASSA_PKCS1_V1_5_SHA_384',
  'RSASSA_PKCS1_V1_5_SHA_256',
];
const EC_ALGORITHMS = ['ECDSA_SHA_512', 'ECDSA_SHA_384', 'ECDSA_SHA_256'];

/** The keys this file uses: two of a kind where another key's signature is needed. */
const KEYS = {
  rsa: 'RSA_2048',
  rsaOther: 'RSA_2048',
  p256: 'ECC_NIST_P256',
  p256Other: 'ECC_NIST_P256',
  p384: 'ECC_NIST_P384',
  p521: 'ECC_NIST_P521',
} as const;
type KeyName = keyof typeof KEYS;

function hashOf(signingAlgorithm: string): Hash {
  const match = /SHA_(256|384|512)$/.exec(signingAlgorithm);
  if (!match) throw new Error(`no hash in ${signingAlgorithm}`);
  return `sha${match[1]}` as Hash;
}

function nodeVerifies(signingAlgorithm: string, key: KeyObject, data: Buffer, signature: Buffer): boolean {
  const hash = hashOf(signingAlgorithm);
  if (signingAlgorithm.startsWith('RSASSA_PSS_')) {
    return nodeVerify(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_BYTES[hash] }, signature);
  }
  if (signingAlgorithm.startsWith('RSASSA_PKCS1_V1_5_')) return nodeVerify(hash, data, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
  return nodeVerify(hash, data, { key, dsaEncoding: 'der' }, signature);
}

const b64 = (bytes: Buffer) => bytes.toString('base64');

function expectEnvelope(response: ApiResponse, status: number, error: string) {
  expect(response.status).toBe(status);
  expect(Object.keys(response.body).sort()).toEqual(['error', 'message', 'reqId', 'statusCode']);
  expect(response.body).toMatchObject({ statusCode: status, error });
  expect(typeof response.body.message).toBe('string');
  expect(response.headers.get('x-request-id')).toBe(response.body.reqId);
}

describe('KMS signatures over HTTP', () => {
  let svc: TestService;
  let token: string;
  let dir: string;
  const ids = {} as Record<KeyName, string>;
  const publicKeys = {} as Record<KeyName, KeyObject>;
  const pemPaths = {} as Record<KeyName, string>;
  let fileCounter = 0;

  const sign = (key: KeyName, signingAlgorithm: string, data: Buffer, isDigest?: boolean) =>
    request(svc.url, 'POST', `/api/v1/kms/keys/${ids[key]}/sign`, { token, body: { signingAlgorithm, data: b64(data), ...(isDigest === undefined ? {} : { isDigest }) } });

  const verify = (key: KeyName, signingAlgorithm: string, data: Buffer, signature: Buffer, isDigest?: boolean) =>
    request(svc.url, 'POST', `/api/v1/kms/keys/${ids[key]}/verify`, {
      token,
      body: { signingAlgorithm, data: b64(data), signature: b64(signature), ...(isDigest === undefined ? {} : { isDigest }) },
    });

  async function signOk(key: KeyName, signingAlgorithm: string, data: Buffer, isDigest?: boolean): Promise<Buffer> {
    const response = await sign(key, signingAlgorithm, data, isDigest);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return Buffer.from(response.body.signature, 'base64');
  }

  async function verifyAnswer(key: KeyName, signingAlgorithm: string, data: Buffer, signature: Buffer, isDigest?: boolean): Promise<boolean> {
    const response = await verify(key, signingAlgorithm, data, signature, isDigest);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    expect(response.body).toEqual({ signatureValid: expect.any(Boolean), keyId: ids[key], signingAlgorithm });
    return response.body.signatureValid;
  }

  /** `openssl dgst -verify`; returns its combined output and exit status. */
  function opensslVerify(key: KeyName, signingAlgorithm: string, data: Buffer, signature: Buffer): { ok: boolean; output: string } {
    const n = fileCounter++;
    const dataPath = join(dir, `data-${n}.bin`);
    const sigPath = join(dir, `sig-${n}.bin`);
    writeFileSync(dataPath, data);
    writeFileSync(sigPath, signature);
    const args = ['dgst', `-${hashOf(signingAlgorithm)}`, '-verify', pemPaths[key], '-signature', sigPath];
    if (signingAlgorithm.startsWith('RSASSA_PSS_')) args.push('-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:-1');
    args.push(dataPath);
    const run = spawnSync('openssl', args, { encoding: 'utf8' });
    return { ok: run.status === 0, output: `${run.stdout}${run.stderr}` };
  }

  beforeAll(async () => {
    svc = await startTestService();
    token = await login(svc.url, svc.admin);
    dir = mkdtempSync(join(tmpdir(), 'hsm-signer-sig-'));
    await Promise.all(
      (Object.keys(KEYS) as KeyName[]).map(async (name) => {
        const created = await request(svc.url, 'POST', '/api/v1/kms/keys', {
          token,
          body: { projectId: svc.admin.projectId, name: `sig-${name.toLowerCase()}`, keyUsage: 'sign-verify', encryptionAlgorithm: KEYS[name] },
        });
        if (created.status !== 200) throw new Error(`create ${name}: ${created.status} ${JSON.stringify(created.body)}`);
        ids[name] = created.body.key.id;
        const pub = await request(svc.url, 'GET', `/api/v1/kms/keys/${ids[name]}/public-key`, { token });
        if (pub.status !== 200) throw new Error(`public key ${name}: ${pub.status} ${JSON.stringify(pub.body)}`);
        const der = Buffer.from(pub.body.publicKey, 'base64');
        publicKeys[name] = createPublicKey({ key: der, format: 'der', type: 'spki' });
        // openssl converts the served DER itself, so the PEM owes nothing to Node.
        const derPath = join(dir, `${name}.der`);
        writeFileSync(derPath, der);
        pemPaths[name] = join(dir, `${name}.pem`);
        execFileSync('openssl', ['pkey', '-pubin', '-inform', 'DER', '-in', derPath, '-out', pemPaths[name]]);
      }),
    );
  });

  afterAll(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    await svc?.close();
  });

  describe('signing-algorithms', () => {
    it('lists the RSA algorithms in the documented order', async () => {
      for (const key of ['rsa', 'rsaOther'] as const) {
        const response = await request(svc.url, 'GET', `/api/v1/kms/keys/${ids[key]}/signing-algorithms`, { token });
        expect(response.status).toBe(200);
        expect(response.body).toEqual({ signingAlgorithms: RSA_ALGORITHMS });
      }
    });

    it('lists the ECDSA algorithms in the documented order for every curve', async () => {
      for (const key of ['p256', 'p384', 'p521'] as const) {
        const response = await request(svc.url, 'GET', `/api/v1/kms/keys/${ids[key]}/signing-algorithms`, { token });
        expect(response.status).toBe(200);
        expect(response.body).toEqual({ signingAlgorithms: EC_ALGORITHMS });
      }
    });
  });

  describe('every signing algorithm, verified by the openssl CLI', () => {
    const cases: Array<{ signingAlgorithm: string; key: KeyName }> = [
      ...RSA_ALGORITHMS.map((signingAlgorithm) => ({ signingAlgorithm, key: 'rsa' as const })),
      { signingAlgorithm: 'ECDSA_SHA_256', key: 'p256' },
      { signingAlgorithm: 'ECDSA_SHA_384', key: 'p384' },
      { signingAlgorithm: 'ECDSA_SHA_512', key: 'p521' },
    ];

    it('covers all nine algorithms', () => {
      expect(cases.map((c) => c.signingAlgorithm).sort()).toEqual([...RSA_ALGORITHMS, ...EC_ALGORITHMS].sort());
    });

    it.each(cases)('$signingAlgorithm on $key', async ({ signingAlgorithm, key }) => {
      const data = randomBytes(777);
      const response = await sign(key, signingAlgorithm, data);
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      expect(Object.keys(response.body).sort()).toEqual(['keyId', 'signature', 'signingAlgorithm']);
      expect(response.body.keyId).toBe(ids[key]);
      expect(response.body.signingAlgorithm).toBe(signingAlgorithm);
      const signature = Buffer.from(response.body.signature, 'base64');
      expect(signature.toString('base64')).toBe(response.body.signature);
      if (key === 'rsa') expect(signature.length).toBe(256);

      const verified = opensslVerify(key, signingAlgorithm, data, signature);
      expect(verified.output).toContain('Verified OK');
      expect(verified.ok).toBe(true);
      // The same verifier refuses other data, so the check above can fail.
      const refused = opensslVerify(key, signingAlgorithm, Buffer.concat([data, Buffer.from('!')]), signature);
      expect(refused.output).not.toContain('Verified OK');
      expect(refused.ok).toBe(false);

      expect(nodeVerifies(signingAlgorithm, publicKeys[key], data, signature)).toBe(true);
      if (signingAlgorithm.startsWith('RSASSA_PSS_')) {
        // Salt length exactly the hash length: Node with any other explicit salt length refuses.
        const hash = hashOf(signingAlgorithm);
        const otherSalt = HASH_BYTES[hash] === 32 ? 64 : 32;
        expect(nodeVerify(hash, data, { key: publicKeys[key], padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: otherSalt }, signature)).toBe(false);
      }
    });

    it.each([
      { signingAlgorithm: 'RSASSA_PSS_SHA_256', key: 'rsa' as const },
      { signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_384', key: 'rsa' as const },
      { signingAlgorithm: 'ECDSA_SHA_256', key: 'p256' as const },
    ])('signs empty data with $signingAlgorithm (openssl verifies)', async ({ signingAlgorithm, key }) => {
      const signature = await signOk(key, signingAlgorithm, Buffer.alloc(0));
      const verified = opensslVerify(key, signingAlgorithm, Buffer.alloc(0), signature);
      expect(verified.output).toContain('Verified OK');
      expect(await verifyAnswer(key, signingAlgorithm, Buffer.alloc(0), signature)).toBe(true);
    });
  });

  describe('ECDSA hashes across curve sizes (Node crypto verifies)', () => {
    it.each([
      { signingAlgorithm: 'ECDSA_SHA_512', key: 'p256' as const },
      { signingAlgorithm: 'ECDSA_SHA_256', key: 'p521' as const },
      { signingAlgorithm: 'ECDSA_SHA_512', key: 'p384' as const },
      { signingAlgorithm: 'ECDSA_SHA_256', key: 'p384' as const },
      { signingAlgorithm: 'ECDSA_SHA_384', key: 'p256' as const },
    ])('$signingAlgorithm on $key', async ({ signingAlgorithm, key }) => {
      const data = randomBytes(300);
      const signature = await signOk(key, signingAlgorithm, data);
      expect(nodeVerifies(signingAlgorithm, publicKeys[key], data, signature)).toBe(true);
      expect(nodeVerifies(signingAlgorithm, publicKeys[key], randomBytes(300), signature)).toBe(false);
      expect(await verifyAnswer(key, signingAlgorithm, data, signature)).toBe(true);

      // The same over a digest computed here.
      const digest = createHash(hashOf(signingAlgorithm)).update(data).digest();
      const overDigest = await signOk(key, signingAlgorithm, digest, true);
      expect(nodeVerifies(signingAlgorithm, publicKeys[key], data, overDigest)).toBe(true);
      expect(await verifyAnswer(key, signingAlgorithm, digest, overDigest, true)).toBe(true);
    });
  });

  describe('verify endpoint', () => {
    const data = randomBytes(512);
    const good = {} as Record<'pss' | 'pkcs1' | 'ecdsa' | 'p521', Buffer>;

    beforeAll(async () => {
      good.pss = await signOk('rsa', 'RSASSA_PSS_SHA_256', data);
      good.pkcs1 = await signOk('rsa', 'RSASSA_PKCS1_V1_5_SHA_256', data);
      good.ecdsa = await signOk('p256', 'ECDSA_SHA_256', data);
      good.p521 = await signOk('p521', 'ECDSA_SHA_512', data);
    });

    const RSA_CASES = [
      { kind: 'pss' as const, signingAlgorithm: 'RSASSA_PSS_SHA_256' },
      { kind: 'pkcs1' as const, signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' },
    ];

    it('answers true for good signatures (independently checked too)', async () => {
      for (const { kind, signingAlgorithm } of RSA_CASES) {
        expect(nodeVerifies(signingAlgorithm, publicKeys.rsa, data, good[kind])).toBe(true);
        expect(await verifyAnswer('rsa', signingAlgorithm, data, good[kind])).toBe(true);
      }
      expect(nodeVerifies('ECDSA_SHA_256', publicKeys.p256, data, good.ecdsa)).toBe(true);
      expect(await verifyAnswer('p256', 'ECDSA_SHA_256', data, good.ecdsa)).toBe(true);
      expect(await verifyAnswer('p521', 'ECDSA_SHA_512', data, good.p521)).toBe(true);
    });

    it('answers false for a flipped bit in the signature', async () => {
      for (const { kind, signingAlgorithm } of RSA_CASES) {
        for (const index of [0, 100, 255]) {
          const flipped = Buffer.from(good[kind]);
          flipped[index]! ^= 0x01;
          expect(await verifyAnswer('rsa', signingAlgorithm, data, flipped), `${kind} byte ${index}`).toBe(false);
        }
      }
      // The last byte of s: the DER stays well formed, the value changes.
      for (const [key, signingAlgorithm, signature] of [
        ['p256', 'ECDSA_SHA_256', good.ecdsa],
        ['p521', 'ECDSA_SHA_512', good.p521],
      ] as const) {
        const flipped = Buffer.from(signature);
        flipped[flipped.length - 1]! ^= 0x01;
        expect(nodeVerifies(signingAlgorithm, publicKeys[key], data, flipped)).toBe(false);
        expect(await verifyAnswer(key, signingAlgorithm, data, flipped)).toBe(false);
      }
    });

    it('answers false for other data', async () => {
      const other = Buffer.from(data);
      other[0]! ^= 0x80;
      for (const { kind, signingAlgorithm } of RSA_CASES) expect(await verifyAnswer('rsa', signingAlgorithm, other, good[kind])).toBe(false);
      expect(await verifyAnswer('p256', 'ECDSA_SHA_256', other, good.ecdsa)).toBe(false);
      expect(await verifyAnswer('p256', 'ECDSA_SHA_256', Buffer.alloc(0), good.ecdsa)).toBe(false);
    });

    it('answers false for the same algorithm under another key', async () => {
      for (const { kind, signingAlgorithm } of RSA_CASES) {
        const others = await signOk('rsaOther', signingAlgorithm, data);
        expect(await verifyAnswer('rsaOther', signingAlgorithm, data, others)).toBe(true);
        expect(await verifyAnswer('rsa', signingAlgorithm, data, others)).toBe(false);
        expect(await verifyAnswer('rsaOther', signingAlgorithm, data, good[kind])).toBe(false);
      }
      const others = await signOk('p256Other', 'ECDSA_SHA_256', data);
      expect(await verifyAnswer('p256Other', 'ECDSA_SHA_256', data, others)).toBe(true);
      expect(await verifyAnswer('p256', 'ECDSA_SHA_256', data, others)).toBe(false);
      expect(await verifyAnswer('p256Other', 'ECDSA_SHA_256', data, good.ecdsa)).toBe(false);
    });

    it('answers false (200) for ECDSA signatures that are not a strict DER SEQUENCE {r, s}', async () => {
      const der = good.ecdsa;
      const rLength = der[3]!;
      const r = der.subarray(4, 4 + rLength);
      const s = der.subarray(4 + rLength + 2);
      const strip = (v: Buffer) => (v[0] === 0 ? v.subarray(1) : v);
      const raw = Buffer.concat([Buffer.alloc(32 - strip(r).length), strip(r), Buffer.alloc(32 - strip(s).length), strip(s)]);
      const seq = (...parts: Buffer[]) => {
        const body = Buffer.concat(parts);
        return Buffer.concat([Buffer.from([0x30, body.length]), body]);
      };
      const int = (v: Buffer) => Buffer.concat([Buffer.from([0x02, v.length]), v]);
      const garbage: Record<string, Buffer> = {
        'random bytes': randomBytes(71),
        'raw r||s of the good signature': raw,
        'truncated DER': der.subarray(0, der.length - 1),
        'DER with a trailing byte': Buffer.concat([der, Buffer.from([0])]),
        'empty SEQUENCE': Buffer.from([0x30, 0x00]),
        'SEQUENCE with r only': seq(int(r)),
        'wrong outer tag': Buffer.concat([Buffer.from([0x31]), der.subarray(1)]),
        'r = 0, s = 0': seq(int(Buffer.from([0])), int(Buffer.from([0]))),
        'negative r': seq(int(Buffer.from([0x80, ...randomBytes(31)])), int(s)),
        'non-minimal r (extra leading zero)': seq(int(Buffer.concat([Buffer.from([0, 0]), strip(r)])), int(s)),
        'r larger than the curve': seq(int(Buffer.concat([Buffer.from([0x01]), randomBytes(32)])), int(s)),
        'r = s = 2^256 - 1 (above the group order)': seq(int(Buffer.concat([Buffer.from([0]), Buffer.alloc(32, 0xff)])), int(Buffer.concat([Buffer.from([0]), Buffer.alloc(32, 0xff)]))),
        'single zero byte': Buffer.from([0]),
      };
      const answers: Record<string, unknown> = {};
      for (const [label, signature] of Object.entries(garbage)) {
        const response = await verify('p256', 'ECDSA_SHA_256', data, signature);
        answers[label] = response.status === 200 ? response.body.signatureValid : `HTTP ${response.status}`;
      }
      expect(answers).toEqual(Object.fromEntries(Object.keys(garbage).map((label) => [label, false])));
      // Control: the good DER still verifies.
      expect(await verifyAnswer('p256', 'ECDSA_SHA_256', data, der)).toBe(true);
    });

    it('answers false (200) for RSA signatures of the wrong length or out of range', async () => {
      const answers: Record<string, unknown> = {};
      for (const { kind, signingAlgorithm } of RSA_CASES) {
        const variants: Record<string, Buffer> = {
          'truncated by one byte': good[kind].subarray(0, 255),
          'truncated to half': good[kind].subarray(0, 128),
          'one byte longer': Buffer.concat([good[kind], Buffer.from([0])]),
          'leading zero byte added': Buffer.concat([Buffer.from([0]), good[kind]]),
          'all 0xff (above the modulus)': Buffer.alloc(256, 0xff),
          'all zero': Buffer.alloc(256),
          'a single byte': Buffer.from([1]),
        };
        for (const [label, signature] of Object.entries(variants)) {
          const response = await verify('rsa', signingAlgorithm, data, signature);
          answers[`${kind}: ${label}`] = response.status === 200 ? response.body.signatureValid : `HTTP ${response.status}`;
        }
      }
      expect(answers).toEqual(Object.fromEntries(Object.keys(answers).map((label) => [label, false])));
    });

    it('answers false when the algorithm differs from the one that signed (same family)', async () => {
      expect(await verifyAnswer('rsa', 'RSASSA_PKCS1_V1_5_SHA_256', data, good.pss)).toBe(false);
      expect(await verifyAnswer('rsa', 'RSASSA_PSS_SHA_256', data, good.pkcs1)).toBe(false);
      expect(await verifyAnswer('rsa', 'RSASSA_PSS_SHA_512', data, good.pss)).toBe(false);
      expect(await verifyAnswer('p256', 'ECDSA_SHA_384', data, good.ecdsa)).toBe(false);
    });
  });

  describe('isDigest', () => {
    it.each([
      { key: 'rsa' as const, signingAlgorithm: 'RSASSA_PSS_SHA_256', length: 48 },
      { key: 'rsa' as const, signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_512', length: 32 },
      { key: 'rsa' as const, signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_384', length: 0 },
      { key: 'p256' as const, signingAlgorithm: 'ECDSA_SHA_256', length: 33 },
      { key: 'p384' as const, signingAlgorithm: 'ECDSA_SHA_384', length: 64 },
      { key: 'p521' as const, signingAlgorithm: 'ECDSA_SHA_512', length: 66 },
    ])('$signingAlgorithm with a digest of $length bytes is a 400 (sign and verify)', async ({ key, signingAlgorithm, length }) => {
      const wrong = randomBytes(length);
      expectEnvelope(await sign(key, signingAlgorithm, wrong, true), 400, 'BadRequest');
      expectEnvelope(await verify(key, signingAlgorithm, wrong, randomBytes(key === 'rsa' ? 256 : 70), true), 400, 'BadRequest');
      // The same bytes as a message (isDigest false) are fine.
      const signature = await signOk(key, signingAlgorithm, wrong, false);
      expect(nodeVerifies(signingAlgorithm, publicKeys[key], wrong, signature)).toBe(true);
    });

    it('a digest of the right length signs and verifies like the message it digests', async () => {
      const data = randomBytes(100);
      for (const [key, signingAlgorithm] of [
        ['rsa', 'RSASSA_PSS_SHA_384'],
        ['rsa', 'RSASSA_PKCS1_V1_5_SHA_256'],
        ['p384', 'ECDSA_SHA_384'],
      ] as const) {
        const digest = createHash(hashOf(signingAlgorithm)).update(data).digest();
        const signature = await signOk(key, signingAlgorithm, digest, true);
        expect(nodeVerifies(signingAlgorithm, publicKeys[key], data, signature), signingAlgorithm).toBe(true);
        expect(await verifyAnswer(key, signingAlgorithm, data, signature, false)).toBe(true);
      }
    });
  });

  describe('algorithm family must match the key', () => {
    it.each([
      { key: 'rsa' as const, signingAlgorithm: 'ECDSA_SHA_256' },
      { key: 'rsa' as const, signingAlgorithm: 'ECDSA_SHA_512' },
      { key: 'p256' as const, signingAlgorithm: 'RSASSA_PSS_SHA_256' },
      { key: 'p521' as const, signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_512' },
    ])('$signingAlgorithm on $key is a 400 (sign and verify)', async ({ key, signingAlgorithm }) => {
      const data = randomBytes(32);
      expectEnvelope(await sign(key, signingAlgorithm, data), 400, 'BadRequest');
      expectEnvelope(await sign(key, signingAlgorithm, createHash(hashOf(signingAlgorithm)).update(data).digest(), true), 400, 'BadRequest');
      const someSignature = key === 'rsa' ? await signOk('p256', 'ECDSA_SHA_256', data) : await signOk('rsa', 'RSASSA_PSS_SHA_256', data);
      expectEnvelope(await verify(key, signingAlgorithm, data, someSignature), 400, 'BadRequest');
    });
  });
});
