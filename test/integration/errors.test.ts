/**
 * The error contract (docs/contract.md) for the KMS routes: every status this service can produce, the
 * envelope of each (validated against the spec's own schemas), the order of checks, request
 * ids, and that a refused request changes nothing.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdentity, login, request, type ApiResponse } from '../helpers/http.js';
import { envelopeValidator } from '../helpers/envelope.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects } from '../helpers/token-objects.js';

// ---------------------------------------------------------------------------------------------
// Envelope checks (spec schemas from test/fixtures/spec-error-schemas.json)
// ---------------------------------------------------------------------------------------------

const ERROR_WORD: Record<number, string> = {
  400: 'BadRequest',
  401: 'UnauthorizedError',
  403: 'PermissionDenied',
  404: 'NotFound',
  422: 'ValidationFailure',
  429: 'RateLimitExceeded',
  431: 'RequestHeaderFieldsTooLarge',
  500: 'InternalServerError',
  503: 'ServiceUnavailable',
};

/** Asserts status, spec envelope, `error` word and reqId/header agreement; returns the body. */
function expectError(res: ApiResponse, status: number, message?: string | RegExp): any {
  expect(res.status, `expected ${status}, got ${res.status}: ${JSON.stringify(res.body)?.slice(0, 500)}`).toBe(status);
  const validate = envelopeValidator(status);
  expect(validate(res.body), `envelope of ${status}: ${JSON.stringify(validate.errors)} in ${JSON.stringify(res.body)?.slice(0, 500)}`).toBe(true);
  expect(res.body.error).toBe(ERROR_WORD[status]);
  expect(res.body.statusCode).toBe(status);
  expect(typeof res.body.reqId).toBe('string');
  expect(res.body.reqId.length).toBeGreaterThan(0);
  expect(res.headers.get('x-request-id')).toBe(res.body.reqId);
  if (status === 422) {
    expect(Array.isArray(res.body.message), 'a 422 lists every problem as an array').toBe(true);
    expect(res.body.message.length).toBeGreaterThan(0);
    for (const problem of res.body.message) {
      expect(Object.keys(problem).sort()).toEqual(['message', 'path']);
      expect(typeof problem.path).toBe('string');
      expect(typeof problem.message).toBe('string');
    }
  } else {
    expect(typeof res.body.message).toBe('string');
  }
  if (message instanceof RegExp) expect(res.body.message).toMatch(message);
  else if (message !== undefined) expect(res.body.message).toBe(message);
  return res.body;
}

/** A 422 whose problems name `pathPart` somewhere. */
function expectValidation(res: ApiResponse, pathPart: string): void {
  const body = expectError(res, 422);
  const paths = (body.message as Array<{ path: string }>).map((p) => p.path);
  expect(paths.some((p) => p.includes(pathPart)), `problem paths ${JSON.stringify(paths)} should name ${pathPart}`).toBe(true);
}

const b64 = (value: string | Buffer) => Buffer.from(value).toString('base64');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------

