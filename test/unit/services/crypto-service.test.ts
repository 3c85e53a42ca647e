/**
 * The KMS operations' own logic (services/crypto-service.ts) on the in-memory FakeToken, in
 * milliseconds: which digest reaches the token (hashed here, cut to the curve order, or the
 * caller's digest when isDigest), the DER an ECDSA signature leaves as, the ciphertext format
 * and its version, and the refusals that never reach the token. The same operations run on
 * SoftHSM2 in test/integration/signatures.test.ts and ciphertext.test.ts.
 */
import { createHash, randomUUID, verify } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { KEY_SPECS, type KeyAlgorithm } from '../../../src/algorithms.js';
import { AppError } from '../../../src/errors.js';
import { createCryptoService } from '../../../src/services/crypto-service.js';
import { ecdsaDerToRaw } from '../../../src/services/kms-encoding.js';
import type { Principal } from '../../../src/services/permissions.js';
import type { UsableKey } from '../../../src/services/key-service.js';
import { FakeToken } from '../../helpers/fake-token.js';

const principal: Principal = { identityId: 'i', name: 'tester', permissions: [{ projectId: '*', actions: ['*'] }] };

let token: FakeToken;
let keys: Map<string, UsableKey[]>;
let crypto: ReturnType<typeof createCryptoService>;

async function makeKey(algorithm: KeyAlgorithm, versions = 1): Promise<string> {
  const id = randomUUID();
  const spec = KEY_SPECS[algorithm];
  const list: UsableKey[] = [];
  for (let version = 1; version <= versions; version++) {
    const objectId = Buffer.from(randomUUID().replaceAll('-', ''), 'hex');
    const { publicKeySpki } = await token.generateKey(objectId, `test:${id}`, spec);
    const now = new Date().toISOString();
    list.push({
      key: { id, orgId: 'o', projectId: 'p', name: 'k', description: '', isDisabled: false, keyUsage: spec.kind === 'aes' ? 'encrypt-decrypt' : 'sign-verify', algorithm, version: versions, state: 'active', createdAt: now, updatedAt: now },
      version: { keyId: id, version, objectId, publicKey: publicKeySpki ?? null, state: 'active' },
    });
  }
  keys.set(id, list);
  return id;
}

const refusal = async (promise: Promise<unknown>, status: number, text: RegExp) => {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(AppError);
  expect((error as AppError).statusCode).toBe(status);
  expect((error as AppError).message).toMatch(text);
};

beforeEach(() => {
  token = new FakeToken();
  keys = new Map();
  crypto = createCryptoService({
    token,
    keys: {
      // The newest version unless one is named, as the key service answers.
      usableKey: async (_principal, keyId, _action, _usage, version) => {
        const list = keys.get(keyId)!;
        return version === undefined ? list[list.length - 1]! : list[version - 1]!;
      },
    },
  });
});

describe('crypto service on a fake token', () => {
  it('encrypts with a fresh IV each time and decrypts with the version the ciphertext names', async () => {
    const keyId = await makeKey('aes-256-gcm', 2);
    const plaintext = Buffer.from('hello token');
    const first = await crypto.encrypt(principal, keyId, plaintext);
    const second = await crypto.encrypt(principal, keyId, plaintext);
    expect(first.equals(second)).toBe(false);
    const ivs = token.calls.filter((call) => call.op === 'encryptAesGcm').map((call) => call.iv!.toString('hex'));
    expect(new Set(ivs).size).toBe(2);
    // Version 2 is current: its trailer says so (v02 and the version number).
    expect(first.subarray(first.length - 3).toString()).toBe('v02');
    expect((await crypto.decrypt(principal, keyId, first)).equals(plaintext)).toBe(true);

    const tampered = Buffer.from(first);
    tampered[0]! ^= 1;
    await refusal(crypto.decrypt(principal, keyId, tampered), 400, /authentication failed/);
    await refusal(crypto.decrypt(principal, keyId, Buffer.from('not a ciphertext')), 400, /not a ciphertext/);
  });

  it('hands ECDSA the hash of the data cut to the curve order, and answers DER', async () => {
    const keyId = await makeKey('ECC_NIST_P521');
    const data = Buffer.from('message');
    const signature = await crypto.sign(principal, keyId, { signingAlgorithm: 'ECDSA_SHA_512', isDigest: false, data });
    const call = token.calls.find((entry) => entry.op === 'signDigest')!;
    // SHA-512 is 64 bytes, P-521's order 66: nothing to cut; SHA-512 of the data as it is.
    expect(call.digest!.equals(createHash('sha512').update(data).digest())).toBe(true);
    expect(signature[0]).toBe(0x30);
    const raw = ecdsaDerToRaw(signature, 66)!;
    expect(verify('sha256', call.digest!, { key: token.publicKeyOf(keys.get(keyId)![0]!.version.objectId), dsaEncoding: 'ieee-p1363' }, raw)).toBe(true);

    const p256 = await makeKey('ECC_NIST_P256');
    await crypto.sign(principal, p256, { signingAlgorithm: 'ECDSA_SHA_512', isDigest: false, data });
    // SHA-512 cut to P-256's 32 bytes (FIPS 186-4 §6.4), not left to the token.
    expect(token.calls.at(-1)!.digest!.equals(createHash('sha512').update(data).digest().subarray(0, 32))).toBe(true);
  });

  it('signs a given digest as it is, and refuses one of the wrong length before the token', async () => {
    const keyId = await makeKey('RSA_2048');
    const digest = createHash('sha256').update('payload').digest();
    const signature = await crypto.sign(principal, keyId, { signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256', isDigest: true, data: digest });
    expect(verify('sha256', Buffer.from('payload'), token.publicKeyOf(keys.get(keyId)![0]!.version.objectId), signature)).toBe(true);
    expect(await crypto.verify(principal, keyId, { signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256', isDigest: false, data: Buffer.from('payload'), signature })).toBe(true);

    const before = token.calls.length;
    await refusal(crypto.sign(principal, keyId, { signingAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256', isDigest: true, data: digest.subarray(1) }), 400, /32 bytes/);
    await refusal(crypto.sign(principal, keyId, { signingAlgorithm: 'ECDSA_SHA_256', isDigest: false, data: digest }), 400, /not supported by RSA_2048/);
    expect(token.calls.length).toBe(before);
  });

  it('signs the message itself with Ed25519, and refuses isDigest naming why', async () => {
    const keyId = await makeKey('ED25519');
    const data = Buffer.from('pure eddsa');
    const signature = await crypto.sign(principal, keyId, { signingAlgorithm: 'ED25519', isDigest: false, data });
    expect(token.calls.at(-1)!.digest!.equals(data)).toBe(true);
    expect(verify(null, data, token.publicKeyOf(keys.get(keyId)![0]!.version.objectId), signature)).toBe(true);
    await refusal(crypto.sign(principal, keyId, { signingAlgorithm: 'ED25519', isDigest: true, data: createHash('sha512').update(data).digest() }), 400, /signs the message itself/);
    // A signature of the wrong length is false without asking the token.
    const before = token.calls.length;
    expect(await crypto.verify(principal, keyId, { signingAlgorithm: 'ED25519', isDigest: false, data, signature: signature.subarray(1) })).toBe(false);
    expect(token.calls.length).toBe(before);
  });
});
