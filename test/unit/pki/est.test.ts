/**
 * EST's message formats and credentials: certs-only PKCS#7 as openssl reads it, CSR bodies in
 * the forms clients send, the identity of a presented certificate, HTTP Basic and the header
 * forms proxies use for a client certificate.
 */
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { basicPassword, certificateFromHeader } from '../../../src/http/est-credentials.js';
import { AppError } from '../../../src/errors.js';
import { base64Lines, certificateIdentity, certsOnly, estCsrText } from '../../../src/pki/est.js';

const dir = mkdtempSync(join(tmpdir(), 'est-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => join(dir, name);
const openssl = (...args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

function selfSigned(cn: string): { pem: string; der: Buffer } {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${cn}.key`), '-subj', `/CN=${cn}`, '-days', '1', '-set_serial', '0x00ff0102', '-out', file(`${cn}.pem`));
  const pem = readFileSync(file(`${cn}.pem`), 'utf8');
  return { pem, der: Buffer.from(new X509Certificate(pem).raw) };
}

describe('EST formats', () => {
  it('certsOnly: openssl pkcs7 reads the certificates back in order from the base64 answer', () => {
    const a = selfSigned('first');
    const b = selfSigned('second');
    writeFileSync(file('p7.b64'), base64Lines(certsOnly([a.der, b.der])));
    expect(readFileSync(file('p7.b64'), 'utf8').split('\n').every((line) => line.length <= 64)).toBe(true);
    openssl('base64', '-d', '-in', file('p7.b64'), '-out', file('p7.der'));
    const printed = openssl('pkcs7', '-inform', 'DER', '-in', file('p7.der'), '-print_certs', '-noout');
    expect(printed).toMatch(/subject=CN = first[\s\S]*subject=CN = second/);
    // A degenerate SignedData: no signers, content type id-data without content.
    const text = openssl('asn1parse', '-inform', 'DER', '-in', file('p7.der'));
    expect(text).toContain('pkcs7-signedData');
    expect(text).toContain('pkcs7-data');
  });

  it('estCsrText: base64 (with line breaks), PEM and bare DER', () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(file('k.pem'), key.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    openssl('req', '-new', '-key', file('k.pem'), '-subj', '/CN=x', '-outform', 'DER', '-out', file('x.der'));
    const der = readFileSync(file('x.der'));
    const wrapped = base64Lines(der).replace(/\n/g, '\r\n');
    expect(estCsrText(Buffer.from(wrapped))).toBe(wrapped);
    expect(Buffer.from(estCsrText(der), 'base64')).toEqual(der);
    expect(() => estCsrText(Buffer.alloc(0))).toThrow(AppError);
  });

  it('certificateIdentity: serial as stored (no leading zero octet) and the subject DER; undefined for garbage', () => {
    const { der } = selfSigned('ident');
    const identity = certificateIdentity(der)!;
    // -set_serial 0x00ff0102 is encoded 00 ff 01 02 (positive): the value is ff0102.
    expect(identity.serialHex).toBe('ff0102');
    expect(openssl('asn1parse', '-inform', 'DER', '-in', writeAndReturn('subject.der', identity.subject))).toContain(':ident');
    expect(certificateIdentity(Buffer.from('not a certificate'))).toBeUndefined();
    expect(certificateIdentity(der.subarray(0, 40))).toBeUndefined();
  });

  it('basicPassword: the password after the first colon; undefined for other schemes and broken headers', () => {
    const basic = (text: string) => `Basic ${Buffer.from(text).toString('base64')}`;
    expect(basicPassword(basic('user:pass:with:colons'))).toBe('pass:with:colons');
    expect(basicPassword(basic(':only-password'))).toBe('only-password');
    expect(basicPassword(`basic ${Buffer.from('u:p').toString('base64')}`)).toBe('p');
    expect(basicPassword(basic('no colon'))).toBeUndefined();
    expect(basicPassword('Bearer abc')).toBeUndefined();
    expect(basicPassword('Basic !!!')).toBeUndefined();
    expect(basicPassword(undefined)).toBeUndefined();
  });

  it('certificateFromHeader: URL-encoded PEM, PEM folded onto one line, base64 DER; nothing else', () => {
    const { pem, der } = selfSigned('header');
    const name = 'X-SSL-Client-Cert';
    expect(certificateFromHeader({ 'x-ssl-client-cert': encodeURIComponent(pem) }, name)).toEqual(der);
    expect(certificateFromHeader({ 'x-ssl-client-cert': pem.replace(/\n/g, ' ') }, name)).toEqual(der);
    expect(certificateFromHeader({ 'x-ssl-client-cert': der.toString('base64') }, name)).toEqual(der);
    expect(certificateFromHeader({ 'x-ssl-client-cert': '%zz' }, name)).toBeUndefined();
    expect(certificateFromHeader({ 'x-ssl-client-cert': '<script>' }, name)).toBeUndefined();
    expect(certificateFromHeader({}, name)).toBeUndefined();
  });
});

function writeAndReturn(name: string, content: Buffer): string {
  writeFileSync(file(name), content);
  return file(name);
}