describe('KMS errors', () => {
  let svc: TestService;
  let admin: string;
  let aesKey: string;
  let ecKey: string;
  let disabledKey: string;
  const project = 'default';
  const keys = (path = '') => `/api/v1/kms/keys${path}`;

  const createKey = async (body: Record<string, unknown>) => {
    const res = await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, ...body } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.key.id as string;
  };

  beforeAll(async () => {
    svc = await startTestService();
    admin = await login(svc.url, svc.admin);
    aesKey = await createKey({ name: 'err-aes' });
    ecKey = await createKey({ name: 'err-ec', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' });
    disabledKey = await createKey({ name: 'err-disabled' });
    const disabled = await request(svc.url, 'PATCH', keys(`/${disabledKey}`), { token: admin, body: { isDisabled: true } });
    expect(disabled.status).toBe(200);
    expect(disabled.body.key.isDisabled).toBe(true);
  });
  afterAll(async () => {
    await svc?.close();
  });

  describe('422 ValidationFailure', () => {
    it('bad uuid in the path', async () => {
      expectValidation(await request(svc.url, 'GET', keys('/not-a-uuid'), { token: admin }), 'keyId');
      expectValidation(await request(svc.url, 'POST', keys('/1234/encrypt'), { token: admin, body: { plaintext: '' } }), 'keyId');
      expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}x/decrypt`), { token: admin, body: { ciphertext: 'AAAA' } }), 'keyId');
      expectValidation(await request(svc.url, 'DELETE', keys('/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz'), { token: admin }), 'keyId');
    });

    it('bad enum values', async () => {
      expectValidation(await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'e1', keyUsage: 'wrap-unwrap' } }), 'keyUsage');
      expectValidation(await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'e2', encryptionAlgorithm: 'aes-512-gcm' } }), 'encryptionAlgorithm');
      expectValidation(
        await request(svc.url, 'POST', keys(`/${ecKey}/sign`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_1', data: b64('x') } }),
        'signingAlgorithm',
      );
      expectValidation(await request(svc.url, 'GET', keys(`?projectId=${project}&orderBy=color`), { token: admin }), 'orderBy');
      expectValidation(await request(svc.url, 'GET', keys(`?projectId=${project}&orderDirection=up`), { token: admin }), 'orderDirection');
    });

    it('bad base64', async () => {
      for (const plaintext of ['abc', '!!!!', 'aGVsbG8', 'aGV sbG8=', 'aGVsbG8-', 'aGVsbG8_']) {
        expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, body: { plaintext } }), 'plaintext');
      }
      expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}/decrypt`), { token: admin, body: { ciphertext: '@@@@' } }), 'ciphertext');
      expectValidation(
        await request(svc.url, 'POST', keys(`/${ecKey}/sign`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: 'a' } }),
        'data',
      );
    });

    it('wrong JSON types', async () => {
      expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, body: { plaintext: 12 } }), 'plaintext');
      expectValidation(await request(svc.url, 'PATCH', keys(`/${aesKey}`), { token: admin, body: { isDisabled: 'yes' } }), 'isDisabled');
      expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, rawBody: '[]' }), 'body');
    });

    it('plaintext of 1 MiB + 3 bytes decoded is refused', async () => {
      const res = await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, body: { plaintext: b64(Buffer.alloc(MiB + 3)) } });
      expectValidation(res, 'plaintext');
    });

    // docs/contract.md: decoded plaintext/data at most 1 MiB. 1 MiB + 1 and + 2 bytes encode to the same
    // number of base64 characters as 1 MiB, so a limit on characters alone lets them through.
    it.each([1, 2])('plaintext of 1 MiB + %i byte(s) decoded is refused', async (extra) => {
      const res = await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, body: { plaintext: b64(Buffer.alloc(MiB + extra)) } });
      expectValidation(res, 'plaintext');
    });

    it('sign data of 1 MiB + 1 byte decoded is refused', async () => {
      const res = await request(svc.url, 'POST', keys(`/${ecKey}/sign`), {
        token: admin,
        body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64(Buffer.alloc(MiB + 1)) },
      });
      expectValidation(res, 'data');
    });

    it('missing required properties, every one listed', async () => {
      expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, body: {} }), 'plaintext');
      expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin }), 'plaintext');
      expectValidation(await request(svc.url, 'POST', keys(`/${aesKey}/decrypt`), { token: admin, body: {} }), 'ciphertext');
      const res = await request(svc.url, 'POST', keys(), { token: admin, body: {} });
      const body = expectError(res, 422);
      const paths = (body.message as Array<{ path: string }>).map((p) => p.path).join(' ');
      expect(paths).toContain('projectId');
      expect(paths).toContain('name');
      expectValidation(await request(svc.url, 'GET', keys(), { token: admin }), 'projectId');
      expectValidation(await request(svc.url, 'GET', keys('/key-name/err-aes'), { token: admin }), 'projectId');
    });

    it('lists every problem of one request', async () => {
      const res = await request(svc.url, 'POST', keys(), {
        token: admin,
        body: { projectId: project, name: 'Not A Slug', description: 'x'.repeat(501), keyUsage: 'nope' },
      });
      const body = expectError(res, 422);
      const paths = (body.message as Array<{ path: string }>).map((p) => p.path).join(' ');
      expect(paths).toContain('name');
      expect(paths).toContain('description');
      expect(paths).toContain('keyUsage');
    });

    it('a name that is not a slug (1-32 of a-z, 0-9, single hyphens)', async () => {
      for (const name of ['Upper', 'has space', '-lead', 'trail-', 'dou--ble', 'under_score', '', 'a'.repeat(33), 'ünï']) {
        expectValidation(await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name } }), 'name');
      }
      expectValidation(await request(svc.url, 'PATCH', keys(`/${aesKey}`), { token: admin, body: { name: 'Bad Name' } }), 'name');
      // The limits themselves are accepted.
      const ok = await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'a'.repeat(32) } });
      expect(ok.status).toBe(200);
    });

    it('a description longer than 500 characters', async () => {
      expectValidation(await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'd501', description: 'x'.repeat(501) } }), 'description');
      expectValidation(await request(svc.url, 'PATCH', keys(`/${aesKey}`), { token: admin, body: { description: 'x'.repeat(501) } }), 'description');
      const ok = await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'd500', description: 'x'.repeat(500) } });
      expect(ok.status).toBe(200);
      expect(ok.body.key.description).toBe('x'.repeat(500));
    });

    it('usage and algorithm that do not fit, at create', async () => {
      const before = tokenObjects(svc).length;
      for (const [keyUsage, encryptionAlgorithm] of [
        ['encrypt-decrypt', 'RSA_2048'],
        ['encrypt-decrypt', 'ECC_NIST_P256'],
        ['sign-verify', 'aes-256-gcm'],
        ['sign-verify', 'aes-128-gcm'],
      ] as const) {
        const res = await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'mismatch', keyUsage, encryptionAlgorithm } });
        expectValidation(res, 'encryptionAlgorithm');
      }
      const byName = await request(svc.url, 'GET', keys(`/key-name/mismatch?projectId=${project}`), { token: admin });
      expectError(byName, 404);
      expect(tokenObjects(svc).length).toBe(before);
    });

    it('limit 0 or 101, negative offset, non-numeric limit in the list query', async () => {
      for (const query of ['limit=0', 'limit=101', 'limit=-1', 'limit=abc', 'offset=-1', 'limit=1.5']) {
        const res = await request(svc.url, 'GET', keys(`?projectId=${project}&${query}`), { token: admin });
        expectValidation(res, query.split('=')[0]!);
      }
      for (const query of ['limit=1', 'limit=100']) {
        const res = await request(svc.url, 'GET', keys(`?projectId=${project}&${query}`), { token: admin });
        expect(res.status).toBe(200);
      }
    });

    it('an invalid isDigest or signature in verify', async () => {
      expectValidation(
        await request(svc.url, 'POST', keys(`/${ecKey}/sign`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x'), isDigest: 'true' } }),
        'isDigest',
      );
      expectValidation(
        await request(svc.url, 'POST', keys(`/${ecKey}/verify`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x'), signature: '***' } }),
        'signature',
      );
    });
  });

  describe('400 BadRequest', () => {
    it('a disabled key: "Key is disabled" for every operation', async () => {
      expectError(await request(svc.url, 'POST', keys(`/${disabledKey}/encrypt`), { token: admin, body: { plaintext: b64('x') } }), 400, 'Key is disabled');
      const fakeCiphertext = b64(Buffer.concat([randomBytes(12 + 16), Buffer.from('v01')]));
      expectError(await request(svc.url, 'POST', keys(`/${disabledKey}/decrypt`), { token: admin, body: { ciphertext: fakeCiphertext } }), 400, 'Key is disabled');
    });

    it('a disabled sign-verify key refuses sign and verify', async () => {
      const id = await createKey({ name: 'err-ec-disabled', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' });
      const signed = await request(svc.url, 'POST', keys(`/${id}/sign`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('m') } });
      expect(signed.status).toBe(200);
      await request(svc.url, 'PATCH', keys(`/${id}`), { token: admin, body: { isDisabled: true } });
      expectError(await request(svc.url, 'POST', keys(`/${id}/sign`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('m') } }), 400, 'Key is disabled');
      expectError(
        await request(svc.url, 'POST', keys(`/${id}/verify`), {
          token: admin,
          body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('m'), signature: signed.body.signature },
        }),
        400,
        'Key is disabled',
      );
      // Enabling it again restores it.
      await request(svc.url, 'PATCH', keys(`/${id}`), { token: admin, body: { isDisabled: false } });
      const again = await request(svc.url, 'POST', keys(`/${id}/verify`), {
        token: admin,
        body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('m'), signature: signed.body.signature },
      });
      expect(again.status).toBe(200);
      expect(again.body.signatureValid).toBe(true);
    });

    it('usage mismatch, with the exact messages', async () => {
      const toSign = 'Unsupported key type, expected sign-verify but got encrypt-decrypt';
      const toEncrypt = 'Unsupported key type, expected encrypt-decrypt but got sign-verify';
      expectError(await request(svc.url, 'POST', keys(`/${aesKey}/sign`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') } }), 400, toSign);
      expectError(
        await request(svc.url, 'POST', keys(`/${aesKey}/verify`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x'), signature: b64('sig') } }),
        400,
        toSign,
      );
      expectError(await request(svc.url, 'POST', keys(`/${ecKey}/encrypt`), { token: admin, body: { plaintext: b64('x') } }), 400, toEncrypt);
      const ct = b64(Buffer.concat([randomBytes(12 + 16), Buffer.from('v01')]));
      expectError(await request(svc.url, 'POST', keys(`/${ecKey}/decrypt`), { token: admin, body: { ciphertext: ct } }), 400, toEncrypt);
    });

    it('a signing algorithm of the wrong family is a 400', async () => {
      expectError(
        await request(svc.url, 'POST', keys(`/${ecKey}/sign`), { token: admin, body: { signingAlgorithm: 'RSASSA_PSS_SHA_256', data: b64('x') } }),
        400,
      );
    });

    it('a duplicate key name, at create and at rename', async () => {
      const before = tokenObjects(svc).length;
      const dup = await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'err-aes' } });
      expectError(dup, 400);
      expect(tokenObjects(svc).length).toBe(before);
      const other = await createKey({ name: 'err-rename-me' });
      const rename = await request(svc.url, 'PATCH', keys(`/${other}`), { token: admin, body: { name: 'err-aes', description: 'changed' } });
      expectError(rename, 400);
      const still = await request(svc.url, 'GET', keys(`/${other}`), { token: admin });
      expect(still.body.key.name).toBe('err-rename-me');
      expect(still.body.key.description).toBe('');
      // Same name in another project is fine.
      const elsewhere = await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: 'other-project', name: 'err-aes' } });
      expect(elsewhere.status).toBe(200);
    });

    it('a digest of the wrong length', async () => {
      for (const [signingAlgorithm, length] of [
        ['ECDSA_SHA_256', 31],
        ['ECDSA_SHA_256', 33],
        ['ECDSA_SHA_384', 32],
        ['ECDSA_SHA_512', 48],
      ] as const) {
        const res = await request(svc.url, 'POST', keys(`/${ecKey}/sign`), { token: admin, body: { signingAlgorithm, isDigest: true, data: b64(randomBytes(length)) } });
        expectError(res, 400);
      }
      const ok = await request(svc.url, 'POST', keys(`/${ecKey}/sign`), { token: admin, body: { signingAlgorithm: 'ECDSA_SHA_256', isDigest: true, data: b64(randomBytes(32)) } });
      expect(ok.status).toBe(200);
      const verify = await request(svc.url, 'POST', keys(`/${ecKey}/verify`), {
        token: admin,
        body: { signingAlgorithm: 'ECDSA_SHA_256', isDigest: true, data: b64(randomBytes(20)), signature: ok.body.signature },
      });
      expectError(verify, 400);
    });

    it('a body that is not valid JSON', async () => {
      expectError(await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, rawBody: '{"plaintext": ' }), 400);
      expectError(await request(svc.url, 'POST', keys(), { token: admin, rawBody: "{'projectId': 'default'}" }), 400);
      expectError(await request(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { rawBody: '{nope' }), 400);
    });

    it('a body of broken UTF-8, or not what its Content-Encoding says, is refused and changes nothing', async () => {
      // {"description":"<0xC3 0x28>"}: body-parser alone would store U+FFFD in its place.
      const broken = Buffer.concat([Buffer.from('{"description":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
      const send = async (body: Buffer, headers: Record<string, string>) => {
        const response = await fetch(`${svc.url}${keys(`/${aesKey}`)}`, { method: 'PATCH', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', ...headers }, body });
        return { status: response.status, headers: response.headers, body: await response.json() } as ApiResponse;
      };
      expectError(await send(broken, {}), 400, /UTF-8/);
      expectError(await send(Buffer.from('{"description":"x"}'), { 'content-encoding': 'gzip' }), 400);
      const after = await request(svc.url, 'GET', keys(`/${aesKey}`), { token: admin });
      expect(after.body.key.description).not.toBe('x');
      expect(after.body.key.description).not.toContain('\uFFFD');
    });

    it('malformed percent-encoding in a path id is a 400, with or without credentials', async () => {
      expectError(await request(svc.url, 'GET', keys('/%zz'), { token: admin }), 400);
      expectError(await request(svc.url, 'GET', '/pki/ca/%C0%AF/crl.der'), 400);
    });

    it('what the HTTP parser refuses still gets the envelope: headers over 16 KiB (431), an unknown method (400)', async () => {
      expectError(await request(svc.url, 'GET', keys(), { headers: { authorization: `Bearer ${'A'.repeat(20_000)}` } }), 431);
      const { connect } = await import('node:net');
      const { port } = new URL(svc.url);
      const raw = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => socket.write('FOO / HTTP/1.1\r\nHost: x\r\n\r\n'));
        let text = '';
        socket.on('data', (chunk) => (text += chunk.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
      expect(raw).toMatch(/^HTTP\/1\.1 400 /);
      const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));
      expect(envelopeValidator(400)(body)).toBe(true);
      expect(raw).toContain(`X-Request-Id: ${body.reqId}`);
    });

    it('rotating a sign-verify key', async () => {
      expectError(await request(svc.url, 'POST', keys(`/${ecKey}/rotate`), { token: admin }), 400);
      const after = await request(svc.url, 'GET', keys(`/${ecKey}`), { token: admin });
      expect(after.body.key.version).toBe(1);
    });
  });

  describe('401 UnauthorizedError', () => {
    const routes = (): Array<[string, string, unknown?]> => [
      ['GET', keys(`?projectId=${project}`)],
      ['GET', keys(`/${aesKey}`)],
      ['POST', keys(`/${aesKey}/encrypt`), { plaintext: b64('x') }],
      ['POST', keys(), { projectId: project, name: 'no-auth' }],
      ['GET', '/api/v1/identities'],
      ['GET', keys(`/${randomUUID()}`)],
      ['GET', '/api/v1/kms/no-such-route'],
    ];

    it('no bearer token', async () => {
      for (const [method, path, body] of routes()) expectError(await request(svc.url, method, path, { body }), 401);
    });

    it('a malformed Authorization header', async () => {
      for (const authorization of ['Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', `Token ${admin}`, `Bearer ${admin} extra`, admin, 'Bearer\t']) {
        for (const [method, path, body] of routes()) {
          expectError(await request(svc.url, method, path, { body, headers: { authorization } }), 401);
        }
      }
    });

    it('a forged token', async () => {
      const forged = [`hss.${randomBytes(32).toString('base64url')}`, `${admin.slice(0, -1)}${admin.endsWith('A') ? 'B' : 'A'}`, 'x', 'a'.repeat(600)];
      for (const token of forged) {
        for (const [method, path, body] of routes()) expectError(await request(svc.url, method, path, { token, body }), 401);
      }
      // Nothing was created by the refused create.
      const byName = await request(svc.url, 'GET', keys(`/key-name/no-auth?projectId=${project}`), { token: admin });
      expectError(byName, 404);
    });

    it('a renew or login with bad credentials', async () => {
      expectError(await request(svc.url, 'POST', '/api/v1/auth/token/renew', { body: { accessToken: `hss.${randomBytes(32).toString('base64url')}` } }), 401);
      expectError(await request(svc.url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: svc.admin.clientId, clientSecret: 'wrong' } }), 401);
    });
  });

  describe('403 PermissionDenied', () => {
    it('carries details naming the action and the project', async () => {
      const reader = await createIdentity(svc.url, admin, 'reader', [{ projectId: project, actions: ['read'] }]);
      const token = await login(svc.url, reader);
      const cases: Array<[string, string, unknown, string]> = [
        ['POST', keys(`/${aesKey}/encrypt`), { plaintext: b64('x') }, 'encrypt'],
        ['POST', keys(`/${aesKey}/decrypt`), { ciphertext: b64(Buffer.concat([randomBytes(28), Buffer.from('v01')])) }, 'decrypt'],
        ['POST', keys(`/${ecKey}/sign`), { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') }, 'sign'],
        ['POST', keys(), { projectId: project, name: 'reader-made' }, 'create'],
        ['PATCH', keys(`/${aesKey}`), { description: 'reader was here' }, 'update'],
        ['POST', keys(`/${aesKey}/rotate`), undefined, 'update'],
        ['DELETE', keys(`/${aesKey}`), undefined, 'delete'],
      ];
      for (const [method, path, body, action] of cases) {
        const res = await request(svc.url, method, path, { token, body });
        const envelope = expectError(res, 403);
        expect(envelope.details, `${method} ${path}`).toEqual({ action, projectId: project });
      }
      // Reading is allowed, and nothing changed.
      const got = await request(svc.url, 'GET', keys(`/${aesKey}`), { token });
      expect(got.status).toBe(200);
      expect(got.body.key.description).toBe('');
      expect(got.body.key.version).toBe(1);
      expectError(await request(svc.url, 'GET', keys(`/key-name/reader-made?projectId=${project}`), { token }), 404);
    });

    it('another project is forbidden, also for list and get-by-name', async () => {
      const outsider = await createIdentity(svc.url, admin, 'outsider', [{ projectId: 'elsewhere', actions: ['*'] }]);
      const token = await login(svc.url, outsider);
      const list = expectError(await request(svc.url, 'GET', keys(`?projectId=${project}`), { token }), 403);
      expect(list.details).toEqual({ action: 'read', projectId: project });
      expectError(await request(svc.url, 'GET', keys(`/key-name/err-aes?projectId=${project}`), { token }), 403);
      expectError(await request(svc.url, 'GET', keys(`/${aesKey}`), { token }), 403);
    });
  });

  describe('404 NotFound', () => {
    it('an unknown key id, for every key route', async () => {
      const id = randomUUID();
      const cases: Array<[string, string, unknown?]> = [
        ['GET', keys(`/${id}`)],
        ['PATCH', keys(`/${id}`), { description: 'x' }],
        ['DELETE', keys(`/${id}`)],
        ['POST', keys(`/${id}/rotate`)],
        ['POST', keys(`/${id}/encrypt`), { plaintext: b64('x') }],
        ['POST', keys(`/${id}/decrypt`), { ciphertext: b64('not a ciphertext at all') }],
        ['POST', keys(`/${id}/sign`), { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') }],
        ['POST', keys(`/${id}/verify`), { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x'), signature: b64('y') }],
        ['GET', keys(`/${id}/public-key`)],
        ['GET', keys(`/${id}/signing-algorithms`)],
      ];
      for (const [method, path, body] of cases) expectError(await request(svc.url, method, path, { token: admin, body }), 404);
    });

    it('an unknown route', async () => {
      expectError(await request(svc.url, 'GET', '/api/v1/kms/nothing-here', { token: admin }), 404);
      expectError(await request(svc.url, 'POST', keys(`/${aesKey}/explode`), { token: admin, body: {} }), 404);
      expectError(await request(svc.url, 'GET', '/no/such/path'), 404);
      expectError(await request(svc.url, 'PUT', keys(`/${aesKey}`), { token: admin, body: {} }), 404);
    });

    it('a get-by-name miss', async () => {
      expectError(await request(svc.url, 'GET', keys(`/key-name/never-made?projectId=${project}`), { token: admin }), 404);
      // The name exists, but in another project.
      expectError(await request(svc.url, 'GET', keys(`/key-name/err-aes?projectId=no-such-project`), { token: admin }), 404);
    });
  });

  describe('order of checks', () => {
    let noPermsToken: string;
    let readerToken: string;
    let signerToken: string;

    beforeAll(async () => {
      noPermsToken = await login(svc.url, await createIdentity(svc.url, admin, 'order-none', [{ projectId: 'unrelated', actions: ['read'] }]));
      readerToken = await login(svc.url, await createIdentity(svc.url, admin, 'order-reader', [{ projectId: project, actions: ['read'] }]));
      signerToken = await login(svc.url, await createIdentity(svc.url, admin, 'order-signer', [{ projectId: project, actions: ['sign', 'encrypt'] }]));
    });

    it('an unknown key is a 404 even for an identity without permission', async () => {
      const id = randomUUID();
      expectError(await request(svc.url, 'GET', keys(`/${id}`), { token: noPermsToken }), 404);
      expectError(await request(svc.url, 'POST', keys(`/${id}/encrypt`), { token: noPermsToken, body: { plaintext: b64('x') } }), 404);
      expectError(await request(svc.url, 'POST', keys(`/${id}/decrypt`), { token: noPermsToken, body: { ciphertext: b64('zz') } }), 404);
      expectError(await request(svc.url, 'DELETE', keys(`/${id}`), { token: noPermsToken }), 404);
    });

    it('a disabled key is a 400 before a 403', async () => {
      expectError(await request(svc.url, 'POST', keys(`/${disabledKey}/encrypt`), { token: noPermsToken, body: { plaintext: b64('x') } }), 400, 'Key is disabled');
      expectError(await request(svc.url, 'POST', keys(`/${disabledKey}/encrypt`), { token: readerToken, body: { plaintext: b64('x') } }), 400, 'Key is disabled');
    });

    it('a 403 comes before a usage mismatch 400', async () => {
      const denied = expectError(
        await request(svc.url, 'POST', keys(`/${aesKey}/sign`), { token: readerToken, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') } }),
        403,
      );
      expect(denied.details).toEqual({ action: 'sign', projectId: project });
      expectError(await request(svc.url, 'POST', keys(`/${ecKey}/encrypt`), { token: readerToken, body: { plaintext: b64('x') } }), 403);
      // With the permission, the mismatch shows.
      expectError(
        await request(svc.url, 'POST', keys(`/${aesKey}/sign`), { token: signerToken, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') } }),
        400,
        'Unsupported key type, expected sign-verify but got encrypt-decrypt',
      );
      expectError(
        await request(svc.url, 'POST', keys(`/${ecKey}/encrypt`), { token: signerToken, body: { plaintext: b64('x') } }),
        400,
        'Unsupported key type, expected encrypt-decrypt but got sign-verify',
      );
    });

    it('a 403 comes before a ciphertext that is not one', async () => {
      const res = await request(svc.url, 'POST', keys(`/${aesKey}/decrypt`), { token: readerToken, body: { ciphertext: b64('garbage garbage') } });
      expect(expectError(res, 403).details).toEqual({ action: 'decrypt', projectId: project });
    });
  });

  describe('unknown body properties', () => {
    it('are removed, not rejected', async () => {
      const enc = await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, body: { keyId: aesKey, plaintext: b64('hello'), extra: { nested: true } } });
      expect(enc.status, JSON.stringify(enc.body)).toBe(200);
      expect(Object.keys(enc.body)).toEqual(['ciphertext']);
      const dec = await request(svc.url, 'POST', keys(`/${aesKey}/decrypt`), { token: admin, body: { keyId: aesKey, ciphertext: enc.body.ciphertext, foo: 1 } });
      expect(dec.status).toBe(200);
      expect(Buffer.from(dec.body.plaintext, 'base64').toString()).toBe('hello');

      const created = await request(svc.url, 'POST', keys(), { token: admin, body: { projectId: project, name: 'extra-props', orgId: 'mine', version: 7, isDisabled: true, id: randomUUID() } });
      expect(created.status).toBe(200);
      expect(created.body.key.version).toBe(1);
      expect(created.body.key.isDisabled).toBe(false);
      expect(created.body.key.orgId).not.toBe('mine');
      expect(created.body.key).not.toHaveProperty('extra');

      const patched = await request(svc.url, 'PATCH', keys(`/${created.body.key.id}`), { token: admin, body: { version: 9, projectId: 'elsewhere', description: 'ok' } });
      expect(patched.status).toBe(200);
      expect(patched.body.key).toMatchObject({ version: 1, projectId: project, description: 'ok' });
    });
  });

  describe('X-Request-Id', () => {
    it('echoes a given id in the header and the envelope', async () => {
      const id = `test-${randomUUID()}`;
      const res = await request(svc.url, 'GET', keys(`/${randomUUID()}`), { token: admin, headers: { 'x-request-id': id } });
      expect(expectError(res, 404).reqId).toBe(id);
      expect(res.headers.get('x-request-id')).toBe(id);
      const unauth = await request(svc.url, 'GET', keys(`/${aesKey}`), { headers: { 'x-request-id': id } });
      expect(expectError(unauth, 401).reqId).toBe(id);
      const invalid = await request(svc.url, 'POST', keys(`/${aesKey}/encrypt`), { token: admin, body: {}, headers: { 'x-request-id': id } });
      expect(expectError(invalid, 422).reqId).toBe(id);
      const ok = await request(svc.url, 'GET', keys(`/${aesKey}`), { token: admin, headers: { 'x-request-id': id } });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('x-request-id')).toBe(id);
    });

    it('generates a fresh id otherwise', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 3; i++) {
        const res = await request(svc.url, 'GET', keys(`/${randomUUID()}`), { token: admin });
        const body = expectError(res, 404);
        seen.add(body.reqId);
      }
      expect(seen.size).toBe(3);
      const ok = await request(svc.url, 'GET', keys(`/${aesKey}`), { token: admin });
      expect(ok.headers.get('x-request-id')).toBeTruthy();
      expect(seen.has(ok.headers.get('x-request-id')!)).toBe(false);
    });
  });

  describe('bad input changes nothing', () => {
    it('refused creates leave no key and no token object', async () => {
      const objectsBefore = tokenObjects(svc);
      const listBefore = await request(svc.url, 'GET', keys(`?projectId=${project}`), { token: admin });
      const reader = await login(svc.url, await createIdentity(svc.url, admin, 'nothing-reader', [{ projectId: project, actions: ['read'] }]));
      const attempts: Array<[string | undefined, Record<string, unknown>, number]> = [
        [admin, { projectId: project, name: 'err-aes' }, 400],
        [admin, { projectId: project, name: 'bad-mix', keyUsage: 'sign-verify', encryptionAlgorithm: 'aes-256-gcm' }, 422],
        [admin, { projectId: project, name: 'Bad Name' }, 422],
        [admin, { projectId: project, name: 'bad-desc', description: 'y'.repeat(501) }, 422],
        [reader, { projectId: project, name: 'not-allowed' }, 403],
        [undefined, { projectId: project, name: 'no-token' }, 401],
        [admin, { projectId: 'bad project!', name: 'bad-project' }, 422],
      ];
      for (const [token, body, status] of attempts) expectError(await request(svc.url, 'POST', keys(), { token, body }), status);
      const listAfter = await request(svc.url, 'GET', keys(`?projectId=${project}`), { token: admin });
      expect(listAfter.body.totalCount).toBe(listBefore.body.totalCount);
      expect(listAfter.body.keys.map((k: { id: string }) => k.id).sort()).toEqual(listBefore.body.keys.map((k: { id: string }) => k.id).sort());
      expect(tokenObjects(svc).map((o) => `${o.class}:${o.id}`).sort()).toEqual(objectsBefore.map((o) => `${o.class}:${o.id}`).sort());
    });

    it('a refused update or rotate changes nothing', async () => {
      const before = (await request(svc.url, 'GET', keys(`/${aesKey}`), { token: admin })).body.key;
      expectError(await request(svc.url, 'PATCH', keys(`/${aesKey}`), { token: admin, body: { name: 'err-ec', description: 'nope', isDisabled: true } }), 400);
      expectError(await request(svc.url, 'PATCH', keys(`/${aesKey}`), { token: admin, body: { name: 'ok-name', description: 'z'.repeat(501) } }), 422);
      const objectsBefore = tokenObjects(svc).length;
      expectError(await request(svc.url, 'POST', keys(`/${ecKey}/rotate`), { token: admin }), 400);
      expect(tokenObjects(svc).length).toBe(objectsBefore);
      const after = (await request(svc.url, 'GET', keys(`/${aesKey}`), { token: admin })).body.key;
      expect(after).toEqual(before);
    });
  });
});

describe('expired access tokens', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService({ auth: { accessTokenTTL: 1, accessTokenMaxTTL: 2 } });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('an expired token is a 401, and so is its renew past the maximum TTL', async () => {
    const token = await login(svc.url, svc.admin);
    await sleep(2300);
    expectError(await request(svc.url, 'GET', `/api/v1/kms/keys?projectId=default`, { token }), 401);
    expectError(await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId: 'default', name: 'late' } }), 401);
    expectError(await request(svc.url, 'POST', '/api/v1/auth/token/renew', { body: { accessToken: token } }), 401);
    // A fresh login works again.
    const fresh = await login(svc.url, svc.admin);
    const ok = await request(svc.url, 'GET', `/api/v1/kms/keys?projectId=default`, { token: fresh });
    expect(ok.status).toBe(200);
  });

  it('a token that worked (and is cached) is refused once expired', async () => {
    // Start just after a second boundary so the token is surely usable right away.
    while (Date.now() % 1000 > 100) await sleep(10);
    const token = await login(svc.url, svc.admin);
    const first = await request(svc.url, 'GET', `/api/v1/kms/keys?projectId=default`, { token });
    expect(first.status).toBe(200);
    await sleep(2100);
    expectError(await request(svc.url, 'GET', `/api/v1/kms/keys?projectId=default`, { token }), 401);
  });
});

