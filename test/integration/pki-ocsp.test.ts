/**
 * The OCSP responder with real clients: `openssl ocsp` and GnuTLS `ocsptool` ask the URL an
 * issued certificate names in its AIA, and verify the answer's signature under the CA: good,
 * revoked (time and reason) right after a revocation, unknown for a serial never issued, the
 * nonce echoed. GET answers carry cache headers that end at nextUpdate; every time is a
 * GeneralizedTime without fraction; whatever a client sends, the answer is an OCSP response
 * (malformedRequest, unauthorized), never an HTTP error.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { children, encodeOid, only, sequence, TAG, tlv, type Tlv } from '../../src/pki/der.js';
import { openssl, run } from '../helpers/cli.js';
import { login, request } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';

const execFileAsync = promisify(execFile);
/** A client run without blocking this process (which serves its requests): output and exit status. */
async function ask(command: string, args: string[]): Promise<{ status: number | null; text: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { timeout: 30_000 });
    return { status: 0, text: `${stdout}${stderr}` };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof failed.code === 'number' ? failed.code : null, text: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}
const work = mkdtempSync(join(tmpdir(), 'pki-ocsp-'));
const file = (name: string) => join(work, name);
const write = (name: string, content: string | Buffer) => (writeFileSync(file(name), content), file(name));
const pemBlocks = (text: string): string[] => (text.match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g) ?? []).map((pem) => `${pem.trim()}\n`);

const PROJECT = 'pki-ocsp';
const POLICY = {
  subject: [{ type: 'CN', allowed: ['**.ocsp.test'] }],
  sans: { dns: ['**.ocsp.test'] },
  keyUsages: { allowed: [], always: ['digitalSignature'] },
  extendedKeyUsages: { allowed: [], always: ['serverAuth'] },
  keyAlgorithms: ['EC_prime256v1'],
  maxValidity: '90d',
};
const MALFORMED = Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x01]);
const UNAUTHORIZED = Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x06]);

/** Every GeneralizedTime in a DER structure. */
function generalizedTimes(der: Buffer): string[] {
  const found: string[] = [];
  const walk = (tlv: Tlv) => {
    if (tlv.tag === TAG.generalizedTime) found.push(tlv.value.toString('latin1'));
    else if (tlv.tag & 0x20) for (const child of children(tlv.value)) walk(child);
    else if (tlv.tag === TAG.octetString) {
      // responseBytes.response holds the BasicOCSPResponse as an OCTET STRING.
      try {
        walk(only(tlv.value));
      } catch {
        // Not DER inside: a hash or a key id.
      }
    }
  };
  walk(only(der));
  return found;
}

