/**
 * No PIN, client secret or access token in any log line: the real service (a separate
 * process, at the most verbose level) runs a full session, its stdout and stderr are captured
 * whole, and every secret the session saw is searched for, whole and by prefix.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openssl } from '../helpers/cli.js';
import { LEVEL, newChildDataDir, startChildService } from '../helpers/child-service.js';
import { request, type ApiResponse } from '../helpers/http.js';

const b64 = (text: string) => Buffer.from(text).toString('base64');

function ok<T = any>(res: ApiResponse<T>, what: string): T {
  if (res.status !== 200) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

describe('no secret in any log line (separate process, LOG_LEVEL=trace)', () => {
  const dataDir = newChildDataDir('hsm-signer-log-secrets-');
  const work = mkdtempSync(join(tmpdir(), 'hsm-signer-log-secrets-work-'));
  afterAll(() => {
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it('a full session, errors and a shutdown leave no PIN, client secret or access token in the log', async () => {
    // One session and a short acquire timeout: a burst of signatures below is answered 503 for
    // some requests, and the service logs those, with their request ids (at debug level, and
    // counted in a summary line).
    const svc = await startChildService(dataDir, { LOG_LEVEL: 'trace', HSM_SESSIONS: '1', HSM_ACQUIRE_TIMEOUT_MS: '250', RATE_LIMIT_PER_SECOND: '0' });
    /** name → value of everything that must never be logged. */
    const secrets = new Map<string, string>();
    const tokens: string[] = [];
    const reqIdsOf503: string[] = [];
    const keep = (name: string, value: unknown) => {
      expect(typeof value === 'string' && value.length >= 8, `${name} is a usable secret`).toBe(true);
      secrets.set(name, value as string);
      return value as string;
    };
    try {
      const url = svc.url;
      keep('user PIN', readFileSync(join(dataDir, 'softhsm', 'user-pin'), 'utf8').trim());
      keep('SO PIN', readFileSync(join(dataDir, 'softhsm', 'so-pin'), 'utf8').trim());
      const admin = svc.admin;
      keep('admin client secret', admin.clientSecret);

      // Logins: good, wrong secret, unknown client id, a secret in place of the client id.
      const adminLogin = ok(await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: admin.clientId, clientSecret: admin.clientSecret } }), 'admin login');
      const adminToken = keep('admin access token', adminLogin.accessToken);
      tokens.push(adminToken);
      const wrongSecret = keep('wrong secret tried', randomBytes(32).toString('hex'));
      expect((await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: admin.clientId, clientSecret: wrongSecret } })).status).toBe(401);
      expect((await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: randomUUID(), clientSecret: admin.clientSecret } })).status).toBe(401);
      expect((await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: admin.clientSecret, clientSecret: admin.clientSecret } })).status).toBe(401);
      // The user PIN typed as a client secret (someone pasting the wrong value).
      expect((await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: admin.clientId, clientSecret: secrets.get('user PIN') } })).status).toBe(401);

      // Renew.
      const renewed = ok(await request(url, 'POST', '/api/v1/auth/token/renew', { body: { accessToken: adminToken } }), 'renew');
      tokens.push(keep('renewed admin token', renewed.accessToken));
      expect((await request(url, 'POST', '/api/v1/auth/token/renew', { body: { accessToken: `hss.${randomBytes(32).toString('base64url')}` } })).status).toBe(401);

      // Identities and client secrets.
      const app = ok(await request(url, 'POST', '/api/v1/identities', { token: adminToken, body: { name: 'log-app', permissions: [{ projectId: 'default', actions: ['*'] }] } }), 'identity').identity;
      const reader = ok(await request(url, 'POST', '/api/v1/identities', { token: adminToken, body: { name: 'log-reader', permissions: [{ projectId: 'default', actions: ['read'] }] } }), 'identity').identity;
      const newSecret = async (identityId: string, name: string) => {
        const created = ok(await request(url, 'POST', `/api/v1/identities/${identityId}/client-secrets`, { token: adminToken, body: { description: name } }), 'client secret');
        return { value: keep(name, created.clientSecret), id: created.clientSecretData.id as string };
      };
      const appSecret = await newSecret(app.id, 'app client secret');
      const appSecret2 = await newSecret(app.id, 'second app client secret');
      const readerSecret = await newSecret(reader.id, 'reader client secret');
      ok(await request(url, 'GET', `/api/v1/identities/${app.id}/client-secrets`, { token: adminToken }), 'list secrets');
      ok(await request(url, 'GET', '/api/v1/identities', { token: adminToken }), 'list identities');
      const appLogin = async (secret: string) => request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: app.clientId, clientSecret: secret } });
      const appToken = keep('app access token', ok(await appLogin(appSecret.value), 'app login').accessToken);
      tokens.push(appToken);
      tokens.push(keep('app token from the second secret', ok(await appLogin(appSecret2.value), 'app login 2').accessToken));
      ok(await request(url, 'DELETE', `/api/v1/identities/${app.id}/client-secrets/${appSecret2.id}`, { token: adminToken }), 'delete secret');
      expect((await appLogin(appSecret2.value)).status).toBe(401);
      const readerToken = keep('reader access token', ok(await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: reader.clientId, clientSecret: readerSecret.value } }), 'reader login').accessToken);
      tokens.push(readerToken);

      // Keys and operations.
      const aes = ok(await request(url, 'POST', '/api/v1/kms/keys', { token: appToken, body: { projectId: 'default', name: 'log-aes' } }), 'aes key').key;
      const ec = ok(await request(url, 'POST', '/api/v1/kms/keys', { token: appToken, body: { projectId: 'default', name: 'log-ec', keyUsage: 'sign-verify', encryptionAlgorithm: 'ECC_NIST_P256' } }), 'ec key').key;
      const rsa = ok(await request(url, 'POST', '/api/v1/kms/keys', { token: appToken, body: { projectId: 'default', name: 'log-rsa', keyUsage: 'sign-verify', encryptionAlgorithm: 'RSA_4096' } }), 'rsa key').key;
      // A plaintext that is itself a secret: the service must not log what it encrypts.
      const plaintext = keep('plaintext sent to encrypt', `plaintext-${randomBytes(16).toString('hex')}`);
      const { ciphertext } = ok(await request(url, 'POST', `/api/v1/kms/keys/${aes.id}/encrypt`, { token: appToken, body: { plaintext: b64(plaintext) } }), 'encrypt');
      const decrypted = ok(await request(url, 'POST', `/api/v1/kms/keys/${aes.id}/decrypt`, { token: appToken, body: { ciphertext } }), 'decrypt');
      expect(Buffer.from(decrypted.plaintext, 'base64').toString()).toBe(plaintext);
      keep('plaintext base64', b64(plaintext));
      for (const [key, algorithm] of [[ec, 'ECDSA_SHA_256'], [rsa, 'RSASSA_PSS_SHA_256']] as const) {
        const { signature } = ok(await request(url, 'POST', `/api/v1/kms/keys/${key.id}/sign`, { token: appToken, body: { signingAlgorithm: algorithm, data: b64('log test') } }), 'sign');
        const verified = ok(await request(url, 'POST', `/api/v1/kms/keys/${key.id}/verify`, { token: appToken, body: { signingAlgorithm: algorithm, data: b64('log test'), signature } }), 'verify');
        expect(verified.signatureValid).toBe(true);
      }
      ok(await request(url, 'POST', `/api/v1/kms/keys/${aes.id}/rotate`, { token: appToken }), 'rotate');
      ok(await request(url, 'GET', `/api/v1/kms/keys/${ec.id}/public-key`, { token: readerToken }), 'public key');

      // PKI: a profile on the demo intermediate, an issued certificate, its revocation, the CRL.
      expect(admin.caId).toBeTruthy();
      const profile = ok(
        await request(url, 'POST', '/api/v1/cert-manager/certificate-profiles', {
          token: adminToken,
          body: { projectId: 'default', caId: admin.caId, slug: 'log-leaves', policy: { subject: [{ type: 'CN', allowed: ['**'] }], sans: { dns: ['**'] }, maxValidity: '30d' } },
        }),
        'profile',
      ).certificateProfile;
      openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(work, 'leaf.key'), '-subj', '/CN=log.svc.internal', '-addext', 'subjectAltName=DNS:log.svc.internal', '-out', join(work, 'leaf.csr'));
      const issued = ok(await request(url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token: adminToken, body: { profileId: profile.id, csr: readFileSync(join(work, 'leaf.csr'), 'utf8'), ttl: '1d' } }), 'issue');
      ok(await request(url, 'POST', `/api/v1/cert-manager/certificates/${issued.certificateId}/revoke`, { token: adminToken, body: { revocationReason: 'KEY_COMPROMISE' } }), 'revoke');
      expect((await request(url, 'GET', `/pki/ca/${admin.caId}/crl.der`)).status).toBe(200);

      // EST on that profile: its passphrase, a right and a wrong one sent as HTTP Basic.
      const estPassphrase = keep('EST passphrase', `est-${randomBytes(16).toString('hex')}`);
      ok(await request(url, 'PATCH', `/api/v1/cert-manager/certificate-profiles/${profile.id}`, { token: adminToken, body: { est: { enabled: true, passphrase: estPassphrase } } }), 'enable EST');
      openssl('req', '-new', '-key', join(work, 'leaf.key'), '-subj', '/CN=est.svc.internal', '-outform', 'DER', '-out', join(work, 'est.der'));
      const estBody = readFileSync(join(work, 'est.der')).toString('base64');
      const enroll = (password: string) =>
        fetch(`${url}/.well-known/est/${profile.id}/simpleenroll`, { method: 'POST', headers: { 'content-type': 'application/pkcs10', authorization: `Basic ${b64(`device:${password}`)}` }, body: estBody });
      expect((await enroll(estPassphrase)).status).toBe(200);
      expect((await enroll(keep('wrong EST passphrase', `wrong-${randomBytes(16).toString('hex')}`))).status).toBe(401);
      keep('EST Basic header', b64(`device:${estPassphrase}`));

      // Bogus credentials in every shape a client might send them.
      const bogusHss = keep('bogus hss token', `hss.${randomBytes(32).toString('base64url')}`);
      const bogusPlain = keep('bogus opaque token', randomBytes(24).toString('hex'));
      const basic = keep('basic credentials', Buffer.from(`${app.clientId}:${appSecret.value}`).toString('base64'));
      const authorizations = [
        `Bearer ${bogusHss}`,
        `Bearer ${bogusPlain}`,
        `bearer ${appSecret.value}`,
        `Basic ${basic}`,
        `Token ${admin.clientSecret}`,
        `Bearer ${appToken} extra`,
        `Bearer ${secrets.get('user PIN')}`,
      ];
      for (const authorization of authorizations) {
        const res = await request(url, 'GET', '/api/v1/kms/keys?projectId=default', { headers: { authorization } });
        expect(res.status, authorization.split(' ')[0]).toBe(401);
      }
      expect((await request(url, 'POST', `/api/v1/kms/keys/${ec.id}/sign`, { token: bogusHss, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') } })).status).toBe(401);

      // Secrets in the wrong place of a body, in a body that is not JSON, in one that is too large.
      // Unknown body fields are dropped (Infisical's clients send extras), so these succeed;
      // what matters is that the secret they carry goes nowhere.
      const stray = [
        await request(url, 'POST', '/api/v1/kms/keys', { token: appToken, body: { projectId: 'default', name: 'oops', clientSecret: appSecret.value } }),
        await request(url, 'POST', '/api/v1/auth/token/renew', { body: { accessToken: appToken, clientSecret: appSecret.value } }),
        await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: app.clientId, clientSecret: appSecret.value, pin: secrets.get('user PIN') } }),
      ];
      for (const res of stray) {
        expect([200, 400, 422], JSON.stringify(res.body)).toContain(res.status);
        if (typeof res.body?.accessToken === 'string') tokens.push(keep(`token from a request with stray secrets ${tokens.length}`, res.body.accessToken));
      }
      expect((await request(url, 'POST', '/api/v1/auth/universal-auth/login', { rawBody: `{"clientId":"${app.clientId}","clientSecret":"${appSecret.value}"` })).status).toBe(400);
      expect((await request(url, 'POST', `/api/v1/kms/keys/${aes.id}/encrypt`, { token: appToken, rawBody: `{"plaintext":"${b64(plaintext)}","x":"${'A'.repeat(3 * 1024 * 1024)}"}` })).status).toBe(413);

      // Other refusals: permission, unknown key, bad input, login throttling.
      expect((await request(url, 'POST', `/api/v1/kms/keys/${ec.id}/sign`, { token: readerToken, body: { signingAlgorithm: 'ECDSA_SHA_256', data: b64('x') } })).status).toBe(403);
      expect((await request(url, 'GET', `/api/v1/kms/keys/${randomUUID()}`, { token: appToken })).status).toBe(404);
      expect((await request(url, 'POST', `/api/v1/kms/keys/${ec.id}/sign`, { token: appToken, body: { signingAlgorithm: 'NOPE', data: b64('x') } })).status).toBe(422);
      const throttled: number[] = [];
      for (let i = 0; i < 7; i++) {
        throttled.push((await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: reader.clientId, clientSecret: `${readerSecret.value.slice(0, 20)}${i}` } })).status);
      }
      expect(throttled).toContain(429);
      // Throttled now: even the right secret is refused, and must not be logged either.
      expect((await request(url, 'POST', '/api/v1/auth/universal-auth/login', { body: { clientId: reader.clientId, clientSecret: readerSecret.value } })).status).toBe(429);

      // A burst on the one session: some requests wait past the acquire timeout and get a 503,
      // which the service logs (with the request id) while the request carries a bearer token.
      // Bursts grow until one has a 503 (a faster machine needs a bigger one).
      for (const size of [40, 80, 160, 320]) {
        const burst = await Promise.all(
          Array.from({ length: size }, (_, i) =>
            request(url, 'POST', `/api/v1/kms/keys/${rsa.id}/sign`, { token: appToken, body: { signingAlgorithm: 'RSASSA_PSS_SHA_256', data: b64(`burst ${i} ${appSecret.value}`) } }),
          ),
        );
        expect(burst.every((res) => res.status === 200 || res.status === 503), JSON.stringify(burst.map((r) => r.status))).toBe(true);
        for (const res of burst) if (res.status === 503) reqIdsOf503.push(res.body.reqId as string);
        if (reqIdsOf503.length > 0) break;
      }
      expect(reqIdsOf503.length, 'the bursts produced 503 answers').toBeGreaterThan(0);

      // Deleting the identity ends its tokens.
      ok(await request(url, 'DELETE', `/api/v1/identities/${reader.id}`, { token: adminToken }), 'delete identity');
      expect((await request(url, 'GET', '/api/v1/kms/keys?projectId=default', { token: readerToken })).status).toBe(401);

      svc.signal('SIGTERM');
      expect((await svc.exited).code, svc.output()).toBe(0);
    } finally {
      await svc.kill();
    }

    const log = svc.output();
    const { lines, notJson } = svc.logLines();
    // The log is the real thing: startup, the request-time lines of the 503s, shutdown.
    expect(lines.length, log).toBeGreaterThanOrEqual(5);
    expect(lines.some((line) => line.msg === 'hsm-signer is listening')).toBe(true);
    expect(lines.some((line) => line.msg === 'created the admin machine identity; its credentials are in this file')).toBe(true);
    expect(lines.some((line) => line.msg === 'stopping')).toBe(true);
    const loggedReqIds = new Set(lines.map((line) => line.reqId).filter((id): id is string => typeof id === 'string'));
    expect(reqIdsOf503.filter((id) => !loggedReqIds.has(id)), 'request ids of 503 answers missing from the log').toEqual([]);
    const perRequest503 = lines.filter((line) => line.level === LEVEL.debug && line.statusCode === 503 && typeof line.reqId === 'string');
    expect(perRequest503.length).toBeGreaterThanOrEqual(reqIdsOf503.length);
    expect(lines.some((line) => line.level === LEVEL.warn && line.summary === 'refused-requests')).toBe(true);
    console.info(`log-secrets: ${lines.length} log lines (${notJson.length} not JSON), ${log.length} bytes, ${secrets.size} secrets, ${tokens.length} tokens, ${reqIdsOf503.length} logged 503s`);

    // Nothing secret, whole or in part, anywhere in stdout or stderr.
    const leaks: string[] = [];
    const lineOf = (needle: string) => log.split('\n').find((line) => line.includes(needle))?.slice(0, 400);
    for (const [name, value] of secrets) {
      if (log.includes(value)) leaks.push(`${name} (whole) in: ${lineOf(value)}`);
      else if (log.includes(value.slice(0, 16))) leaks.push(`${name} (first 16 characters) in: ${lineOf(value.slice(0, 16))}`);
    }
    // Any access-token-shaped text, whoever's.
    for (const match of log.matchAll(/hss\.[A-Za-z0-9_-]{6,}/g)) leaks.push(`token-shaped text ${match[0].slice(0, 12)}… in: ${lineOf(match[0])}`);
    // Authorization headers must not appear even redacted-by-accident as raw values.
    for (const match of log.matchAll(/(Bearer|Basic|Token) [A-Za-z0-9+/=._-]{8,}/gi)) leaks.push(`credential-shaped text in: ${lineOf(match[0])}`);
    expect(leaks).toEqual([]);
  });
});