describe('503 ServiceUnavailable', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService({ hsm: { sessions: 1, acquireTimeoutMs: 200 } });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('every session busy past the acquire timeout: 503 with Retry-After, in the envelope', async () => {
    const token = await login(svc.url, svc.admin);
    const aes = await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId: 'default', name: 'busy-aes' } });
    expect(aes.status).toBe(200);
    // An RSA-4096 generation holds the only session for a long while.
    let settled = false;
    const slow = request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId: 'default', name: 'busy-rsa', keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_4096' } }).finally(() => {
      settled = true;
    });
    // Keep asking while the generation runs, until the pool says it is busy.
    const results: ApiResponse[] = [];
    while (!settled && !results.some((r) => r.status === 503)) {
      results.push(
        ...(await Promise.all(
          Array.from({ length: 5 }, () => request(svc.url, 'POST', `/api/v1/kms/keys/${aes.body.key.id}/encrypt`, { token, body: { plaintext: b64('busy') } })),
        )),
      );
      await sleep(10);
    }
    const slowResult = await slow;
    expect([200, 503]).toContain(slowResult.status);
    const busy = results.filter((r) => r.status === 503);
    expect(results.every((r) => r.status === 200 || r.status === 503), results.map((r) => r.status).join(',')).toBe(true);
    expect(busy.length).toBeGreaterThan(0);
    for (const res of busy) {
      expectError(res, 503);
      expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
    }
    // Once the session is free again, the service answers.
    const after = await request(svc.url, 'POST', `/api/v1/kms/keys/${aes.body.key.id}/encrypt`, { token, body: { plaintext: b64('free') } });
    expect(after.status).toBe(200);
  });
});