describe('OCSP responder', () => {
  let svc: TestService;
  let token: string;
  let rootId = '';
  let interId = '';
  let profileId = '';
  let ocspUrl = '';
  let count = 0;

  async function issue(): Promise<{ certificateId: string; serialNumber: string; path: string }> {
    const label = `leaf${count++}`;
    openssl('req', '-new', '-key', file('leaf.key'), '-subj', `/CN=${label}.ocsp.test`, '-addext', `subjectAltName=DNS:${label}.ocsp.test`, '-out', file(`${label}.csr`));
    const res = await request(svc.url, 'POST', '/api/v3/pki/certificates/sign-certificate', { token, body: { profileId, csr: readFileSync(file(`${label}.csr`), 'utf8'), ttl: '30d' } });
    if (res.status !== 200) throw new Error(`issue: ${res.status} ${JSON.stringify(res.body)}`);
    return { certificateId: res.body.certificateId, serialNumber: res.body.serialNumber, path: write(`${label}.pem`, res.body.certificate) };
  }

  /**
   * `openssl ocsp` against a URL, verifying under the root; stdout + stderr and the exit status.
   * Asynchronous: the service answers from this very process.
   */
  function opensslAsk(url: string, args: string[]): Promise<{ status: number | null; text: string }> {
    return ask('openssl', ['ocsp', '-url', url, '-issuer', file('inter.pem'), '-CAfile', file('root.pem'), '-resp_text', '-timeout', '20', ...args]);
  }

  /** hsm_signer_ocsp_responses_total of successful answers whose signature was reused. */
  async function reusedAnswers(): Promise<number> {
    const text = await (await fetch(`${svc.url}/metrics`)).text();
    return Number(/hsm_signer_ocsp_responses_total\{status="successful",source="cache"\} (\d+)/.exec(text)?.[1] ?? 0);
  }

  const post = (caId: string, body: Buffer | string, headers: Record<string, string> = { 'content-type': 'application/ocsp-request' }) =>
    fetch(`${svc.url}/api/v1/cert-manager/ocsp/${caId}`, { method: 'POST', headers, body });

  beforeAll(async () => {
    const key = execFileAsync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file('leaf.key')]);
    svc = await startTestService();
    await key;
    token = await login(svc.url, svc.admin);
    const root = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', { token, body: { projectId: PROJECT, type: 'root', commonName: 'OCSP Root', keyAlgorithm: 'RSA_2048', ttl: '2y' } });
    rootId = root.body.ca.id;
    // The issuing CA is ECDSA: its answers' signatures must be DER, which openssl and GnuTLS insist on.
    const inter = await request(svc.url, 'POST', '/api/v1/cert-manager/ca/internal', {
      token,
      body: { projectId: PROJECT, type: 'intermediate', commonName: 'OCSP Issuing', keyAlgorithm: 'EC_prime256v1', ttl: '1y', parentCaId: rootId },
    });
    interId = inter.body.ca.id;
    write('root.pem', pemBlocks((await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${rootId}/certificate`, { token })).body.certificate)[0]!);
    write('inter.pem', pemBlocks((await request(svc.url, 'GET', `/api/v1/cert-manager/ca/internal/${interId}/certificate`, { token })).body.certificate)[0]!);
    const profile = await request(svc.url, 'POST', '/api/v1/cert-manager/certificate-profiles', { token, body: { projectId: PROJECT, caId: interId, slug: 'ocsp-leaves', policy: POLICY } });
    if (profile.status !== 200) throw new Error(JSON.stringify(profile.body));
    profileId = profile.body.certificateProfile.id;
  });

  afterAll(async () => {
    await svc?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('issued certificates name the OCSP URL in AIA beside caIssuers (and the intermediate its parent’s)', async () => {
    const leaf = await issue();
    ocspUrl = openssl('x509', '-in', leaf.path, '-noout', '-ocsp_uri').trim();
    expect(ocspUrl).toBe(`${svc.url}/api/v1/cert-manager/ocsp/${interId}`);
    const aia = openssl('x509', '-in', leaf.path, '-noout', '-ext', 'authorityInfoAccess');
    expect(aia).toContain(`OCSP - URI:${ocspUrl}`);
    expect(aia).toContain(`CA Issuers - URI:${svc.url}/pki/ca/${interId}/certificate.der`);
    expect(openssl('x509', '-in', file('inter.pem'), '-noout', '-ocsp_uri').trim()).toBe(`${svc.url}/api/v1/cert-manager/ocsp/${rootId}`);
  });

  it('openssl ocsp: good, signed by the CA (verified under the root), nonce echoed; then revoked with time and reason at once; unknown for a serial never issued', async () => {
    const leaf = await issue();
    const good = await opensslAsk(ocspUrl, ['-cert', leaf.path]);
    expect(good.status, good.text).toBe(0);
    expect(good.text).toContain('Response verify OK');
    expect(good.text).toContain(`${leaf.path}: good`);
    expect(good.text).toMatch(/OCSP Nonce:/);
    expect(good.text).not.toMatch(/WARNING: no nonce|nonce verify error/i);
    expect(good.text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(good.text).toMatch(/Responder Id: [0-9A-F]{40}/);

    // Without a nonce, twice: the second answer reuses the signature made for "good".
    const reusedBefore = await reusedAnswers();
    for (let i = 0; i < 2; i++) expect((await opensslAsk(ocspUrl, ['-cert', leaf.path, '-no_nonce'])).text).toContain(`${leaf.path}: good`);
    expect(await reusedAnswers()).toBeGreaterThan(reusedBefore);

    const revoked = await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${leaf.certificateId}/revoke`, { token, body: { revocationReason: 'KEY_COMPROMISE' } });
    expect(revoked.status).toBe(200);
    // Asked without a nonce again, where the "good" signed above would be reused if the status were not read: revoked.
    const after = await opensslAsk(ocspUrl, ['-cert', leaf.path, '-no_nonce']);
    expect(after.text).toContain('Response verify OK');
    expect(after.text).toContain(`${leaf.path}: revoked`);
    expect(after.text).toMatch(/Reason: keyCompromise/);
    const revokedAt = new Date(revoked.body.revokedAt as string);
    expect(Date.parse(/Revocation Time: (.+)/.exec(after.text)![1]!.trim())).toBe(revokedAt.getTime());

    const unknown = await opensslAsk(ocspUrl, ['-serial', '0x0123456789abcdef']);
    expect(unknown.text).toContain('Response verify OK');
    expect(unknown.text).toContain('0x0123456789abcdef: unknown');
  });

  it('answers several certificates in one request, each with its own status', async () => {
    const a = await issue();
    const b = await issue();
    await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${b.certificateId}/revoke`, { token, body: { revocationReason: 'SUPERSEDED' } });
    const both = await opensslAsk(ocspUrl, ['-cert', a.path, '-cert', b.path]);
    expect(both.text).toContain('Response verify OK');
    expect(both.text).toContain(`${a.path}: good`);
    expect(both.text).toContain(`${b.path}: revoked`);
    expect(both.text).toMatch(/Reason: superseded/);
  });

  it('the answer verifies under the root alone and not under another trust anchor (the signature is checked, not just parsed)', async () => {
    const leaf = await issue();
    // Kept to a file, then read without -issuer: given -issuer, openssl would fall back to
    // trusting that certificate as the signer, whatever -CAfile says.
    const fetched = await opensslAsk(ocspUrl, ['-cert', leaf.path, '-respout', file('kept.resp')]);
    expect(fetched.text).toContain(`${leaf.path}: good`);
    openssl('req', '-x509', '-new', '-key', file('leaf.key'), '-subj', '/CN=Stranger', '-days', '1', '-out', file('stranger.pem'));
    const underRoot = run('openssl', ['ocsp', '-respin', file('kept.resp'), '-CAfile', file('root.pem')]);
    expect(`${underRoot.stdout}${underRoot.stderr}`).toContain('Response verify OK');
    const underStranger = run('openssl', ['ocsp', '-respin', file('kept.resp'), '-CAfile', file('stranger.pem')]);
    expect(`${underStranger.stdout}${underStranger.stderr}`).toMatch(/Response Verify Failure/i);
  });

  it('GnuTLS ocsptool asks the AIA URL and verifies the answer: good, then revoked', async () => {
    const leaf = await issue();
    const gnutls = () => ask('ocsptool', [`--ask=${ocspUrl}`, '--load-issuer', file('inter.pem'), '--load-cert', leaf.path, '--load-signer', file('inter.pem'), '--nonce']);
    const good = await gnutls();
    const goodText = good.text;
    expect(good.status, goodText).toBe(0);
    expect(goodText).toMatch(/Certificate Status: good/);
    expect(goodText).toMatch(/Nonce: [0-9a-f]+/);
    expect(goodText).toMatch(/Signature Algorithm: ECDSA-SHA256/);
    expect(goodText).toMatch(/Verifying OCSP Response: Success/);
    await request(svc.url, 'POST', `/api/v1/cert-manager/certificates/${leaf.certificateId}/revoke`, { token, body: { revocationReason: 'CESSATION_OF_OPERATION' } });
    const revoked = await gnutls();
    const revokedText = revoked.text;
    expect(revokedText).toMatch(/Certificate Status: revoked/);
    // ocsptool prints the time but not the reason (openssl's answer above shows the reason).
    expect(revokedText).toMatch(/Revocation time: /);
    expect(revokedText).toMatch(/Verifying OCSP Response: Success/);
  });

  it('GET: the URL-encoded base64 request; cache headers end at nextUpdate; the same answer as POST; times are GeneralizedTime without fraction', async () => {
    const leaf = await issue();
    openssl('ocsp', '-issuer', file('inter.pem'), '-cert', leaf.path, '-no_nonce', '-reqout', file('get.req'));
    const der = readFileSync(file('get.req'));
    const res = await fetch(`${ocspUrl}/${encodeURIComponent(der.toString('base64'))}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/ocsp-response');
    const answer = Buffer.from(await res.arrayBuffer());
    write('get.resp', answer);
    const text = run('openssl', ['ocsp', '-respin', file('get.resp'), '-issuer', file('inter.pem'), '-cert', leaf.path, '-CAfile', file('root.pem')]);
    expect(`${text.stdout}${text.stderr}`).toContain(`${leaf.path}: good`);
    const nextUpdate = Date.parse(/Next Update: (.+)/.exec(text.stdout)![1]!.trim());
    const thisUpdate = Date.parse(/This Update: (.+)/.exec(text.stdout)![1]!.trim());
    expect(Date.parse(res.headers.get('expires')!)).toBe(nextUpdate);
    expect(Date.parse(res.headers.get('last-modified')!)).toBe(thisUpdate);
    const maxAge = Number(/max-age=(\d+)/.exec(res.headers.get('cache-control')!)![1]);
    expect(maxAge).toBeGreaterThan(0);
    expect(Date.now() + maxAge * 1000).toBeLessThanOrEqual(nextUpdate + 1000);
    expect(res.headers.get('cache-control')).toMatch(/public/);
    expect(res.headers.get('etag')).toMatch(/^"[0-9a-f]{40}"$/);
    // A '/' left unencoded, as some clients send it, is the same request.
    const raw = await fetch(`${ocspUrl}/${der.toString('base64')}`);
    expect(Buffer.from(await raw.arrayBuffer())).toEqual(answer);
    // POST answers the same, without HTTP caching.
    const posted = await post(interId, der);
    expect(posted.headers.get('cache-control')).toBe('no-store');
    expect(Buffer.from(await posted.arrayBuffer())).toEqual(answer);

    const times = generalizedTimes(answer);
    expect(times.length).toBeGreaterThanOrEqual(3); // producedAt, thisUpdate, nextUpdate
    for (const time of times) expect(time).toMatch(/^\d{14}Z$/);
  });

  it('a nonce makes a fresh answer that is not cached by HTTP caches', async () => {
    const leaf = await issue();
    openssl('ocsp', '-issuer', file('inter.pem'), '-cert', leaf.path, '-reqout', file('nonce.req'));
    const der = readFileSync(file('nonce.req'));
    const res = await fetch(`${ocspUrl}/${encodeURIComponent(der.toString('base64'))}`);
    expect(res.headers.get('cache-control')).toBe('no-store');
    write('nonce.resp', Buffer.from(await res.arrayBuffer()));
    const read = run('openssl', ['ocsp', '-respin', file('nonce.resp'), '-reqin', file('nonce.req'), '-CAfile', file('root.pem'), '-resp_text']);
    expect(read.status, `${read.stdout}${read.stderr}`).toBe(0);
    expect(`${read.stdout}${read.stderr}`).not.toMatch(/nonce verify error/i);
  });

  describe('what a client must not be able to turn into an HTTP error', () => {
    it('a request about another CA\'s certificate, an unknown or malformed CA id: unauthorized', async () => {
      const leaf = await issue();
      openssl('ocsp', '-issuer', file('inter.pem'), '-cert', leaf.path, '-no_nonce', '-reqout', file('wrong.req'));
      const der = readFileSync(file('wrong.req'));
      for (const caId of [rootId, '00000000-0000-4000-8000-000000000000', 'not-a-ca', '%2Fetc', 'x'.repeat(300)]) {
        const res = await post(caId, der);
        expect(res.status, caId).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/ocsp-response');
        expect(Buffer.from(await res.arrayBuffer()), caId).toEqual(UNAUTHORIZED);
      }
      // openssl reports the status as it is.
      const asked = await opensslAsk(`${svc.url}/api/v1/cert-manager/ocsp/${rootId}`, ['-cert', leaf.path]);
      expect(asked.text).toMatch(/Responder Error: unauthorized \(6\)/);
    });

    it('garbage, truncated DER, an empty body, a huge nonce, an oversized body, bad GET encodings: malformedRequest', async () => {
      const leaf = await issue();
      openssl('ocsp', '-issuer', file('inter.pem'), '-cert', leaf.path, '-reqout', file('trunc.req'));
      const der = readFileSync(file('trunc.req'));
      const bodies: Array<Buffer | string> = [
        'garbage',
        '',
        der.subarray(0, der.length - 3),
        Buffer.concat([der, Buffer.from([0])]),
        Buffer.from([0x30, 0x84, 0x7f, 0xff, 0xff, 0xff]),
        Buffer.alloc(17 * 1024, 0x30),
      ];
      // openssl's request with its nonce replaced by one of 129 octets (RFC 9654's limit is 128).
      const [tbs] = children(only(der, TAG.sequence).value);
      const [requestList] = children(tbs!.value);
      const withNonce = (octets: number) =>
        sequence(sequence(requestList!.raw, tlv(0xa2, sequence(sequence(encodeOid('1.3.6.1.5.5.7.48.1.2'), tlv(TAG.octetString, tlv(TAG.octetString, Buffer.alloc(octets, 0xab))))))));
      bodies.push(withNonce(129), withNonce(0), withNonce(4000));
      // The same request with a nonce of 128 octets is answered.
      const accepted = await post(interId, withNonce(128));
      write('nonce128.resp', Buffer.from(await accepted.arrayBuffer()));
      expect(run('openssl', ['ocsp', '-respin', file('nonce128.resp'), '-CAfile', file('root.pem'), '-resp_text']).stdout).toMatch(/Cert Status: good/);
      for (const body of bodies) {
        const res = await post(interId, body);
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/ocsp-response');
        expect(Buffer.from(await res.arrayBuffer())).toEqual(MALFORMED);
      }
      for (const path of ['%zz', 'not!base64', `${encodeURIComponent('AAAA')}`, 'A'.repeat(9000)]) {
        const res = await fetch(`${ocspUrl}/${path}`);
        expect(res.status, path).toBe(200);
        expect(Buffer.from(await res.arrayBuffer()), path).toEqual(MALFORMED);
      }
    });

    it('needs no credentials and leaves no audit event per query', async () => {
      const before = await request(svc.url, 'GET', '/api/v1/audit-logs?limit=100', { token });
      const leaf = await issue();
      const asked = await opensslAsk(ocspUrl, ['-cert', leaf.path]);
      expect(asked.text).toContain(`${leaf.path}: good`);
      const after = await request(svc.url, 'GET', '/api/v1/audit-logs?limit=100', { token });
      const ocspEvents = (after.body.auditLogs as Array<{ action: string }>).filter((event) => event.action.includes('ocsp') || event.action === 'http.rejected');
      expect(ocspEvents.length).toBe((before.body.auditLogs as Array<{ action: string }>).filter((event) => event.action.includes('ocsp') || event.action === 'http.rejected').length);
    });
  });
});
