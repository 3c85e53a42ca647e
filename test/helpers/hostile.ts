/**
 * Generators of hostile requests for test/integration/hostile-input.test.ts: for every route of
 * the service, requests that must be refused (invalid by construction: at least one required
 * field is missing or broken, the caller lacks the right, the id names nothing, or the request
 * is not even well-formed), built with fast-check so that every run draws new ones from a seed.
 *
 * Also: a tiny DER writer and the strange CSRs and certificates the PKI requests carry (made
 * with @peculiar/x509 in process, so any extension or subject encoding can be forged while the
 * CSR's own signature stays valid).
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { CA_KEY_ALGORITHMS as SERVICE_CA_KEY_ALGORITHMS, KEY_ALGORITHMS as SERVICE_KEY_ALGORITHMS, KEY_USAGES as SERVICE_KEY_USAGES, SIGNING_ALGORITHMS as SERVICE_SIGNING_ALGORITHMS } from '../../src/algorithms.js';
import { TABLE, type FamilyName, type RouteKey } from '../../src/http/route-table.js';
import { REVOCATION_REASONS as SERVICE_REVOCATION_REASONS } from '../../src/pki/crl.js';
import { POLICY_KEY_ALGORITHMS as SERVICE_POLICY_KEY_ALGORITHMS } from '../../src/pki/policy.js';
import { ACTIONS as SERVICE_ACTIONS } from '../../src/services/permissions.js';

// ---------------------------------------------------------------------------------------------
// What is generated
// ---------------------------------------------------------------------------------------------

export type Family = 'kms' | 'pki';

export interface HostileRequest {
  /** Which generator made it (for the summary). */
  category: string;
  /** The route template it aims at, e.g. `POST /api/v1/kms/keys/:keyId/encrypt`. */
  route: string;
  method: string;
  /** Raw path and query, sent byte for byte (no client-side normalization). */
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  /** Which of the spec's error schema families the answer is held to. */
  family: Family;
}

export interface Fixtures {
  adminToken: string;
  /** Only `read` on project `lowProject`. */
  lowToken: string;
  /** A real token whose expiry has passed. */
  expiredToken: string;
  /** A real token of an identity that was deleted since. */
  revokedToken: string;
  project: string;
  lowProject: string;
  /** A project that holds a CA of its own (for "the CA belongs to another project"). */
  otherProject: string;

  adminClientId: string;
  secondClientId: string;
  adminIdentityId: string;
  secondIdentityId: string;
  secondSecretId: string;
  lowIdentityId: string;

  aesKeyId: string;
  aesKeyName: string;
  rsaKeyId: string;
  rsaKeyName: string;
  ecKeyId: string;
  ecKeyName: string;
  disabledKeyId: string;
  /** A ciphertext of the AES key (to corrupt). */
  aesCiphertext: string;

  /** The demo intermediate (active) and root. */
  caId: string;
  rootCaId: string;
  /** The demo `tls-server` profile on the intermediate. */
  profileId: string;
  profileSlug: string;
  /** An intermediate made for an outside parent, waiting for its certificate. */
  pendingCaId: string;
  /** A root CA that was disabled, and a profile on it. */
  disabledCaId: string;
  disabledProfileId: string;
  /** A root CA of `otherProject`. */
  otherProjectCaId: string;
  /** A certificate issued under the demo profile. */
  certificateId: string;

  /** Strange CSRs: `{label, pem}`; every one is sent with a ttl that cannot pass. */
  csrs: Array<{ label: string; pem: string }>;
  /** Certificates that must not be importable for the pending CA, whatever the chain. */
  certificates: Array<{ label: string; pem: string }>;
  /** A CA certificate for the pending CA's key, signed by `outsideRootPem`: valid, so it is only ever sent with a broken chain. */
  pendingCaCertificatePem: string;
  /** For the pending CA's key and signed by the outside root, but expired / not a CA certificate. */
  expiredPendingCaCertificatePem: string;
  notCaPendingCertificatePem: string;
  /** DER SubjectPublicKeyInfo of the pending CA's key and of the outside root's key. */
  pendingCaPublicKey: Buffer;
  outsideRootPublicKey: Buffer;
  outsideRootPem: string;
}

// ---------------------------------------------------------------------------------------------
// Patterns of the contract (docs/contract.md) and the schemas, to build values that are invalid for sure
// ---------------------------------------------------------------------------------------------

export const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
export const UUID = /^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i;
const SLUG = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;
const PROJECT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const isSlug = (value: unknown) => typeof value === 'string' && value.length >= 1 && value.length <= 32 && SLUG.test(value);
const isProjectId = (value: unknown) => typeof value === 'string' && value.length >= 1 && value.length <= 64 && PROJECT_ID.test(value);

// The service's own lists, widened to string so generated junk can be tested against them.
const KEY_USAGES: readonly string[] = SERVICE_KEY_USAGES;
const KEY_ALGORITHMS: readonly string[] = SERVICE_KEY_ALGORITHMS;
const SIGNING_ALGORITHMS: readonly string[] = SERVICE_SIGNING_ALGORITHMS;
const RSA_SIGNING = SIGNING_ALGORITHMS.filter((name) => name.startsWith('RSASSA'));
const EC_SIGNING = SIGNING_ALGORITHMS.filter((name) => name.startsWith('ECDSA'));
const ACTIONS: string[] = [...SERVICE_ACTIONS];
const CA_KEY_ALGORITHMS: string[] = [...SERVICE_CA_KEY_ALGORITHMS];
const REVOCATION_REASONS: string[] = Object.keys(SERVICE_REVOCATION_REASONS);
const POLICY_KEY_ALGORITHMS: string[] = [...SERVICE_POLICY_KEY_ALGORITHMS];
const DIGEST_LENGTHS = new Set([32, 48, 64]);

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/** Strings people do not expect: NUL, lone surrogates, bidi controls, combining marks, emoji, injections. */
export const ODD_STRINGS = [
  '',
  ' ',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\udfff',
  'x\ud83dy',
  '\udc00\ud800',
  '\u202eevil\u202c',
  '\u200f\u200e\u200d\u200c',
  '\u2066isolate\u2069',
  '\ufeffbom',
  'e\u0301\u0301\u0301\u0301\u0301',
  'Z\u0337\u0322\u031ba\u0335l\u0336g\u0337o\u0335',
  '\ud83d\udc69\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66',
  '\ud83d\udd11',
  '\uffff',
  '\ufffe',
  '\u2028\u2029',
  '\u0130\u0131',
  'stra\u00dfe',
  '\u00a0',
  '\t\n\r\v\f',
  '\u0085',
  '\u001b[31mred',
  '\\',
  '"',
  "'; DROP TABLE kms_keys; --",
  '" OR ""="',
  '%00',
  '%2e%2e%2f',
  '../../../../etc/passwd',
  '..\\..\\windows\\win.ini',
  '${jndi:ldap://x.invalid/a}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '__proto__',
  'constructor',
  'null',
  'undefined',
  'NaN',
  '-1',
  '1e309',
  '\uff10\uff11\uff12',
  '\uff21\uff22\uff23',
  'UPPER-CASE',
  '-leading',
  'trailing-',
  'double--dash',
  'under_score',
  'dot.name',
  'space name',
  '*',
  '%',
  '\u0000'.repeat(64),
  '\ud800'.repeat(40),
  'a'.repeat(33),
  'b'.repeat(65),
  'c'.repeat(257),
  'd'.repeat(501),
];

const LONE_SURROGATES = ['\ud800', '\udbff', '\udc00', '\udfff'];
const oddUnit = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.constantFrom(...LONE_SURROGATES) },
  { weight: 2, arbitrary: fc.constantFrom('\u0000', '\u202e', '\u200f', '\u0301', '\ufeff', '\u2028', '\ud83d\udd11', '/', '\\', '%', '?', '#', '&', '=', '+', ' ', '"', "'", '.', '-') },
);

/** Any odd string: from the list, random code points (lone surrogates included), or a mix. */
export const oddString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...ODD_STRINGS) },
  { weight: 3, arbitrary: fc.string({ unit: oddUnit, minLength: 1, maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...ODD_STRINGS), fc.string({ unit: oddUnit, maxLength: 10 })).map(([a, b]) => a + b) },
);

/** Very long strings (10 KB to 300 KB). */
export const hugeString: fc.Arbitrary<string> = fc
  .tuple(fc.integer({ min: 10_000, max: 300_000 }), fc.constantFrom('A', 'é', '\u0000', '\ud83d\udd11', '=', '-', '\ud800'))
  .map(([length, unit]) => unit.repeat(Math.ceil(length / unit.length)));

/** Nested arrays/objects, as a value (bounded so JSON.stringify still works). */
const nestedValue: fc.Arbitrary<unknown> = fc.integer({ min: 2, max: 400 }).chain((depth) =>
  fc.constantFrom('array', 'object').map((shape) => {
    let value: unknown = shape === 'array' ? [] : {};
    for (let i = 0; i < depth; i++) value = shape === 'array' ? [value] : { a: value };
    return value;
  }),
);

/** A JSON value that is not a string. */
export const notAString: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constant(Number.MAX_SAFE_INTEGER + 2),
  fc.array(fc.string({ maxLength: 5 }), { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 4 }),
  fc.constant([]),
  fc.constant({}),
  nestedValue,
);

/** A JSON value that is not a boolean (strings "true"/"false" included: the body is not coerced). */
const notABoolean: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.constantFrom('true', 'false', 'yes', '1', '0', ''),
  fc.integer({ min: -1, max: 2 }),
  fc.constant([true]),
  fc.constant({ value: true }),
);

/** A JSON value that is not an integer. */
const notAnInteger: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(null),
  fc.constantFrom('1', '0', 'one', ''),
  fc.double({ noNaN: true, noDefaultInfinity: true }).filter((value) => !Number.isInteger(value)),
  fc.boolean(),
  fc.constant([1]),
  fc.constant({}),
);

const corruptBase64 = fc
  .tuple(fc.base64String({ minLength: 4, maxLength: 64 }), fc.nat(), fc.constantFrom('!', '-', '_', ' ', '\n', '\t', '=', '.', '*', '\u00e9', '\u0000', '\ud800', '%', '?', '~'), fc.constantFrom('insert', 'strip', 'pad', 'cut'))
  .map(([valid, at, bad, how]) => {
    const position = at % (valid.length + 1);
    if (how === 'insert') return valid.slice(0, position) + bad + valid.slice(position);
    if (how === 'strip') return valid.replace(/=+$/, '') + 'A';
    if (how === 'pad') return `${valid}=`;
    return valid.slice(0, Math.max(1, position));
  });

/** Strings that are not standard padded base64 (docs/contract.md). */
export const badBase64: fc.Arbitrary<string> = fc
  .oneof(
    fc.constantFrom('abc', '!!!!', 'aGVsbG8', 'aGV sbG8=', 'aGVsbG8-', 'aGVsbG8_', '====', 'A===', 'AA=A', 'AAAA====', 'AA==AA==', ' AAAA', 'AAAA ', 'AA\nAA', 'AAAA\u0000', '\u00e9\u00e9\u00e9\u00e9', 'QQ', 'Q', 'data:;base64,AAAA', 'AAA=\n', 'aGVsbG8gd29ybGQ', '\ud800\ud800\ud800\ud800', '%41%41%41%41'),
    corruptBase64,
    oddString,
  )
  .filter((value) => !BASE64.test(value));

/** Base64 that decodes to more than 1 MiB (1 MiB + 1 to + 3 bytes), the payload cap of docs/contract.md. */
const overCapBase64 = fc.integer({ min: 1, max: 3 }).map((extra) => Buffer.alloc(1024 * 1024 + extra, 0x61).toString('base64'));

const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64');
const validBase64 = fc.uint8Array({ maxLength: 200 }).map((bytes) => b64(Buffer.from(bytes)));

/** Path segments that name nothing: traversal, broken percent-encoding, odd unicode, not uuids, very long. */
const RAW_SEGMENTS = [
  '..%2F..%2F..%2Fetc%2Fpasswd',
  '..%2f..%2f',
  '%2e%2e',
  '%2e%2e%2f%2e%2e%2fidentities',
  '..',
  '.',
  '...',
  '%00',
  'a%00b',
  '%',
  '%zz',
  '%E0%A4%A',
  '%ED%A0%80',
  '%C0%AF',
  '%C0%AE%C0%AE',
  '%FF',
  '%u0041',
  '%25',
  '%252e%252e',
  'not-a-uuid',
  '1234',
  '00000000-0000-0000-0000-00000000000g',
  '00000000-0000-0000-0000-0000000000000',
  '0',
  'null',
  'undefined',
  '%20',
  '+',
  '*',
  '%2A',
  ';',
  ',',
  '@',
  '~',
  "'",
  '%22',
  '%3Cscript%3E',
  '%0d%0aSet-Cookie:%20x=1',
  '%EF%BB%BF',
  'key-name',
  '%5C..%5C..%5C',
  '$(id)',
];

/** encodeURIComponent, except that lone surrogates become their (invalid) WTF-8 bytes instead of throwing. */
export function encodeSegment(value: string): string {
  let out = '';
  for (const char of value) {
    const code = char.codePointAt(0)!;
    if (code >= 0xd800 && code <= 0xdfff) {
      out += `%${(0xe0 | (code >> 12)).toString(16).toUpperCase()}%${(0x80 | ((code >> 6) & 0x3f)).toString(16).toUpperCase()}%${(0x80 | (code & 0x3f)).toString(16).toUpperCase()}`;
    } else {
      out += encodeURIComponent(char);
    }
  }
  return out;
}

const safeDecode = (segment: string) => {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
};

/** A path segment that is not a uuid at all. */
export const junkSegment: fc.Arbitrary<string> = fc
  .oneof(
    { weight: 4, arbitrary: fc.constantFrom(...RAW_SEGMENTS) },
    { weight: 3, arbitrary: oddString.map(encodeSegment) },
    { weight: 1, arbitrary: fc.integer({ min: 100, max: 6000 }).map((length) => 'a'.repeat(length)) },
    { weight: 1, arbitrary: fc.integer({ min: 10, max: 600 }).map((count) => '%2e%2e%2f'.repeat(count)) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.uuid(), fc.constantFrom('x', '%20', '%00', '%0a', '.json', '%2F', '..', '%E2%80%AE'))
        .chain(([uuid, suffix]) => fc.constantFrom(uuid + suffix, suffix + uuid, uuid.slice(1), `%7B${uuid}%7D`, uuid.replace(/-/g, ''), uuid.replace(/-/g, '_'))),
    },
  )
  .filter((segment) => segment.length > 0 && !UUID.test(safeDecode(segment)));

/** A well-formed uuid no fixture has (fresh v4 uuids never collide with the fixtures' ids). */
export const unknownUuid: fc.Arbitrary<string> = fc.oneof({ weight: 5, arbitrary: fc.uuid({ version: 4 }) }, { weight: 1, arbitrary: fc.uuid({ version: 4 }).map((uuid) => `urn:uuid:${uuid}`) });

/** Either kind of id that names nothing. */
export const badId: fc.Arbitrary<string> = fc.oneof({ weight: 3, arbitrary: junkSegment }, { weight: 2, arbitrary: unknownUuid });

/** What the service's ttl parser could read as a duration (anything else is refused for sure). */
const MS_SHAPED = /^\s*\d+(?:\.\d+)?\s*[a-zA-Z]+\s*$/;

/** Query values ajv could coerce to a number (' 5 ', '0x10' and '1e1' included): never used where a number is expected. */
const coercibleToNumber = (value: string) => value !== '' && Number.isFinite(Number(value));

/** Durations sign-certificate can never accept: not ms notation, too short, or far past any CA's expiry. */
export const impossibleTtl: fc.Arbitrary<string> = fc
  .oneof(
    fc.constantFrom('garbage', '0s', '999ms', '500', '1.5.5d', '-5d', 'd', '1e9d', '5 fortnights', '1 eon', '10 years ago', '  ', '\u0000', '\ud800d', '\uff15d', '200y', '1000y', '99999999999999999999y', 'Infinityd', 'NaNd', '30d; drop table', '1y 1d', 'P1Y', '365\u00a0d'),
    fc.integer({ min: 200, max: 1_000_000 }).map((years) => `${years}y`),
    fc.integer({ min: 80_000, max: 100_000_000 }).map((days) => `${days}d`),
    oddString.filter((value) => !MS_SHAPED.test(value)),
  )
  .filter((value) => value.length > 0);

const hexString = (minLength: number, maxLength: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength, maxLength });

/** An identity's permission entry that is valid, for bodies broken elsewhere. */
const validPermission = fc.record({ projectId: fc.constantFrom('default', 'p1', '*'), actions: fc.subarray(ACTIONS, { minLength: 1 }) });

// ---------------------------------------------------------------------------------------------
// Objects with at least one broken field
// ---------------------------------------------------------------------------------------------

interface Field {
  valid: fc.Arbitrary<unknown>;
  invalid: fc.Arbitrary<unknown>;
  required?: boolean;
}

const MISSING = Symbol('missing');

/**
 * An object where at least one field is broken (an invalid value, or absent when required) and
 * the others are valid, absent or broken; sometimes with unknown extra properties as well (which
 * the service strips).
 */
function brokenObject(fields: Record<string, Field>): fc.Arbitrary<Record<string, unknown>> {
  const names = Object.keys(fields);
  return fc
    .tuple(
      fc.subarray(names, { minLength: 1 }),
      fc.tuple(
        ...names.map((name) => {
          const field = fields[name]!;
          const brokenChoices: fc.Arbitrary<unknown>[] = [field.invalid];
          if (field.required) brokenChoices.push(fc.constant(MISSING));
          const keptChoices: fc.Arbitrary<unknown>[] = [field.valid];
          if (!field.required) keptChoices.push(fc.constant(MISSING));
          return fc.tuple(fc.oneof(...brokenChoices), fc.oneof(...keptChoices));
        }),
      ),
      fc.option(extraProperties, { nil: undefined, freq: 4 }),
    )
    .map(([broken, values, extra]) => {
      const object: Record<string, unknown> = {};
      names.forEach((name, index) => {
        const [bad, good] = values[index]!;
        const value = broken.includes(name) ? bad : good;
        if (value !== MISSING) object[name] = value;
      });
      // Extra properties never reuse a field name: a required field left out must stay out.
      const unknown = Object.fromEntries(Object.entries(extra ?? {}).filter(([key]) => !names.includes(key)));
      return { ...unknown, ...object };
    });
}

/** Unknown properties: prototype names, odd keys, big values (all stripped by the service). */
const extraProperties: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.constant({ isAdmin: true, permissions: [{ projectId: '*', actions: ['*'] }] }),
  fc.dictionary(oddString, fc.oneof(fc.string(), fc.integer(), nestedValue), { maxKeys: 5 }),
  fc.constant({ keyId: '00000000-0000-4000-8000-000000000000', id: '00000000-0000-4000-8000-000000000000', projectId2: '*' }),
  hugeString.map((value) => ({ padding: value })),
);

// ---------------------------------------------------------------------------------------------
// Bodies that are not JSON objects at all
// ---------------------------------------------------------------------------------------------

interface RawBody {
  body: string | Buffer;
  contentType?: string;
  extraHeaders?: Record<string, string>;
  label: string;
}

const deepArrays = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
const deepObjects = (depth: number, key = 'a') => `{"${key}":`.repeat(depth) + '1' + '}'.repeat(depth);

/**
 * Bodies that no route can accept: broken JSON text, JSON that is not an object, deep nesting,
 * odd encodings and charsets. `field` is a string field of the route (a deep object there is a
 * type error, so even removeAdditional cannot make the body valid).
 */
function rawBodies(field: string): fc.Arbitrary<RawBody> {
  return fc.oneof(
    fc.constantFrom<RawBody>(
      { body: '{', label: 'truncated' },
      { body: '{"', label: 'truncated' },
      { body: `{"${field}":`, label: 'truncated' },
      { body: `{"${field}":"abc`, label: 'truncated' },
      { body: `{"${field}":"x",}`, label: 'trailing comma' },
      { body: `{'${field}':'x'}`, label: 'single quotes' },
      { body: `{${field}:"x"}`, label: 'bare key' },
      { body: `{"${field}":NaN}`, label: 'NaN' },
      { body: `{"${field}":Infinity}`, label: 'Infinity' },
      { body: `{"${field}":1e999999}`, label: 'huge exponent' },
      { body: `{"${field}":-}`, label: 'lone minus' },
      { body: `{"${field}":0x10}`, label: 'hex number' },
      { body: `{"${field}":"\\ud800"} // comment`, label: 'comment' },
      { body: `{"${field}":"\\x41"}`, label: 'bad escape' },
      { body: `{"${field}":"\\u12"}`, label: 'short unicode escape' },
      { body: `{"${field}":"a\u0000b"}`, label: 'raw NUL in string' },
      { body: `{"${field}":"a\nb"}`, label: 'raw newline in string' },
      { body: `{"a":1}{"b":2}`, label: 'two documents' },
      { body: `{"${field}":undefined}`, label: 'undefined' },
      { body: '"just a string"', label: 'scalar' },
      { body: '12345', label: 'scalar' },
      { body: 'null', label: 'scalar' },
      { body: 'true', label: 'scalar' },
      { body: '[]', label: 'array' },
      { body: `[{"${field}":"x"}]`, label: 'array' },
      { body: ' ', label: 'whitespace only' },
      { body: `\ufeff{"${field}":5}`, label: 'BOM' },
      { body: Buffer.from([0xff, 0xfe, 0x7b, 0x00, 0x7d, 0x00]), label: 'utf-16 bytes' },
      // Malformed UTF-8 (decoded leniently, as U+FFFD, by the body parser): the field's type is wrong as well.
      { body: Buffer.concat([Buffer.from(`{"${field}":5,"`), Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80]), Buffer.from('":1}')]), label: 'invalid utf-8' },
      { body: Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x01, 0x02]), label: 'gzip magic without header' },
      { body: `${field}=x&a=b`, label: 'form body as json' },
      { body: `{"${field}":5}`, contentType: 'application/json; charset=latin1', label: 'unsupported charset' },
      { body: `{"${field}":5}`, contentType: 'application/json; charset=utf-7', label: 'unsupported charset' },
      { body: Buffer.from(`{"${field}":5}`, 'utf16le'), contentType: 'application/json; charset=utf-16', label: 'utf-16 body' },
      { body: `{"${field}":5}`, extraHeaders: { 'content-encoding': 'gzip' }, label: 'content-encoding gzip, not gzip' },
      { body: `{"${field}":5}`, extraHeaders: { 'content-encoding': 'deflate' }, label: 'content-encoding deflate, not deflate' },
      { body: `{"${field}":5}`, extraHeaders: { 'content-encoding': 'br' }, label: 'content-encoding br, not br' },
      { body: `{"${field}":5}`, extraHeaders: { 'content-encoding': 'x-bogus' }, label: 'unknown content-encoding' },
      { body: `{"${field}":5}`, extraHeaders: { 'content-encoding': 'gzip, gzip, gzip' }, label: 'stacked content-encoding' },
    ),
    fc.integer({ min: 1_000, max: 120_000 }).map((depth): RawBody => ({ body: deepArrays(depth), label: 'deep arrays' })),
    fc.integer({ min: 1_000, max: 120_000 }).map((depth): RawBody => ({ body: `{"${field}":${deepArrays(depth)}}`, label: 'deep arrays in a field' })),
    fc.integer({ min: 1_000, max: 60_000 }).map((depth): RawBody => ({ body: `{"${field}":${deepObjects(depth)}}`, label: 'deep objects in a field' })),
    fc.integer({ min: 1_000, max: 60_000 }).map((depth): RawBody => ({ body: deepArrays(depth).slice(0, depth + 3), label: 'deep unclosed arrays' })),
    fc.integer({ min: 1_000, max: 50_000 }).map((count): RawBody => ({ body: `{${Array.from({ length: count }, (_, i) => `"k${i}":${i}`).join(',')},"${field}":[]}`, label: 'wide object' })),
    fc.integer({ min: 1_000, max: 100_000 }).map((count): RawBody => ({ body: `[${'0,'.repeat(count)}0]`, label: 'long array' })),
    fc.integer({ min: 2, max: 5000 }).map((count): RawBody => ({ body: `{${`"${field}":"x",`.repeat(count)}"${field}":{}}`, label: 'duplicate keys' })),
    fc.constantFrom<RawBody>(
      { body: `{"__proto__":{"isAdmin":true,"${field}":"x"},"${field}":{}}`, label: 'prototype pollution' },
      { body: `{"constructor":{"prototype":{"${field}":"x"}},"${field}":[]}`, label: 'prototype pollution' },
      { body: `{"__proto__":[],"${field}":null}`, label: 'prototype pollution' },
    ),
  );
}

/** Content types under which express.json does not parse: the body is then validated as {}. */
const NON_JSON_CONTENT_TYPES = ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream', '', 'json', 'application/jsonx', '*/*'];

// ---------------------------------------------------------------------------------------------
// Who asks
// ---------------------------------------------------------------------------------------------

/** Authorization headers that authenticate nobody. */
function unauthenticated(fx: Fixtures): fc.Arbitrary<{ header?: string; label: string }> {
  return fc.oneof(
    fc.constantFrom<{ header?: string; label: string }>(
      { label: 'no token' },
      { header: '', label: 'empty header' },
      { header: 'Bearer', label: 'scheme only' },
      { header: 'Bearer ', label: 'scheme only' },
      { header: `Bearer ${fx.expiredToken}`, label: 'expired token' },
      { header: `bearer ${fx.expiredToken}`, label: 'expired token' },
      { header: `Bearer ${fx.revokedToken}`, label: 'token of a deleted identity' },
      { header: `Basic ${b64('admin:admin')}`, label: 'basic auth' },
      { header: `Token ${fx.adminToken}`, label: 'wrong scheme' },
      { header: `${fx.adminToken}`, label: 'no scheme' },
      { header: `Bearer ${fx.adminToken} ${fx.adminToken}`, label: 'two tokens' },
      { header: `Bearer ${fx.adminToken.slice(0, -1)}`, label: 'truncated token' },
      { header: `Bearer ${fx.adminToken}x`, label: 'extended token' },
      { header: `Bearer ${fx.adminToken.toUpperCase()}`, label: 'token case changed' },
      { header: 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.', label: 'jwt alg none' },
      { header: 'Bearer hss.', label: 'prefix only' },
      { header: 'Bearer null', label: 'null' },
      { header: 'Bearer \u00ff\u00fe\u0080', label: 'latin1 junk' },
    ),
    fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 80 }).map((token) => ({ header: `Bearer ${token.replace(/[\u0000-\u0008\u000a-\u001f\u007f]/g, 'x')}`, label: 'random token' })),
    fc.base64String({ minLength: 40, maxLength: 48 }).map((token) => ({ header: `Bearer hss.${token.replace(/[+/=]/g, 'A')}`, label: 'forged token' })),
    fc.integer({ min: 600, max: 7000 }).map((length) => ({ header: `Bearer ${'A'.repeat(length)}`, label: 'long token' })),
  );
}

type Caller = 'admin' | 'low';

const authHeader = (fx: Fixtures, caller: Caller) => `Bearer ${caller === 'admin' ? fx.adminToken : fx.lowToken}`;

// ---------------------------------------------------------------------------------------------
// Request assembly
// ---------------------------------------------------------------------------------------------

/** Request ids: none, a sane one (must come back as is), or an insane one (must be replaced). */
const requestIdHeader = fc.oneof(
  { weight: 6, arbitrary: fc.constant<string | undefined>(undefined) },
  { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9._:@/+=-]{1,40}$/) },
  { weight: 1, arbitrary: fc.constantFrom('has space', 'a'.repeat(129), 'semi;colon', '\u00e9t\u00e9', '<x>', '"quoted"', '') },
);

function finish(
  base: Omit<HostileRequest, 'headers' | 'body' | 'family'> & { family?: Family },
  auth: string | undefined,
  body: { json?: unknown; raw?: RawBody; contentType?: string } | undefined,
  requestId: string | undefined,
): HostileRequest {
  const headers: Record<string, string> = {};
  if (auth !== undefined) headers.authorization = auth;
  if (requestId !== undefined) headers['x-request-id'] = requestId;
  let payload: string | Buffer | undefined;
  if (body?.raw) {
    payload = body.raw.body;
    headers['content-type'] = body.raw.contentType ?? 'application/json';
    Object.assign(headers, body.raw.extraHeaders);
  } else if (body && 'json' in body) {
    payload = JSON.stringify(body.json);
    headers['content-type'] = body.contentType ?? 'application/json';
  }
  if (headers['content-type'] === '') delete headers['content-type'];
  const family: Family = base.family ?? (base.path.startsWith('/api/v3/pki') || base.path.startsWith('/api/v1/cert-manager') || base.path.startsWith('/pki/') ? 'pki' : 'kms');
  const request: HostileRequest = { category: base.category, route: base.route, method: base.method, path: base.path, headers, family };
  if (payload !== undefined) request.body = payload;
  return request;
}

/** The target of requests that are no route at all. */
export const NO_SUCH_ROUTE = '(no such route)';

/**
 * Families of the route table (src/http/route-table.ts) this generator leaves to tests of
 * their own, and why; every other route of the table must have a generator here.
 */
export const NOT_AIMED_AT: Partial<Record<FamilyName, string>> = {
  health: 'no input to break: /healthz, /readyz and /metrics take none (test/integration/operations.test.ts)',
  docs: 'the API reference takes no input beyond a file name (test/integration/openapi.test.ts)',
  ocsp: 'answers every request with an OCSPResponse, never the JSON envelope (test/integration/pki-ocsp.test.ts)',
  est: 'RFC 7030 bodies and Basic credentials, not JSON (test/integration/pki-est.test.ts)',
  acme: 'JWS bodies answered with ACME problem documents, never the envelope (test/integration/pki-acme.test.ts)',
};

/** The routes of the table the generators must aim at. */
export const aimedRoutes = (): RouteKey[] => TABLE.filter((route) => !(route.facts.family in NOT_AIMED_AT)).map((route) => route.key);

interface RouteSpec {
  /** A key of the route table, e.g. `POST /api/v1/kms/keys/:keyId/encrypt`, or NO_SUCH_ROUTE. */
  route: RouteKey | typeof NO_SUCH_ROUTE;
  /** How many requests a run draws for this route. */
  count: number;
  arbitrary: fc.Arbitrary<HostileRequest>;
}

/** One weighted case of a route: a label and what it draws. */
type Case = [weight: number, arbitrary: fc.Arbitrary<HostileRequest>];

const pick = (cases: Case[]) => fc.oneof(...cases.filter(([weight]) => weight > 0).map(([weight, arbitrary]) => ({ weight, arbitrary })));

function pathOf(template: string, params: Record<string, string>): string {
  return template.replace(/:([A-Za-z]+)/g, (_, name: string) => params[name] ?? `:${name}`);
}

/**
 * The cases every authenticated route gets: nobody authenticated (whatever the request), and
 * well-formed params with an admin but a body from rawBodies (when the route reads a body).
 */
function commonCases(
  fx: Fixtures,
  route: RouteKey,
  params: fc.Arbitrary<Record<string, string>>,
  options: { authenticated: boolean; bodyField?: string; bodyRequired?: boolean; query?: string },
): Case[] {
  const [method, template] = route.split(' ') as [string, string];
  const cases: Case[] = [];
  const withQuery = (path: string) => (options.query ? `${path}?${options.query}` : path);
  if (options.authenticated) {
    cases.push([
      2,
      fc.tuple(params, unauthenticated(fx), fc.option(validBody(options.bodyField), { nil: undefined }), requestIdHeader).map(([p, who, json, requestId]) =>
        finish({ category: `unauthenticated: ${who.label}`, route, method, path: withQuery(pathOf(template, p)) }, who.header, json === undefined ? undefined : { json }, requestId),
      ),
    ]);
  }
  if (options.bodyField) {
    const field = options.bodyField;
    cases.push([
      2,
      fc.tuple(params, rawBodies(field), requestIdHeader).map(([p, raw, requestId]) =>
        finish({ category: `body: ${raw.label}`, route, method, path: withQuery(pathOf(template, p)) }, authHeader(fx, 'admin'), { raw }, requestId),
      ),
    ]);
    if (options.bodyRequired) {
      // Not parsed as JSON, so validated as {}: every required field is missing.
      cases.push([
        1,
        fc.tuple(params, fc.constantFrom(...NON_JSON_CONTENT_TYPES), fc.constantFrom('{}', `{"${field}":"x"}`, `${field}=x`, ''), requestIdHeader).map(([p, contentType, text, requestId]) =>
          finish({ category: `body: content-type ${contentType || 'none'}`, route, method, path: withQuery(pathOf(template, p)) }, authHeader(fx, 'admin'), { raw: { body: text, contentType, label: '' } }, requestId),
        ),
      ]);
    }
  }
  return cases;
}

/** Some body for requests refused before the body matters. */
function validBody(field: string | undefined): fc.Arbitrary<unknown> {
  return fc.oneof(fc.constant({}), fc.constant(field ? { [field]: 'x' } : {}), fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }));
}

const constParams = (params: Record<string, string>) => fc.constant(params);

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

/** Values no schema accepts for a slug, a project id or a description (kms, identities and cert-manager have such fields). */
const slugInvalid = fc.oneof(notAString, oddString.filter((s) => !isSlug(s)), fc.integer({ min: 33, max: 2000 }).map((n) => 'k'.repeat(n)));
const projectInvalid = fc.oneof(notAString, oddString.filter((s) => !isProjectId(s)), fc.integer({ min: 65, max: 2000 }).map((n) => 'p'.repeat(n)));
const descriptionInvalid = fc.oneof(notAString, fc.integer({ min: 501, max: 20_000 }).map((n) => 'd'.repeat(n)), hugeString);

/** What the generators of every family share: the fixtures and the two callers' Authorization headers. */
interface RouteContext {
  fx: Fixtures;
  admin: string;
  low: string;
}

function routeContext(fx: Fixtures): RouteContext {
  return { fx, admin: authHeader(fx, 'admin'), low: authHeader(fx, 'low') };
}

/** One request with the given pieces. */
function make(
  route: RouteKey | typeof NO_SUCH_ROUTE,
  category: string,
  params: fc.Arbitrary<Record<string, string>>,
  auth: string | undefined,
  body?: fc.Arbitrary<unknown>,
  query?: fc.Arbitrary<string>,
): fc.Arbitrary<HostileRequest> {
  const [method, template] = route.split(' ') as [string, string];
  return fc.tuple(params, body ?? fc.constant(undefined), query ?? fc.constant(''), requestIdHeader).map(([p, json, q, requestId]) =>
    finish({ category, route, method, path: pathOf(template, p) + (q ? `?${q}` : '') }, auth, json === undefined ? undefined : { json }, requestId),
  );
}

/** A family's list of routes, and `add`, which appends a route drawing from its weighted cases. */
function familyRoutes() {
  const routes: RouteSpec[] = [];
  const add = (route: RouteKey | typeof NO_SUCH_ROUTE, count: number, cases: Case[]) => routes.push({ route, count, arbitrary: pick(cases) });
  return { routes, add };
}

export function hostileRoutes(fx: Fixtures): RouteSpec[] {
  const ctx = routeContext(fx);
  // In this order: the test seeds the requests of each route by its index in this list.
  const routes = [
    ...authRoutes(ctx),
    ...kmsRoutes(ctx),
    ...identityRoutes(ctx),
    ...signCertificateRoutes(ctx),
    ...certManagerRoutes(ctx),
    ...auditLogRoutes(ctx),
    ...publicPkiFileRoutes(ctx),
    ...unknownRoutesAndMethods(ctx),
  ];

  // Every route of the table has its generator (a new route without one fails here, by name).
  const missing = aimedRoutes().filter((key) => !routes.some((spec) => spec.route === key));
  if (missing.length > 0) throw new Error(`no hostile-input generator for ${missing.join(', ')}: add one, or say in NOT_AIMED_AT why its family has tests of its own`);
  return routes;
}

/** auth: login and token renewal, the routes that take no token. */
function authRoutes(ctx: RouteContext): RouteSpec[] {
  const { fx } = ctx;
  const { routes, add } = familyRoutes();
  {
    const route: RouteKey = 'POST /api/v1/auth/universal-auth/login';
    const clientId = fc.oneof(fc.constantFrom(fx.adminClientId, fx.secondClientId), fc.uuid(), oddString.filter((s) => s.length >= 1 && s.length <= 128));
    const broken = brokenObject({
      clientId: { valid: clientId, invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 129, max: 5000 }).map((n) => 'c'.repeat(n))), required: true },
      clientSecret: { valid: hexString(1, 64), invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 257, max: 5000 }).map((n) => 's'.repeat(n))), required: true },
    });
    // Well-formed but wrong: a real client id with a made-up secret (each costs a scrypt).
    const wrongSecret = fc.record({ clientId, clientSecret: fc.oneof(hexString(1, 64), oddString.filter((s) => s.length >= 1 && s.length <= 256)) });
    add(route, 260, [
      [4, make(route, 'schema: broken field', constParams({}), undefined, broken)],
      [2, make(route, 'semantic: wrong credentials', constParams({}), undefined, wrongSecret)],
      ...commonCases(fx, route, constParams({}), { authenticated: false, bodyField: 'clientId', bodyRequired: true }),
    ]);
  }
  {
    const route: RouteKey = 'POST /api/v1/auth/token/renew';
    const broken = brokenObject({
      accessToken: { valid: fc.constant('x'), invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 513, max: 9000 }).map((n) => 't'.repeat(n))), required: true },
    });
    const wrongToken = unauthenticated(fx)
      .filter((who) => who.header !== undefined && who.header.startsWith('Bearer ') && who.header.length > 'Bearer '.length && who.header.length <= 519 && !who.header.includes(fx.adminToken + ' '))
      .map((who) => ({ accessToken: who.header!.slice('Bearer '.length) }))
      .filter((body) => body.accessToken !== fx.adminToken && body.accessToken !== fx.lowToken);
    add(route, 200, [
      [3, make(route, 'schema: broken field', constParams({}), undefined, broken)],
      [3, make(route, 'semantic: token not renewable', constParams({}), undefined, fc.oneof(wrongToken, oddString.filter((s) => s.length > 0 && s.length <= 512).map((accessToken) => ({ accessToken }))))],
      ...commonCases(fx, route, constParams({}), { authenticated: false, bodyField: 'accessToken', bodyRequired: true }),
    ]);
  }
  return routes;
}

/** kms: the keys (create, list, read, change, delete, rotate) and the operations with them. */
function kmsRoutes(ctx: RouteContext): RouteSpec[] {
  const { fx, admin, low } = ctx;
  const { routes, add } = familyRoutes();
  const existingKeys = [fx.aesKeyId, fx.rsaKeyId, fx.ecKeyId, fx.disabledKeyId];
  const keyNames = [fx.aesKeyName, fx.rsaKeyName, fx.ecKeyName];
  const anyKeyId = fc.oneof(fc.constantFrom(...existingKeys), badId);
  const badKeyParams = badId.map((keyId) => ({ keyId }));
  const allKeyParams = anyKeyId.map((keyId) => ({ keyId }));

  {
    const route: RouteKey = 'POST /api/v1/kms/keys';
    const broken = brokenObject({
      projectId: { valid: fc.constantFrom(fx.project, 'p1'), invalid: projectInvalid, required: true },
      name: { valid: fc.stringMatching(/^[a-z0-9]{1,10}(-[a-z0-9]{1,10})?$/), invalid: slugInvalid, required: true },
      description: { valid: fc.string({ maxLength: 20 }), invalid: descriptionInvalid },
      keyUsage: { valid: fc.constantFrom(...KEY_USAGES), invalid: fc.oneof(notAString, oddString.filter((s) => !KEY_USAGES.includes(s)), fc.constantFrom('Encrypt-Decrypt', 'sign', 'wrap-unwrap')) },
      encryptionAlgorithm: { valid: fc.constantFrom(...KEY_ALGORITHMS), invalid: fc.oneof(notAString, oddString.filter((s) => !KEY_ALGORITHMS.includes(s)), fc.constantFrom('aes-512-gcm', 'AES-256-GCM', 'RSA_1024', 'ECC_NIST_P192', 'ed25519')) },
    });
    const freshName = fc.stringMatching(/^[a-z0-9]{1,10}(-[a-z0-9]{1,10})?$/);
    const mismatch = fc.oneof(
      fc.record({ projectId: fc.constant(fx.project), name: freshName, keyUsage: fc.constant('sign-verify'), encryptionAlgorithm: fc.constantFrom('aes-256-gcm', 'aes-128-gcm') }),
      fc.record({ projectId: fc.constant(fx.project), name: freshName, keyUsage: fc.constant('sign-verify') }),
      fc.record({ projectId: fc.constant(fx.project), name: freshName, encryptionAlgorithm: fc.constantFrom('RSA_2048', 'RSA_4096', 'ECC_NIST_P256', 'ECC_NIST_P521') }),
      fc.record({ projectId: fc.constant(fx.project), name: freshName, keyUsage: fc.constant('encrypt-decrypt'), encryptionAlgorithm: fc.constantFrom('RSA_3072', 'ECC_NIST_P384') }),
    );
    const duplicate = fc.record({ projectId: fc.constant(fx.project), name: fc.constantFrom(...keyNames), description: fc.option(oddString, { nil: undefined }) });
    const validCreate = fc.record({ projectId: fc.constantFrom(fx.project, fx.lowProject), name: freshName, keyUsage: fc.constant('encrypt-decrypt') });
    add(route, 400, [
      [6, make(route, 'schema: broken field', constParams({}), admin, broken)],
      [2, make(route, 'semantic: usage/algorithm mismatch', constParams({}), admin, mismatch)],
      [2, make(route, 'semantic: duplicate name', constParams({}), admin, duplicate)],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, validCreate)],
      ...commonCases(fx, route, constParams({}), { authenticated: true, bodyField: 'name', bodyRequired: true }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/kms/keys';
    type Pair = [string, string];
    const enc = (pairs: Pair[]) => pairs.map(([k, v]) => `${k}=${v}`).join('&');
    const goodProject: fc.Arbitrary<Pair> = fc.constant(['projectId', fx.project]);
    const badPairs: fc.Arbitrary<Pair> = fc.oneof(
      fc.constantFrom<Pair>(
        ['limit', '-1'],
        ['limit', '0'],
        ['limit', '101'],
        ['limit', 'abc'],
        ['limit', '1.5'],
        ['limit', '1e3'],
        ['limit', ''],
        ['limit', '%00'],
        ['offset', '-1'],
        ['offset', 'abc'],
        ['offset', '1.5'],
        ['offset', '-0.5'],
        ['offset', '%E0%A4%A'],
        // Not integers, though a lenient coercion makes them numbers: Infinity.
        ['offset', '1e309'],
        ['offset', 'Infinity'],
        ['limit', 'Infinity'],
        ['orderBy', 'drop%20table'],
        ['orderBy', 'name;DROP%20TABLE%20kms_keys'],
        ['orderBy', 'color'],
        ['orderBy', 'NAME'],
        ['orderBy', ''],
        ['orderDirection', 'up'],
        ['orderDirection', 'asc%00'],
        ['orderDirection', 'ASC'],
        ['projectId', ''],
        ['projectId', '*'],
        ['projectId', '..%2F..'],
        ['projectId', '%00'],
      ),
      fc.integer({ min: 65, max: 3000 }).map((n): Pair => ['search', 's'.repeat(n)]),
      fc.constantFrom('limit', 'offset', 'orderBy', 'orderDirection').chain((name) =>
        oddString.filter((value) => !coercibleToNumber(value) && !['name', 'createdAt', 'updatedAt', 'asc', 'desc'].includes(value)).map((value): Pair => [name, encodeSegment(value)]),
      ),
      oddString.filter((s) => !isProjectId(s)).map((value): Pair => ['projectId', encodeSegment(value)]),
      fc.constantFrom<Pair>(['limit', '1&limit=2'], ['projectId', `${fx.project}&projectId=${fx.project}`]),
    );
    // Parameters the service does not know (stripped): noise next to a broken one, never alone.
    const noise: fc.Arbitrary<Pair> = fc.oneof(
      fc.constantFrom<Pair>(['limit[]', '1'], ['limit[$gt]', '1'], ['__proto__[x]', '1'], ['constructor', 'x']),
      fc.tuple(oddString.map(encodeSegment), oddString.map(encodeSegment)).map(([k, v]): Pair => [k || 'x', v]),
    );
    const query = fc.tuple(fc.option(goodProject, { nil: undefined }), fc.array(badPairs, { minLength: 1, maxLength: 4 }), fc.array(noise, { maxLength: 2 })).map(([project, bad, extra]) => enc([...(project ? [project] : []), ...bad, ...extra]));
    const missingProject = fc.array(fc.tuple(fc.constantFrom('limit', 'offset', 'search', 'orderBy'), fc.constantFrom('1', '0', 'name', 'x')), { maxLength: 3 }).map((pairs) => enc(pairs as Pair[]));
    add(route, 400, [
      [6, make(route, 'query: broken parameter', constParams({}), admin, undefined, query)],
      [2, make(route, 'query: projectId missing', constParams({}), admin, undefined, missingProject)],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, undefined, fc.constant(`projectId=${fx.project}`))],
      ...commonCases(fx, route, constParams({}), { authenticated: true, query: `projectId=${fx.project}` }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/kms/keys/key-name/:keyName';
    const badName = fc.oneof(junkSegment, oddString.filter((s) => !isSlug(s)).map(encodeSegment)).filter((s) => s.length > 0);
    const unknownName = fc.stringMatching(/^[a-z0-9]{3,12}-[a-z0-9]{3,12}$/).filter((name) => !keyNames.includes(name));
    add(route, 250, [
      [3, make(route, 'path: bad name', badName.map((keyName) => ({ keyName })), admin, undefined, fc.constant(`projectId=${fx.project}`))],
      [2, make(route, 'semantic: unknown name', unknownName.map((keyName) => ({ keyName })), admin, undefined, fc.constant(`projectId=${fx.project}`))],
      [2, make(route, 'query: bad projectId', fc.constantFrom(...keyNames).map((keyName) => ({ keyName })), admin, undefined, fc.oneof(fc.constant(''), oddString.filter((s) => !isProjectId(s)).map((p) => `projectId=${encodeSegment(p)}`)))],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...keyNames).map((keyName) => ({ keyName })), low, undefined, fc.constant(`projectId=${fx.project}`))],
      ...commonCases(fx, route, fc.constantFrom(...keyNames).map((keyName) => ({ keyName })), { authenticated: true, query: `projectId=${fx.project}` }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/kms/keys/:keyId';
    add(route, 250, [
      [4, make(route, 'path: bad id', badKeyParams, admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), low)],
      ...commonCases(fx, route, allKeyParams, { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'PATCH /api/v1/kms/keys/:keyId';
    const broken = brokenObject({
      name: { valid: fc.stringMatching(/^[a-z0-9]{1,10}$/), invalid: slugInvalid },
      description: { valid: fc.string({ maxLength: 20 }), invalid: descriptionInvalid },
      isDisabled: { valid: fc.boolean(), invalid: notABoolean },
    });
    const validUpdate = fc.record({ name: fc.stringMatching(/^[a-z0-9]{1,10}$/), description: fc.string({ maxLength: 20 }), isDisabled: fc.boolean() }, { requiredKeys: [] });
    // Renaming one fixture key to another's name: a duplicate, refused.
    const duplicate = fc.constantFrom(...[0, 1, 2].flatMap((i) => [0, 1, 2].filter((j) => j !== i).map((j) => [existingKeys[i]!, keyNames[j]!] as const))).map(([keyId, name]) => ({ keyId, name }));
    add(route, 350, [
      [4, make(route, 'schema: broken field', fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), admin, broken)],
      [2, make(route, 'path: bad id', badKeyParams, admin, fc.oneof(validUpdate, broken))],
      [
        1,
        fc.tuple(duplicate, requestIdHeader).map(([{ keyId, name }, requestId]) =>
          finish({ category: 'semantic: duplicate name', route, method: 'PATCH', path: `/api/v1/kms/keys/${keyId}` }, admin, { json: { name } }, requestId),
        ),
      ],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), low, validUpdate)],
      ...commonCases(fx, route, fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), { authenticated: true, bodyField: 'name', bodyRequired: false }),
    ]);
  }
  {
    const route: RouteKey = 'DELETE /api/v1/kms/keys/:keyId';
    add(route, 250, [
      [4, make(route, 'path: bad id', badKeyParams, admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), low)],
      ...commonCases(fx, route, fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'POST /api/v1/kms/keys/:keyId/rotate';
    add(route, 250, [
      [3, make(route, 'path: bad id', badKeyParams, admin, fc.option(validBody(undefined), { nil: undefined }))],
      [2, make(route, 'semantic: not an encrypt-decrypt key', fc.constantFrom(fx.rsaKeyId, fx.ecKeyId).map((keyId) => ({ keyId })), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), low)],
      ...commonCases(fx, route, fc.constantFrom(...existingKeys).map((keyId) => ({ keyId })), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'POST /api/v1/kms/keys/:keyId/encrypt';
    const broken = brokenObject({ plaintext: { valid: validBase64, invalid: fc.oneof({ weight: 8, arbitrary: fc.oneof(notAString, badBase64) }, { weight: 1, arbitrary: overCapBase64 }), required: true } });
    const valid = fc.record({ plaintext: validBase64 });
    add(route, 400, [
      [5, make(route, 'schema: broken field', fc.constantFrom(fx.aesKeyId, fx.rsaKeyId).map((keyId) => ({ keyId })), admin, broken)],
      [2, make(route, 'semantic: key cannot encrypt', fc.constantFrom(fx.rsaKeyId, fx.ecKeyId, fx.disabledKeyId).map((keyId) => ({ keyId })), admin, valid)],
      [2, make(route, 'path: bad id', badKeyParams, admin, fc.oneof(valid, broken))],
      [1, make(route, 'permission: low-privilege caller', fc.constant({ keyId: fx.aesKeyId }), low, valid)],
      ...commonCases(fx, route, allKeyParams, { authenticated: true, bodyField: 'plaintext', bodyRequired: true }),
    ]);
  }
  {
    const route: RouteKey = 'POST /api/v1/kms/keys/:keyId/decrypt';
    const good = Buffer.from(fx.aesCiphertext, 'base64');
    const crafted = fc.oneof(
      // Right length, wrong bytes: fails GCM authentication in the token.
      fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, xor]) => {
        const copy = Buffer.from(good);
        const index = at % (copy.length - 3);
        copy[index] = copy[index]! ^ xor;
        return copy;
      }),
      // Trailers: v01/v02 with odd versions, truncated bodies, no trailer.
      fc.tuple(fc.uint8Array({ maxLength: 64 }), fc.constantFrom(0, 1, 2, 3, 255, 0x7fffffff, 0xffffffff)).map(([bytes, version]) => {
        const v = Buffer.alloc(4);
        v.writeUInt32BE(version);
        return Buffer.concat([Buffer.from(bytes), v, Buffer.from('v02')]);
      }),
      fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.concat([Buffer.from(bytes), Buffer.from('v01')])),
      fc.constantFrom(Buffer.from('v01'), Buffer.from('v02'), Buffer.from('xv02'), Buffer.from('\0\0\0\0v02'), Buffer.from('a'), good.subarray(0, good.length - 3), good.subarray(12), Buffer.concat([good, good])),
      fc.uint8Array({ minLength: 1, maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
    ).map((bytes) => ({ ciphertext: b64(bytes) })).filter((body) => body.ciphertext.length > 0 && body.ciphertext !== fx.aesCiphertext);
    const broken = brokenObject({ ciphertext: { valid: fc.constant(fx.aesCiphertext), invalid: fc.oneof(notAString, badBase64, fc.constant('')), required: true } });
    add(route, 450, [
      [4, make(route, 'schema: broken field', fc.constant({ keyId: fx.aesKeyId }), admin, broken)],
      [4, make(route, 'semantic: crafted ciphertext', fc.constant({ keyId: fx.aesKeyId }), admin, crafted)],
      [2, make(route, 'semantic: key cannot decrypt', fc.constantFrom(fx.rsaKeyId, fx.ecKeyId, fx.disabledKeyId).map((keyId) => ({ keyId })), admin, fc.constant({ ciphertext: fx.aesCiphertext }))],
      [1, make(route, 'path: bad id', badKeyParams, admin, fc.constant({ ciphertext: fx.aesCiphertext }))],
      [1, make(route, 'permission: low-privilege caller', fc.constant({ keyId: fx.aesKeyId }), low, fc.constant({ ciphertext: fx.aesCiphertext }))],
      ...commonCases(fx, route, allKeyParams, { authenticated: true, bodyField: 'ciphertext', bodyRequired: true }),
    ]);
  }
  {
    const signLike = (verify: boolean) => {
      const route: RouteKey = verify ? 'POST /api/v1/kms/keys/:keyId/verify' : 'POST /api/v1/kms/keys/:keyId/sign';
      const fields: Record<string, Field> = {
        signingAlgorithm: { valid: fc.constantFrom(...SIGNING_ALGORITHMS), invalid: fc.oneof(notAString, oddString, fc.constantFrom('ECDSA_SHA_1', 'RSASSA_PSS_SHA_1', 'ecdsa_sha_256', 'ED25519', 'RSASSA_PSS_SHA_256 ')), required: true },
        isDigest: { valid: fc.boolean(), invalid: notABoolean },
        data: { valid: validBase64, invalid: fc.oneof({ weight: 8, arbitrary: fc.oneof(notAString, badBase64) }, { weight: 1, arbitrary: overCapBase64 }), required: true },
      };
      if (verify) fields.signature = { valid: validBase64.filter((s) => s.length > 0), invalid: fc.oneof(notAString, badBase64, fc.constant(''), fc.integer({ min: 1025, max: 5000 }).map((n) => 'A'.repeat(Math.ceil(n / 4) * 4))), required: true };
      const broken = brokenObject(fields);
      const signature = fc.base64String({ minLength: 4, maxLength: 600 });
      const withSignature = <T extends object>(arb: fc.Arbitrary<T>) => (verify ? fc.tuple(arb, signature).map(([body, s]) => ({ ...body, signature: s })) : arb);
      // Each refused by the service: algorithm of the other family, digest of the wrong length.
      const wrongFamily = fc.oneof(
        fc.record({ keyId: fc.constant(fx.rsaKeyId), signingAlgorithm: fc.constantFrom(...EC_SIGNING), data: validBase64, isDigest: fc.constant(false) }),
        fc.record({ keyId: fc.constant(fx.ecKeyId), signingAlgorithm: fc.constantFrom(...RSA_SIGNING), data: validBase64, isDigest: fc.constant(false) }),
      );
      const wrongDigest = fc.record({
        keyId: fc.constantFrom(fx.rsaKeyId, fx.ecKeyId),
        signingAlgorithm: fc.constantFrom(...SIGNING_ALGORITHMS),
        data: fc.uint8Array({ maxLength: 130 }).filter((bytes) => !DIGEST_LENGTHS.has(bytes.length)).map((bytes) => b64(Buffer.from(bytes))),
        isDigest: fc.constant(true),
      }).map((body) => ({ ...body, signingAlgorithm: body.keyId === fx.rsaKeyId ? RSA_SIGNING[SIGNING_ALGORITHMS.indexOf(body.signingAlgorithm) % RSA_SIGNING.length]! : EC_SIGNING[SIGNING_ALGORITHMS.indexOf(body.signingAlgorithm) % EC_SIGNING.length]! }));
      const semantic = withSignature(fc.oneof(wrongFamily, wrongDigest));
      const validish = withSignature(fc.record({ signingAlgorithm: fc.constantFrom(...SIGNING_ALGORITHMS), data: validBase64 }));
      add(route, 450, [
        [5, make(route, 'schema: broken field', fc.constantFrom(fx.rsaKeyId, fx.ecKeyId).map((keyId) => ({ keyId })), admin, broken)],
        [
          3,
          fc.tuple(semantic, requestIdHeader).map(([{ keyId, ...body }, requestId]) =>
            finish({ category: 'semantic: algorithm or digest does not fit', route, method: 'POST', path: `/api/v1/kms/keys/${keyId}/${verify ? 'verify' : 'sign'}` }, admin, { json: body }, requestId),
          ),
        ],
        [2, make(route, 'semantic: key cannot sign', fc.constantFrom(fx.aesKeyId, fx.disabledKeyId).map((keyId) => ({ keyId })), admin, validish)],
        [1, make(route, 'path: bad id', badKeyParams, admin, validish)],
        [1, make(route, 'permission: low-privilege caller', fc.constantFrom(fx.rsaKeyId, fx.ecKeyId).map((keyId) => ({ keyId })), low, validish)],
        ...commonCases(fx, route, allKeyParams, { authenticated: true, bodyField: 'data', bodyRequired: true }),
      ]);
    };
    signLike(false);
    signLike(true);
  }
  for (const route of ['GET /api/v1/kms/keys/:keyId/public-key', 'GET /api/v1/kms/keys/:keyId/signing-algorithms'] as const) {
    add(route, 200, [
      [3, make(route, 'path: bad id', badKeyParams, admin)],
      [2, make(route, 'semantic: not a sign-verify key', fc.constantFrom(fx.aesKeyId, fx.disabledKeyId).map((keyId) => ({ keyId })), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(fx.rsaKeyId, fx.ecKeyId).map((keyId) => ({ keyId })), low)],
      ...commonCases(fx, route, allKeyParams, { authenticated: true }),
    ]);
  }
  return routes;
}

/** identities and their client secrets. */
function identityRoutes(ctx: RouteContext): RouteSpec[] {
  const { fx, admin, low } = ctx;
  const { routes, add } = familyRoutes();
  const identityIds = [fx.adminIdentityId, fx.secondIdentityId, fx.lowIdentityId];
  const otherIdentityIds = [fx.adminIdentityId, fx.secondIdentityId];
  {
    const route: RouteKey = 'POST /api/v1/identities/';
    const badPermission = fc.oneof(
      notAString,
      fc.record({ projectId: fc.oneof(projectInvalid.filter((p) => p !== '*'), fc.constant(MISSING)), actions: fc.subarray(ACTIONS, { minLength: 1 }) }).map((p) => (p.projectId === MISSING ? { actions: p.actions } : p)),
      fc.record({ projectId: fc.constant('default'), actions: fc.oneof(notAString, fc.constant([]), fc.constant(['read', 'read']), fc.array(oddString.filter((s) => !ACTIONS.includes(s) && s !== '*'), { minLength: 1, maxLength: 3 }), fc.constant(Array.from({ length: 13 }, (_, i) => ACTIONS[i % ACTIONS.length]))) }),
      fc.constant({ projectId: 'default' }),
    );
    const broken = brokenObject({
      name: { valid: fc.string({ minLength: 1, maxLength: 20 }), invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 65, max: 5000 }).map((n) => 'n'.repeat(n))), required: true },
      permissions: {
        valid: fc.array(validPermission, { minLength: 1, maxLength: 3 }),
        invalid: fc.oneof(
          notAString,
          fc.constant([]),
          fc.array(validPermission, { minLength: 101, maxLength: 120 }),
          fc.tuple(fc.array(validPermission, { maxLength: 2 }), badPermission).map(([good, bad]) => [...good, bad]),
        ),
        required: true,
      },
    });
    const validCreate = fc.record({ name: oddString.filter((s) => s.length >= 1 && s.length <= 64), permissions: fc.array(validPermission, { minLength: 1, maxLength: 2 }) });
    add(route, 300, [
      [6, make(route, 'schema: broken field', constParams({}), admin, broken)],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, validCreate)],
      ...commonCases(fx, route, constParams({}), { authenticated: true, bodyField: 'name', bodyRequired: true }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/identities/';
    // Any authenticated caller may list (what it may grant): only unauthenticated callers are refused.
    add(route, 100, commonCases(fx, route, constParams({}), { authenticated: true }));
  }
  for (const route of ['GET /api/v1/identities/:identityId', 'DELETE /api/v1/identities/:identityId', 'GET /api/v1/identities/:identityId/client-secrets'] as const) {
    add(route, 200, [
      [4, make(route, 'path: bad id', badId.map((identityId) => ({ identityId })), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...otherIdentityIds).map((identityId) => ({ identityId })), low)],
      ...commonCases(fx, route, fc.constantFrom(...identityIds).map((identityId) => ({ identityId })), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'POST /api/v1/identities/:identityId/client-secrets';
    const broken = brokenObject({ description: { valid: fc.string({ maxLength: 10 }), invalid: fc.oneof(notAString, fc.integer({ min: 257, max: 10_000 }).map((n) => 'd'.repeat(n)), hugeString), required: false } });
    add(route, 300, [
      [4, make(route, 'schema: broken field', fc.constantFrom(...identityIds).map((identityId) => ({ identityId })), admin, broken)],
      [2, make(route, 'path: bad id', badId.map((identityId) => ({ identityId })), admin, fc.oneof(fc.constant({}), fc.record({ description: oddString })))],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...otherIdentityIds).map((identityId) => ({ identityId })), low, fc.constant({}))],
      ...commonCases(fx, route, fc.constantFrom(...identityIds).map((identityId) => ({ identityId })), { authenticated: true, bodyField: 'description', bodyRequired: false }),
    ]);
  }
  {
    const route: RouteKey = 'DELETE /api/v1/identities/:identityId/client-secrets/:clientSecretId';
    const params = fc.oneof(
      badId.map((clientSecretId) => ({ identityId: fx.secondIdentityId, clientSecretId })),
      badId.map((identityId) => ({ identityId, clientSecretId: fx.secondSecretId })),
      fc.tuple(badId, badId).map(([identityId, clientSecretId]) => ({ identityId, clientSecretId })),
      fc.constantFrom(...otherIdentityIds).map((identityId) => ({ identityId, clientSecretId: fx.secondSecretId })).filter((p) => p.identityId !== fx.secondIdentityId),
    );
    add(route, 250, [
      [4, make(route, 'path: bad id', params, admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constant({ identityId: fx.secondIdentityId, clientSecretId: fx.secondSecretId }), low)],
      ...commonCases(fx, route, fc.constant({ identityId: fx.secondIdentityId, clientSecretId: fx.secondSecretId }), { authenticated: true }),
    ]);
  }
  return routes;
}

/** pki: sign-certificate. */
function signCertificateRoutes(ctx: RouteContext): RouteSpec[] {
  const { fx, admin, low } = ctx;
  const { routes, add } = familyRoutes();
  {
    const route: RouteKey = 'POST /api/v3/pki/certificates/sign-certificate';
    const csrText = csrVariants(fx);
    const broken = brokenObject({
      profileId: { valid: fc.constant(fx.profileId), invalid: fc.oneof(notAString, junkSegment.map(safeDecode), oddString), required: true },
      csr: { valid: csrText, invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 4097, max: 200_000 }).map((n) => `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(n)}\n-----END CERTIFICATE REQUEST-----\n`)), required: true },
      ttl: { valid: impossibleTtl, invalid: fc.oneof(notAString, fc.constant('')), required: true },
    });
    const bothTtlAndDates = fc.record({ profileId: fc.constant(fx.profileId), csr: csrText, ttl: fc.constantFrom('30d', '1h'), notBefore: fc.oneof(fc.constant(new Date().toISOString()), oddString), notAfter: fc.option(fc.constant('2099-01-01T00:00:00Z'), { nil: undefined }) });
    const validish = fc.record({ csr: csrText, ttl: fc.oneof(fc.constantFrom('30d', '24h'), impossibleTtl) });
    add(route, 1400, [
      [12, make(route, 'csr: strange CSR, impossible ttl', constParams({}), admin, fc.record({ profileId: fc.constant(fx.profileId), csr: csrText, ttl: impossibleTtl }))],
      [4, make(route, 'schema: broken field', constParams({}), admin, broken)],
      [1, make(route, 'schema: ttl with notBefore/notAfter', constParams({}), admin, bothTtlAndDates)],
      [2, make(route, 'semantic: unknown or disabled profile', constParams({}), admin, fc.tuple(fc.oneof(unknownUuid, fc.constant(fx.disabledProfileId)), validish).map(([profileId, body]) => ({ profileId, ...body })))],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, validish.map((body) => ({ profileId: fx.profileId, ...body })))],
      ...commonCases(fx, route, constParams({}), { authenticated: true, bodyField: 'csr', bodyRequired: true }),
    ]);
  }
  return routes;
}

/** pki: cert-manager (CAs, profiles, certificates). */
function certManagerRoutes(ctx: RouteContext): RouteSpec[] {
  const { fx, admin, low } = ctx;
  const { routes, add } = familyRoutes();
  const existingCas = [fx.caId, fx.rootCaId, fx.pendingCaId, fx.disabledCaId, fx.otherProjectCaId];
  const activeCas = [fx.caId, fx.rootCaId, fx.otherProjectCaId];
  {
    const route: RouteKey = 'POST /api/v1/cert-manager/ca/internal';
    const text = (max: number) => ({ valid: fc.string({ minLength: 1, maxLength: 20 }), invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: max + 1, max: max + 5000 }).map((n) => 'c'.repeat(n))) });
    const broken = brokenObject({
      projectId: { valid: fc.constant(fx.project), invalid: projectInvalid, required: true },
      type: { valid: fc.constantFrom('root', 'intermediate'), invalid: fc.oneof(notAString, fc.constantFrom('Root', 'leaf', 'sub-ca', ''), oddString), required: true },
      commonName: { ...text(64), required: true },
      organization: text(64),
      organizationalUnit: text(64),
      country: { valid: fc.constantFrom('DE', 'US'), invalid: fc.oneof(notAString, fc.constantFrom('de', 'DEU', 'D', '', '\u00c4\u00d6', '12'), oddString.filter((s) => !/^[A-Z]{2}$/.test(s))) },
      province: text(128),
      locality: text(128),
      keyAlgorithm: { valid: fc.constantFrom(...CA_KEY_ALGORITHMS), invalid: fc.oneof(notAString, fc.constantFrom('RSA_1024', 'EC_secp521r1', 'ECC_NIST_P256', 'ed25519', ''), oddString), required: true },
      ttl: { valid: fc.constantFrom('1y', '30d'), invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 33, max: 1000 }).map((n) => '9'.repeat(n - 1) + 'd')) },
      maxPathLength: { valid: fc.integer({ min: -1, max: 16 }), invalid: fc.oneof(notAnInteger, fc.integer({ min: 17 }), fc.integer({ max: -2 }), fc.constant(1e308)) },
      parentCaId: { valid: fc.constant(fx.rootCaId), invalid: fc.oneof(notAString, junkSegment.map(safeDecode)) },
    });
    const base = { projectId: fc.constant(fx.project), commonName: oddString.filter((s) => s.length >= 1 && s.length <= 64), keyAlgorithm: fc.constantFrom(...CA_KEY_ALGORITHMS) };
    // Each refused before any key is made: a ttl that is no duration, a root with a parent,
    // a parent that does not exist, is pending or disabled, or expires before the child would.
    const semantic = fc.oneof(
      fc.record({ ...base, type: fc.constantFrom('root', 'intermediate'), ttl: fc.oneof(impossibleDuration, oddString.filter((t) => t.length >= 1 && t.length <= 32 && !MS_SHAPED.test(t))) }),
      fc.record({ ...base, type: fc.constant('root'), parentCaId: fc.constantFrom(fx.rootCaId, fx.caId) }),
      fc.record({ ...base, type: fc.constant('intermediate'), parentCaId: fc.oneof(fc.uuid({ version: 4 }), fc.constantFrom(fx.pendingCaId, fx.disabledCaId)) }),
      fc.record({ ...base, type: fc.constant('intermediate'), parentCaId: fc.constant(fx.rootCaId), ttl: fc.constantFrom('200y', '1000y', '100000d') }),
    );
    const validCreate = fc.record({ ...base, type: fc.constant('root') });
    add(route, 350, [
      [6, make(route, 'schema: broken field', constParams({}), admin, broken)],
      [3, make(route, 'semantic: refused before keygen', constParams({}), admin, semantic)],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, validCreate)],
      ...commonCases(fx, route, constParams({}), { authenticated: true, bodyField: 'commonName', bodyRequired: true }),
    ]);
  }
  for (const route of ['GET /api/v1/cert-manager/ca/internal', 'GET /api/v1/cert-manager/certificate-profiles'] as const) {
    const badQuery = fc.oneof(
      fc.constant(''),
      fc.constantFrom('projectId=', 'projectId=*', 'projectId=%00', 'projectId=..%2F..', `projectId=${fx.project}&projectId=p1`, 'projectid=default', 'projectId[]=default'),
      oddString.filter((s) => !isProjectId(s)).map((p) => `projectId=${encodeSegment(p)}`),
      fc.integer({ min: 65, max: 3000 }).map((n) => `projectId=${'p'.repeat(n)}`),
    );
    add(route, 200, [
      [4, make(route, 'query: bad projectId', constParams({}), admin, undefined, badQuery)],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, undefined, fc.constantFrom(`projectId=${fx.project}`, `projectId=${fx.otherProject}`))],
      ...commonCases(fx, route, constParams({}), { authenticated: true, query: `projectId=${fx.project}` }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/cert-manager/ca/internal/:caId';
    add(route, 200, [
      [4, make(route, 'path: bad id', badId.map((caId) => ({ caId })), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingCas).map((caId) => ({ caId })), low)],
      ...commonCases(fx, route, fc.constantFrom(...existingCas).map((caId) => ({ caId })), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'PATCH /api/v1/cert-manager/ca/internal/:caId';
    const broken = brokenObject({ status: { valid: fc.constantFrom('active', 'disabled'), invalid: fc.oneof(notAString, fc.constantFrom('Active', 'revoked', 'pending-certificate', ''), oddString), required: true } });
    add(route, 250, [
      [4, make(route, 'schema: broken field', fc.constantFrom(...existingCas).map((caId) => ({ caId })), admin, broken)],
      [2, make(route, 'path: bad id', badId.map((caId) => ({ caId })), admin, fc.record({ status: fc.constantFrom('active', 'disabled') }))],
      [1, make(route, 'semantic: a pending CA cannot be activated', fc.constant({ caId: fx.pendingCaId }), admin, fc.constant({ status: 'active' }))],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingCas).map((caId) => ({ caId })), low, fc.record({ status: fc.constantFrom('active', 'disabled') }))],
      ...commonCases(fx, route, fc.constantFrom(...existingCas).map((caId) => ({ caId })), { authenticated: true, bodyField: 'status', bodyRequired: true }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/cert-manager/ca/internal/:caId/certificate';
    add(route, 150, [
      [4, make(route, 'path: bad id', badId.map((caId) => ({ caId })), admin)],
      [1, make(route, 'semantic: pending CA has no certificate', fc.constant({ caId: fx.pendingCaId }), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingCas).map((caId) => ({ caId })), low)],
      ...commonCases(fx, route, fc.constantFrom(...existingCas).map((caId) => ({ caId })), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/cert-manager/ca/internal/:caId/csr';
    add(route, 150, [
      [4, make(route, 'path: bad id', badId.map((caId) => ({ caId })), admin)],
      [1, make(route, 'semantic: CA without a CSR', fc.constantFrom(...activeCas, fx.disabledCaId).map((caId) => ({ caId })), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...existingCas).map((caId) => ({ caId })), low)],
      ...commonCases(fx, route, fc.constantFrom(...existingCas).map((caId) => ({ caId })), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'POST /api/v1/cert-manager/ca/internal/:caId/import-certificate';
    const certificateText = certificateVariants(fx);
    const goodCert = fc.constant(fx.pendingCaCertificatePem);
    const goodChain = fc.constant(fx.outsideRootPem);
    // The one import that would succeed is the pending CA's certificate (or any certificate for
    // its key) with a chain holding the outside root's key: never both in one request.
    const brokenChain = chainVariants(fx);
    const notForPendingKey = certificateText.filter((text) => !blocksContain(text, fx.pendingCaPublicKey));
    const broken = brokenObject({
      certificate: { valid: certificateText, invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 16_385, max: 100_000 }).map((n) => 'C'.repeat(n))), required: true },
      certificateChain: { valid: brokenChain, invalid: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 65_537, max: 200_000 }).map((n) => 'C'.repeat(n))), required: true },
    });
    const semanticPending = fc.oneof(
      fc.record({ certificate: notForPendingKey, certificateChain: fc.oneof(goodChain, brokenChain) }),
      fc.record({ certificate: fc.oneof(goodCert, certificateText), certificateChain: brokenChain }),
      // For the pending CA's key, chained right, but expired or not a CA certificate.
      fc.record({ certificate: fc.constantFrom(fx.expiredPendingCaCertificatePem, fx.notCaPendingCertificatePem), certificateChain: goodChain }),
    );
    const validish = fc.record({ certificate: goodCert, certificateChain: goodChain });
    add(route, 700, [
      [8, make(route, 'semantic: pending CA, certificate or chain unusable', fc.constant({ caId: fx.pendingCaId }), admin, semanticPending)],
      [2, make(route, 'semantic: CA already has a certificate', fc.constantFrom(...activeCas, fx.disabledCaId).map((caId) => ({ caId })), admin, fc.record({ certificate: fc.oneof(goodCert, certificateText), certificateChain: fc.oneof(goodChain, brokenChain) }))],
      [3, make(route, 'schema: broken field', fc.constantFrom(fx.pendingCaId, fx.caId).map((caId) => ({ caId })), admin, broken)],
      [1, make(route, 'path: bad id', badId.map((caId) => ({ caId })), admin, validish)],
      [1, make(route, 'permission: low-privilege caller', fc.constant({ caId: fx.pendingCaId }), low, validish)],
      ...commonCases(fx, route, fc.constantFrom(...existingCas).map((caId) => ({ caId })), { authenticated: true, bodyField: 'certificate', bodyRequired: true }),
    ]);
  }
  const policyArb = validPolicy();
  const brokenPolicy = brokenPolicyArb();
  {
    const route: RouteKey = 'POST /api/v1/cert-manager/certificate-profiles';
    const broken = brokenObject({
      projectId: { valid: fc.constant(fx.project), invalid: projectInvalid, required: true },
      caId: { valid: fc.constant(fx.caId), invalid: fc.oneof(notAString, junkSegment.map(safeDecode)), required: true },
      slug: { valid: fc.stringMatching(/^[a-z0-9]{1,10}$/), invalid: slugInvalid, required: true },
      description: { valid: fc.string({ maxLength: 20 }), invalid: descriptionInvalid },
      policy: { valid: policyArb, invalid: brokenPolicy, required: true },
      defaults: { valid: fc.constant({ ttl: '30d' }), invalid: fc.oneof(notAString.filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)), fc.record({ ttl: fc.oneof(notAString, fc.constant(''), fc.integer({ min: 33, max: 500 }).map((n) => 'd'.repeat(n))) })) },
    });
    const fresh = fc.stringMatching(/^[a-z0-9]{3,10}-[a-z0-9]{3,10}$/).filter((slug) => slug !== fx.profileSlug);
    // Each refused by the service: the slug exists, the CA is of another project or unknown, a duration is no duration.
    const semantic = fc.oneof(
      fc.record({ projectId: fc.constant(fx.project), caId: fc.constant(fx.caId), slug: fc.constant(fx.profileSlug), policy: policyArb }),
      fc.record({ projectId: fc.constant(fx.project), caId: fc.constant(fx.otherProjectCaId), slug: fresh, policy: policyArb }),
      fc.record({ projectId: fc.constant(fx.project), caId: fc.uuid({ version: 4 }), slug: fresh, policy: policyArb }),
      fc.record({ projectId: fc.constant(fx.project), caId: fc.constant(fx.caId), slug: fresh, policy: fc.tuple(policyArb, impossibleDuration).map(([policy, maxValidity]) => ({ ...policy, maxValidity })) }),
      fc.record({ projectId: fc.constant(fx.project), caId: fc.constant(fx.caId), slug: fresh, policy: policyArb, defaults: impossibleDuration.map((ttl) => ({ ttl })) }),
    );
    add(route, 400, [
      [6, make(route, 'schema: broken field', constParams({}), admin, broken)],
      [3, make(route, 'semantic: refused profile', constParams({}), admin, semantic)],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, fc.record({ projectId: fc.constant(fx.project), caId: fc.constant(fx.caId), slug: fresh, policy: policyArb }))],
      ...commonCases(fx, route, constParams({}), { authenticated: true, bodyField: 'slug', bodyRequired: true }),
    ]);
  }
  const profiles = [fx.profileId, fx.disabledProfileId];
  // eab-secret makes the key on its first read: only requests refused before that are sent.
  for (const route of ['GET /api/v1/cert-manager/certificate-profiles/:profileId', 'DELETE /api/v1/cert-manager/certificate-profiles/:profileId', 'GET /api/v1/cert-manager/certificate-profiles/:profileId/acme/eab-secret'] as const) {
    add(route, 200, [
      [4, make(route, 'path: bad id', badId.map((profileId) => ({ profileId })), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...profiles).map((profileId) => ({ profileId })), low)],
      ...commonCases(fx, route, fc.constantFrom(...profiles).map((profileId) => ({ profileId })), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'PATCH /api/v1/cert-manager/certificate-profiles/:profileId';
    const broken = brokenObject({
      caId: { valid: fc.constant(fx.caId), invalid: fc.oneof(notAString, junkSegment.map(safeDecode)) },
      description: { valid: fc.string({ maxLength: 20 }), invalid: descriptionInvalid },
      policy: { valid: policyArb, invalid: brokenPolicy },
      defaults: { valid: fc.constant({ ttl: '30d' }), invalid: fc.oneof(fc.constant(null), fc.constant('30d'), fc.record({ ttl: fc.oneof(notAString, fc.constant('')) })) },
    });
    const semantic = fc.oneof(
      fc.record({ caId: fc.constantFrom(fx.otherProjectCaId) }),
      fc.record({ caId: fc.uuid({ version: 4 }) }),
      fc.tuple(policyArb, impossibleDuration).map(([policy, maxValidity]) => ({ policy: { ...policy, maxValidity } })),
      impossibleDuration.map((ttl) => ({ defaults: { ttl } })),
    );
    add(route, 300, [
      [5, make(route, 'schema: broken field', fc.constantFrom(...profiles).map((profileId) => ({ profileId })), admin, broken)],
      [2, make(route, 'semantic: refused change', fc.constant({ profileId: fx.profileId }), admin, semantic)],
      [2, make(route, 'path: bad id', badId.map((profileId) => ({ profileId })), admin, fc.oneof(fc.constant({}), fc.record({ description: fc.string({ maxLength: 10 }) })))],
      [1, make(route, 'permission: low-privilege caller', fc.constantFrom(...profiles).map((profileId) => ({ profileId })), low, fc.constant({ description: 'x' }))],
      ...commonCases(fx, route, fc.constantFrom(...profiles).map((profileId) => ({ profileId })), { authenticated: true, bodyField: 'description', bodyRequired: false }),
    ]);
  }
  {
    const route: RouteKey = 'GET /api/v1/cert-manager/certificates';
    const bad = fc.oneof(
      fc.constantFrom('', 'offset=0', 'limit=10', `projectId=${fx.project}&limit=0`, `projectId=${fx.project}&limit=101`, `projectId=${fx.project}&limit=-1`, `projectId=${fx.project}&offset=-1`, `projectId=${fx.project}&offset=abc`, `projectId=${fx.project}&limit=1.5`, `projectId=${fx.project}&limit=%E0%A4%A`, `projectId=${fx.project}&offset=1;DROP%20TABLE%20certificates`, 'projectId=*', `projectId=${fx.project}&offset=1e309`, `projectId=${fx.project}&offset=Infinity`, `projectId=${fx.project}&offset=-Infinity`),
      fc.tuple(fc.constantFrom('offset', 'limit'), oddString.filter((s) => !coercibleToNumber(s))).map(([k, v]) => `projectId=${fx.project}&${k}=${encodeSegment(v)}`),
      oddString.filter((s) => !isProjectId(s)).map((p) => `projectId=${encodeSegment(p)}`),
    );
    add(route, 200, [
      [4, make(route, 'query: broken parameter', constParams({}), admin, undefined, bad)],
      [1, make(route, 'permission: low-privilege caller', constParams({}), low, undefined, fc.constant(`projectId=${fx.project}`))],
      ...commonCases(fx, route, constParams({}), { authenticated: true, query: `projectId=${fx.project}` }),
    ]);
  }
  for (const route of ['GET /api/v1/cert-manager/certificates/:certificateId', 'GET /api/v1/cert-manager/certificates/:certificateId/certificate'] as const) {
    add(route, 200, [
      [4, make(route, 'path: bad id', badId.map((certificateId) => ({ certificateId })), admin)],
      [1, make(route, 'permission: low-privilege caller', fc.constant({ certificateId: fx.certificateId }), low)],
      ...commonCases(fx, route, fc.constant({ certificateId: fx.certificateId }), { authenticated: true }),
    ]);
  }
  {
    const route: RouteKey = 'POST /api/v1/cert-manager/certificates/:certificateId/revoke';
    const broken = brokenObject({ revocationReason: { valid: fc.constantFrom(...REVOCATION_REASONS), invalid: fc.oneof(notAString, fc.constantFrom('keyCompromise', 'key_compromise', 'REMOVE_FROM_CRL', 'UNUSED', '7', ''), oddString), required: true } });
    add(route, 300, [
      [4, make(route, 'schema: broken field', fc.constant({ certificateId: fx.certificateId }), admin, broken)],
      [2, make(route, 'path: bad id', badId.map((certificateId) => ({ certificateId })), admin, fc.record({ revocationReason: fc.constantFrom(...REVOCATION_REASONS) }))],
      [1, make(route, 'permission: low-privilege caller', fc.constant({ certificateId: fx.certificateId }), low, fc.record({ revocationReason: fc.constantFrom(...REVOCATION_REASONS) }))],
      ...commonCases(fx, route, fc.constant({ certificateId: fx.certificateId }), { authenticated: true, bodyField: 'revocationReason', bodyRequired: true }),
    ]);
  }
  return routes;
}

/** audit logs. */
function auditLogRoutes(ctx: RouteContext): RouteSpec[] {
  const { fx, admin, low } = ctx;
  const { routes, add } = familyRoutes();
  {
    const route: RouteKey = 'GET /api/v1/audit-logs/';
    const badPair = fc.oneof(
      fc.constantFrom(
        'limit=-1',
        'limit=0',
        'limit=101',
        'limit=abc',
        'offset=-1',
        'offset=abc',
        'offset=1.5',
        'offset=1e309',
        'offset=Infinity',
        'orderDirection=sideways',
        'outcome=maybe',
        'resourceType=table',
        'identityId=not-a-uuid',
        'identityId=..%2F..%2Fetc%2Fpasswd',
        'action=DROP%20TABLE',
        'action=a..b',
        'action=',
        'resourceId=',
        'startTime=yesterday',
        'startTime=2024-02-30T00:00:00Z',
        'startTime=2024-13-01T00:00:00Z',
        'endTime=0',
        'endTime=%00',
        'startTime=2024-01-01',
        `startTime=${'2'.repeat(70)}`,
      ),
      fc.integer({ min: 129, max: 3000 }).map((n) => `resourceId=${'r'.repeat(n)}`),
      fc.tuple(fc.constantFrom('limit', 'offset', 'orderDirection', 'outcome', 'resourceType', 'identityId', 'startTime', 'endTime'), oddString.filter((s) => !coercibleToNumber(s) && !['asc', 'desc', 'success', 'denied', 'failure', 'key', 'ca', 'profile', 'certificate', 'identity', 'audit'].includes(s))).map(([k, v]) => `${k}=${encodeSegment(v)}`),
      oddString.filter((s) => !/^[a-z0-9]+(?:[.-][a-z0-9]+)*$/.test(s) || s.length > 64).map((v) => `action=${encodeSegment(v)}`),
    );
    add(route, 250, [
      [4, make(route, 'query: broken parameter', constParams({}), admin, undefined, fc.array(badPair, { minLength: 1, maxLength: 3 }).map((pairs) => pairs.join('&')))],
      [2, make(route, 'permission: low-privilege caller', constParams({}), low, undefined, fc.constantFrom('', 'limit=1', 'orderDirection=asc'))],
      ...commonCases(fx, route, constParams({}), { authenticated: true, query: 'limit=1' }),
    ]);
  }
  return routes;
}

/** public PKI files (CA certificate and CRL, no authentication). */
function publicPkiFileRoutes(ctx: RouteContext): RouteSpec[] {
  const { fx, admin } = ctx;
  const { routes, add } = familyRoutes();
  for (const route of ['GET /pki/ca/:caId/certificate.der', 'GET /pki/ca/:caId/crl.der'] as const) {
    add(route, 250, [
      [5, make(route, 'path: bad id', badId.map((caId) => ({ caId })), undefined)],
      [1, make(route, 'semantic: pending CA has none', fc.constant({ caId: fx.pendingCaId }), undefined)],
      [1, make(route, 'path: bad id, with a token', badId.map((caId) => ({ caId })), admin)],
    ]);
  }
  return routes;
}

/** no such route, or no such method on a route. */
function unknownRoutesAndMethods(ctx: RouteContext): RouteSpec[] {
  const { fx, admin, low } = ctx;
  const { routes, add } = familyRoutes();
  {
    const route = NO_SUCH_ROUTE;
    const unknownPath = fc.oneof(
      fc.constantFrom(
        '/api/v1/kms/keys/..%2F..%2Fidentities',
        '/api/v1/kms/../../etc/passwd',
        '/api/v1/kms/keys/%2e%2e/%2e%2e/identities',
        '/api/v2/kms/keys',
        '/api/v1/kms',
        '/api/v1/kms/',
        '/api/v1/kms/keys/00000000-0000-4000-8000-000000000000/unwrap',
        '/api/v1/cert-manager/ca/internal/00000000-0000-4000-8000-000000000000/delete',
        '/api/v3/pki/certificates',
        '/api/v3/pki/certificates/sign-certificate/extra',
        '/pki/ca',
        '/pki/ca/00000000-0000-4000-8000-000000000000',
        '/pki/ca/00000000-0000-4000-8000-000000000000/key.der',
        '/pki/../api/v1/identities',
        '/%2e%2e/%2e%2e/etc/passwd',
        '/..;/admin',
        '/admin',
        '/.env',
        '/.git/config',
        '/favicon.ico',
        '/api/v1/audit-logs/extra',
        '/api/v1/identities/x/y/z',
        '//api/v1/kms/keys',
        '/api/v1/auth/universal-auth/login/',
        '/api/v1/auth/universal-auth',
        '/%00',
        '/%E0%A4%A',
        '/healthz/..%2Fmetrics',
      ),
      fc.array(junkSegment, { minLength: 1, maxLength: 6 }).map((segments) => `/${segments.join('/')}`),
      fc.tuple(fc.constantFrom('/api/v1/kms/keys/', '/api/v1/identities/x/', '/api/v1/cert-manager/', '/api/v3/pki/', '/pki/ca/x/'), fc.array(junkSegment, { minLength: 1, maxLength: 3 })).map(([prefix, segments]) => prefix + segments.join('/') + '/x/y'),
    );
    const wrongMethod = fc.constantFrom(
      ['PUT', '/api/v1/kms/keys'],
      ['DELETE', '/api/v1/kms/keys'],
      ['PUT', `/api/v1/kms/keys/${fx.aesKeyId}`],
      ['GET', `/api/v1/kms/keys/${fx.aesKeyId}/encrypt`],
      ['GET', `/api/v1/kms/keys/${fx.aesKeyId}/rotate`],
      ['PUT', '/api/v3/pki/certificates/sign-certificate'],
      ['GET', '/api/v3/pki/certificates/sign-certificate'],
      ['DELETE', `/api/v1/cert-manager/ca/internal/${fx.caId}`],
      ['PUT', `/api/v1/cert-manager/certificates/${fx.certificateId}`],
      ['DELETE', `/api/v1/cert-manager/certificates/${fx.certificateId}`],
      ['GET', '/api/v1/auth/universal-auth/login'],
      ['DELETE', '/api/v1/auth/token/renew'],
      ['POST', '/api/v1/audit-logs'],
      ['DELETE', '/api/v1/audit-logs'],
      ['POST', `/pki/ca/${fx.caId}/crl.der`],
      ['DELETE', `/pki/ca/${fx.caId}/certificate.der`],
      ['PUT', '/healthz'],
      ['DELETE', '/readyz'],
      ['POST', '/metrics'],
      ['PROPFIND', '/api/v1/kms/keys'],
      ['FOO', '/api/v1/kms/keys'],
    );
    const who = fc.oneof(fc.constant<string | undefined>(admin), fc.constant<string | undefined>(undefined), fc.constant<string | undefined>(low));
    add(route, 300, [
      [3, fc.tuple(fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE'), unknownPath, who, requestIdHeader).map(([method, path, auth, requestId]) => finish({ category: 'route: unknown path', route, method, path, family: 'kms' }, auth, method === 'GET' || method === 'DELETE' ? undefined : { json: {} }, requestId))],
      [2, fc.tuple(wrongMethod, who, requestIdHeader).map(([[method, path], auth, requestId]) => finish({ category: 'route: wrong method', route, method, path, family: 'kms' }, auth, undefined, requestId))],
    ]);
  }
  return routes;
}

/** A profile policy that passes the schema (the requests carrying it are broken elsewhere). */
function validPolicy(): fc.Arbitrary<Record<string, unknown>> {
  return fc.record(
    {
      subject: fc.constant([{ type: 'CN', allowed: ['*.example.test'] }]),
      sans: fc.constant({ dns: ['*.example.test'] }),
      keyUsages: fc.constant({ allowed: [], always: ['digitalSignature'] }),
      extendedKeyUsages: fc.constant({ allowed: [], always: ['serverAuth'] }),
      keyAlgorithms: fc.subarray(POLICY_KEY_ALGORITHMS, { minLength: 1 }),
      maxValidity: fc.constantFrom('90d', '1y'),
      allowCa: fc.boolean(),
    },
    { requiredKeys: ['maxValidity'] },
  );
}

/** Durations the service cannot parse (schema-valid: at most 32 characters). */
const impossibleDuration = fc.constantFrom('forever', '0s', '999ms', '12', '-1d', '1.2.3d', 'Infinityd', '\u0000', '\ud800', '5 fortnights', 'P1Y', '\uff15d', ' ');

/** A policy object the schema refuses. */
function brokenPolicyArb(): fc.Arbitrary<unknown> {
  // notAString holds arrays, and an empty one or one of short strings is a valid pattern list
  // (an empty one a valid subject list): those are kept out of what must be refused.
  const patternsInvalid = fc.oneof(notAString.filter((v) => !Array.isArray(v)), fc.constant(Array.from({ length: 101 }, () => 'a')), fc.constant(['']), fc.constant(['x'.repeat(254)]), fc.constant([1, 2]));
  return fc.oneof(
    notAString.filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)),
    fc.constant({}),
    brokenObject({
      subject: {
        valid: fc.constant([{ type: 'CN' }]),
        invalid: fc.oneof(notAString.filter((v) => !Array.isArray(v) || v.length > 0), fc.constant([{}]), fc.constant([{ type: '' }]), fc.constant([{ type: 'CN', required: 'yes' }]), fc.constant([{ type: 'CN', allowed: 'x' }]), fc.constant(Array.from({ length: 33 }, () => ({ type: 'CN' })))),
      },
      sans: { valid: fc.constant({}), invalid: fc.oneof(notAString.filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)), patternsInvalid.map((dns) => ({ dns })), fc.constant({ required: 'no' })) },
      keyUsages: { valid: fc.constant({ allowed: [] }), invalid: fc.oneof(fc.constant({ allowed: ['signEverything'] }), fc.constant({ always: ['digitalSignature', 'digitalSignature'] }), fc.constant({ allowed: 'digitalSignature' }), fc.constant([])) },
      extendedKeyUsages: { valid: fc.constant({ allowed: [] }), invalid: fc.oneof(fc.constant({ allowed: ['1.3.6.1.5.5.7.3.1'] }), fc.constant({ always: ['anyExtendedKeyUsage'] }), fc.constant({ allowed: ['serverAuth', 'serverAuth'] }), fc.constant('serverAuth')) },
      keyAlgorithms: { valid: fc.constant(['EC_prime256v1']), invalid: fc.oneof(notAString, fc.constant([]), fc.constant(['RSA_1024']), fc.constant(['RSA_2048', 'RSA_2048']), fc.constant(['ed25519'])) },
      maxValidity: { valid: fc.constant('90d'), invalid: fc.oneof(notAString, fc.constant(''), fc.constant('9'.repeat(40) + 'd')), required: true },
      allowCa: { valid: fc.boolean(), invalid: notABoolean },
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// CSRs and certificates as text: the fixtures' own, and mutilated
// ---------------------------------------------------------------------------------------------

const derOfPem = (pem: string) => Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s/g, ''), 'base64');
export const pemOf = (der: Buffer | ArrayBuffer, label: string) => {
  const body = Buffer.from(der as ArrayBuffer).toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${body.join('\n')}\n-----END ${label}-----\n`;
};

/** Mutilations of a PEM text: byte flips, truncations, swapped labels, junk inside, odd line breaks. */
function mutilated(pems: string[], label: string): fc.Arbitrary<string> {
  const source = fc.constantFrom(...pems);
  return fc.oneof(
    fc.tuple(source, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 })).map(([pem, flips]) => {
      const der = derOfPem(pem);
      for (const [at, xor] of flips) der[at % der.length] = der[at % der.length]! ^ xor;
      return pemOf(der, label);
    }),
    fc.tuple(source, fc.nat()).map(([pem, at]) => {
      const der = derOfPem(pem);
      return pemOf(der.subarray(0, at % der.length), label);
    }),
    fc.tuple(source, fc.nat()).map(([pem, at]) => pem.slice(0, at % pem.length)),
    fc.tuple(source, fc.uint8Array({ minLength: 1, maxLength: 64 })).map(([pem, junk]) => pemOf(Buffer.concat([derOfPem(pem), Buffer.from(junk)]), label)),
    fc.tuple(source, fc.constantFrom('CERTIFICATE', 'CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST', 'PRIVATE KEY', 'X509 CRL', 'PKCS7', 'certificate request', '')).map(([pem, other]) => pem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, `-----$1 ${other}-----`)),
    source.map((pem) => derOfPem(pem).toString('base64')),
    source.map((pem) => derOfPem(pem).toString('hex')),
    source.map((pem) => derOfPem(pem).toString('latin1')),
    source.map((pem) => pem.replace(/\n/g, '\r\n')),
    source.map((pem) => pem.replace(/\n/g, '')),
    source.map((pem) => pem.replace(/\n/g, '\n\n\n')),
    source.map((pem) => pem + pem),
    source.map((pem) => pem.replace(/-----END [A-Z ]+-----\n?$/, '')),
    source.map((pem) => pem.replace(/^-----BEGIN [A-Z ]+-----\n/, '')),
    fc.tuple(source, fc.nat(), fc.constantFrom('!', '*', '\u0000', '\u00e9', '\ud800', '-----', '=', '====', '\\', '"')).map(([pem, at, junk]) => {
      const start = pem.indexOf('\n') + 1;
      const position = start + (at % Math.max(1, pem.length - start - 40));
      return pem.slice(0, position) + junk + pem.slice(position);
    }),
    fc.constantFrom(
      '',
      ' ',
      `-----BEGIN ${label}-----\n-----END ${label}-----\n`,
      `-----BEGIN ${label}-----\n====\n-----END ${label}-----\n`,
      `-----BEGIN ${label}-----\nMAA=\n-----END ${label}-----\n`,
      `-----BEGIN ${label}-----\nMIIBAA==\n-----END ${label}-----\n`,
      `-----BEGIN ${label}-----\n${'MIIB'.repeat(200)}\n-----END ${label}-----\n`,
      `-----BEGIN ${label}-----\n${Buffer.from('junk').toString('base64')}\n-----END ${label}-----\n`,
      `-----BEGIN ${label}-----`,
      'not a pem',
      '\u0000\u0000\u0000',
      '-----BEGIN -----\n-----END -----',
    ),
  );
}

function csrVariants(fx: Fixtures): fc.Arbitrary<string> {
  const pems = fx.csrs.map((csr) => csr.pem);
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...pems) }, { weight: 3, arbitrary: mutilated(pems, 'CERTIFICATE REQUEST') }, { weight: 1, arbitrary: oddString }, { weight: 1, arbitrary: mutilated(fx.certificates.map((c) => c.pem), 'CERTIFICATE') });
}

function certificateVariants(fx: Fixtures): fc.Arbitrary<string> {
  const pems = fx.certificates.map((c) => c.pem);
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...pems) }, { weight: 3, arbitrary: mutilated([...pems, fx.pendingCaCertificatePem], 'CERTIFICATE') }, { weight: 1, arbitrary: oddString }, { weight: 1, arbitrary: mutilated(fx.csrs.slice(0, 3).map((c) => c.pem), 'CERTIFICATE REQUEST') });
}

/**
 * Chains that can never complete the pending CA's import: no CERTIFICATE block the service
 * would read holds the outside root's public key (a mutilated root whose key survived would
 * still verify the CA certificate's signature).
 */
function chainVariants(fx: Fixtures): fc.Arbitrary<string> {
  const others = fx.certificates.map((c) => c.pem);
  return fc
    .oneof(
      fc.constantFrom(...others),
      fc.array(fc.constantFrom(...others), { minLength: 2, maxLength: 4 }).map((list) => list.join('\n')),
      mutilated([fx.outsideRootPem], 'CERTIFICATE'),
      fc.tuple(fc.constantFrom(...others), mutilated([fx.outsideRootPem], 'CERTIFICATE')).map(([other, broken]) => `${other}\n${broken}`),
      fc.constantFrom(
        `-----BEGIN CERTIFICATE-----\n${Buffer.from('junk').toString('base64')}\n-----END CERTIFICATE-----\n`,
        `-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n`,
        'no chain at all',
        `-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n`,
      ),
      oddString,
    )
    .filter((chain) => chain.length > 0 && !blocksContain(chain, fx.outsideRootPublicKey));
}

/** Whether any CERTIFICATE block the service would decode (its own regex) holds `needle` (DER bytes). */
export function blocksContain(text: string, needle: Buffer): boolean {
  const blocks = [...text.matchAll(/-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g)];
  return blocks.some((block) => Buffer.from(block[1]!.replace(/\s/g, ''), 'base64').includes(needle));
}

// ---------------------------------------------------------------------------------------------
// DER writer, for extensions and names no library would produce
// ---------------------------------------------------------------------------------------------

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export const tlv = (tag: number, ...content: Buffer[]) => {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
};

function oidBytes(oid: string): Buffer {
  const arcs = oid.split('.').map((arc) => BigInt(arc));
  const out: number[] = [];
  const push = (value: bigint) => {
    const chunk: number[] = [Number(value & 0x7fn)];
    for (let v = value >> 7n; v > 0n; v >>= 7n) chunk.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...chunk);
  };
  push(arcs[0]! * 40n + arcs[1]!);
  for (const arc of arcs.slice(2)) push(arc);
  return Buffer.from(out);
}

export const der = {
  seq: (...items: Buffer[]) => tlv(0x30, ...items),
  set: (...items: Buffer[]) => tlv(0x31, ...items),
  oid: (oid: string) => tlv(0x06, oidBytes(oid)),
  int: (bytes: Buffer | number[]) => tlv(0x02, Buffer.from(bytes)),
  bool: (value: boolean) => tlv(0x01, Buffer.from([value ? 0xff : 0x00])),
  nul: () => Buffer.from([0x05, 0x00]),
  octet: (bytes: Buffer) => tlv(0x04, bytes),
  bits: (unused: number, bytes: number[]) => tlv(0x03, Buffer.from([unused, ...bytes])),
  utf8: (bytes: Buffer | string) => tlv(0x0c, Buffer.from(bytes)),
  printable: (text: string) => tlv(0x13, Buffer.from(text, 'latin1')),
  ia5: (bytes: Buffer | string) => tlv(0x16, Buffer.from(bytes)),
  bmp: (bytes: Buffer) => tlv(0x1e, bytes),
  /** Context-specific tag n, primitive or constructed. */
  ctx: (n: number, constructed: boolean, ...content: Buffer[]) => tlv((constructed ? 0xa0 : 0x80) | n, ...content),
};

const OID = {
  cn: '2.5.4.3',
  o: '2.5.4.10',
  c: '2.5.4.6',
  email: '1.2.840.113549.1.9.1',
  san: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  eku: '2.5.29.37',
  nameConstraints: '2.5.29.30',
  extensionRequest: '1.2.840.113549.1.9.14',
  challengePassword: '1.2.840.113549.1.9.7',
};

const rdn = (oid: string, value: Buffer) => der.set(der.seq(der.oid(oid), value));

// ---------------------------------------------------------------------------------------------
// Strange CSRs (signature valid), made in process with @peculiar/x509
// ---------------------------------------------------------------------------------------------

interface CsrSpec {
  label: string;
  subject: Buffer;
  extensions: Array<{ oid: string; critical: boolean; value: Buffer }>;
  attributes: Array<{ oid: string; values: Buffer[] }>;
  key: 'p256' | 'p384' | 'p521' | 'rsa1024' | 'rsa2048';
}

const generalNames = fc.oneof(
  fc.constantFrom(
    der.ctx(2, false, Buffer.from('ok.example.test')),
    der.ctx(2, false, Buffer.from('')),
    der.ctx(2, false, Buffer.from('*.*.example.test')),
    der.ctx(2, false, Buffer.from('a\u0000b.example.test', 'latin1')),
    der.ctx(2, false, Buffer.from([0xff, 0xfe, 0xc3, 0x28])),
    der.ctx(2, false, Buffer.from('x'.repeat(300))),
    der.ctx(2, false, Buffer.from('b\u00fccher.example', 'utf8')),
    der.ctx(2, false, Buffer.from('..')),
    der.ctx(1, false, Buffer.from('user@')),
    der.ctx(1, false, Buffer.from('@example.test')),
    der.ctx(1, false, Buffer.from('a@b@c')),
    der.ctx(6, false, Buffer.from('javascript:alert(1)')),
    der.ctx(6, false, Buffer.from('spiffe://')),
    der.ctx(6, false, Buffer.from('')),
    der.ctx(7, false, Buffer.from([])),
    der.ctx(7, false, Buffer.from([10])),
    der.ctx(7, false, Buffer.from([10, 0, 0, 1, 5])),
    der.ctx(7, false, Buffer.from([10, 0, 0, 1, 255, 255, 255, 0])),
    der.ctx(7, false, Buffer.alloc(17, 1)),
    der.ctx(7, false, Buffer.alloc(32, 0xff)),
    der.ctx(7, false, Buffer.alloc(16, 0)),
    der.ctx(8, false, oidBytes('1.2.3.4')),
    der.ctx(8, false, Buffer.from([0x80])),
    der.ctx(4, true, der.seq(rdn(OID.cn, der.utf8('dir name')))),
    der.ctx(4, true, Buffer.from([0x05, 0x00])),
    der.ctx(0, true, der.oid('1.3.6.1.4.1.311.20.2.3'), der.ctx(0, true, der.utf8('upn@example.test'))),
    der.ctx(0, true, der.oid('1.2.3.4.5'), der.ctx(0, true, der.int([1]))),
    der.ctx(0, true, der.oid('1.3.6.1.4.1.311.25.1'), der.ctx(0, true, der.octet(Buffer.alloc(3)))),
    der.ctx(0, true, Buffer.from([0x01, 0x01, 0xff])),
    der.ctx(3, true, der.seq()),
    der.ctx(5, true, der.seq()),
    der.ctx(9, false, Buffer.from('tag nine')),
    der.ctx(2, true, der.ia5('constructed dns')),
  ),
  fc.uint8Array({ minLength: 1, maxLength: 12 }).map((bytes) => der.ctx(7, false, Buffer.from(bytes))),
  fc.string({ unit: oddUnit, maxLength: 30 }).map((s) => der.ctx(2, false, Buffer.from(s, 'utf8'))),
);

const extensionValue = (oid: string): fc.Arbitrary<Buffer> => {
  const junk = fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes));
  switch (oid) {
    case OID.san:
      return fc.oneof(
        { weight: 4, arbitrary: fc.array(generalNames, { minLength: 1, maxLength: 6 }).map((names) => der.seq(...names)) },
        { weight: 1, arbitrary: fc.constantFrom(der.seq(), der.nul(), der.seq(der.nul()), Buffer.from([0x30, 0x80, 0x00, 0x00]), Buffer.from([0x30, 0x05, 0x82])) },
        { weight: 1, arbitrary: fc.integer({ min: 60, max: 140 }).map((count) => der.seq(...Array.from({ length: count }, (_, i) => der.ctx(2, false, Buffer.from(`n${i}.example.test`))))) },
        { weight: 1, arbitrary: junk },
      );
    case OID.basicConstraints:
      return fc.oneof(
        fc.constantFrom(
          der.seq(),
          der.seq(der.bool(true)),
          der.seq(der.bool(true), der.int([0xff])),
          der.seq(der.bool(true), der.int([0x80, 0, 0, 0])),
          der.seq(der.bool(true), der.int([0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
          der.seq(der.bool(true), der.int([])),
          der.seq(der.int([3])),
          der.seq(der.bool(false), der.int([1])),
          der.seq(der.bool(true), der.utf8('three')),
          der.seq(der.bool(true), der.int([1]), der.int([2])),
          Buffer.from([0x30, 0x03, 0x01, 0x01, 0x07]),
        ),
        junk,
      );
    case OID.keyUsage:
      return fc.oneof(
        fc.constantFrom(der.bits(0, []), der.bits(8, [0x00]), der.bits(7, [0x80]), der.bits(0, [0xff, 0xff, 0xff, 0xff]), der.bits(0, [0x00]), tlv(0x03), der.seq(), der.int([5])),
        fc.tuple(fc.integer({ min: 0, max: 9 }), fc.uint8Array({ maxLength: 5 })).map(([unused, bytes]) => der.bits(unused, [...bytes])),
        junk,
      );
    case OID.eku:
      return fc.oneof(
        fc.constantFrom(der.seq(), der.seq(der.oid('2.5.29.37.0')), der.seq(der.oid('1.3.6.1.5.5.7.3.1'), der.oid('1.3.6.1.5.5.7.3.1')), der.seq(der.int([1])), der.seq(der.oid('1.2.840.99999999999999999999.1')), der.seq(der.utf8('serverAuth'))),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 39 }), fc.array(fc.nat(), { maxLength: 4 })), { minLength: 1, maxLength: 5 }).map((oids) => der.seq(...oids.map(([a, b, rest]) => der.oid([a, b, ...rest].join('.'))))),
        junk,
      );
    default:
      return fc.oneof(junk, fc.constantFrom(der.nul(), der.seq(), der.utf8('\u0000'), der.octet(Buffer.alloc(0))));
  }
};

const extensionArb = fc
  .tuple(
    fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(OID.san, OID.basicConstraints, OID.keyUsage, OID.eku, OID.nameConstraints, '2.5.29.14', '2.5.29.35', '1.3.6.1.5.5.7.1.1', '2.5.29.31', '2.5.29.32') },
      { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 0, max: 39 }), fc.array(fc.integer({ min: 0, max: 2 ** 31 }), { minLength: 1, maxLength: 5 })).map(([a, b, rest]) => [a, b, ...rest].join('.')) },
    ),
    fc.boolean(),
  )
  .chain(([oid, critical]) => extensionValue(oid).map((value) => ({ oid, critical, value })));

const subjectArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.constantFrom(
    der.seq(rdn(OID.cn, der.utf8('strange.example.test'))),
    der.seq(),
    der.seq(rdn(OID.cn, der.int([1, 2, 3]))),
    der.seq(rdn(OID.cn, der.nul())),
    der.seq(rdn(OID.cn, der.seq(der.utf8('nested')))),
    der.seq(rdn(OID.cn, der.bmp(Buffer.from([0xd8, 0x00, 0x00, 0x41])))),
    der.seq(rdn(OID.cn, der.bmp(Buffer.from([0x00])))),
    der.seq(rdn(OID.cn, der.utf8(Buffer.from([0xff, 0xfe, 0xc0, 0xaf])))),
    der.seq(rdn(OID.cn, der.utf8(''))),
    der.seq(rdn(OID.cn, der.printable('bad*printable@chars'))),
    der.seq(rdn(OID.cn, tlv(0x14, Buffer.from([0x1b, 0x28, 0x42])))),
    der.seq(rdn(OID.cn, tlv(0x1c, Buffer.from([0, 0, 0xd8, 0])))),
    der.seq(rdn(OID.cn, der.utf8('x'.repeat(300)))),
    der.seq(rdn(OID.c, der.printable('DEU'))),
    der.seq(rdn(OID.email, der.ia5(Buffer.from('a\u0000@b', 'latin1')))),
    der.seq(der.set()),
    der.seq(der.set(der.seq(der.oid(OID.cn), der.utf8('a')), der.seq(der.oid(OID.cn), der.utf8('b')))),
    der.seq(...Array.from({ length: 40 }, (_, i) => rdn(OID.cn, der.utf8(`cn${i}`)))),
    der.seq(rdn('1.2.3.4.5.6.7.8.9', der.utf8('unknown attribute'))),
    der.seq(rdn('2.5.4.3.1', der.utf8('cn-ish'))),
    der.seq(rdn(OID.o, der.utf8('\u202eevil\u202c'))),
  ),
  fc.array(fc.tuple(fc.constantFrom(OID.cn, OID.o, OID.c, '2.5.4.11', '2.5.4.7', '2.5.4.8'), fc.string({ unit: oddUnit, maxLength: 20 })), { minLength: 1, maxLength: 4 }).map((attributes) => der.seq(...attributes.map(([oid, value]) => rdn(oid, der.utf8(Buffer.from(value, 'utf8')))))),
);

const csrSpecArb: fc.Arbitrary<CsrSpec> = fc
  .record({
    subject: subjectArb,
    extensions: fc.oneof(
      fc.array(extensionArb, { maxLength: 4 }),
      // The same extension twice.
      extensionArb.map((extension) => [extension, extension]),
      fc.tuple(extensionValue(OID.san), extensionValue(OID.san)).map(([a, b]) => [
        { oid: OID.san, critical: false, value: a },
        { oid: OID.san, critical: true, value: b },
      ]),
    ),
    attributes: fc.oneof(
      fc.constant<CsrSpec['attributes']>([]),
      fc.constantFrom<CsrSpec['attributes']>(
        [{ oid: OID.challengePassword, values: [der.utf8('\u0000secret')] }],
        [{ oid: OID.challengePassword, values: [] }],
        [{ oid: '1.2.3.4', values: [der.nul(), der.int([1])] }],
        // A second extensionRequest attribute, with junk in it.
        [{ oid: OID.extensionRequest, values: [der.seq(der.seq(der.oid(OID.san), der.octet(Buffer.from([0x30, 0x03, 0x82, 0x01, 0x78]))))] }],
        [{ oid: OID.extensionRequest, values: [Buffer.from([0x05, 0x00])] }],
      ),
    ),
    key: fc.constantFrom<CsrSpec['key']>('p256', 'p256', 'p256', 'p384', 'p521', 'rsa1024', 'rsa2048'),
  })
  .map((spec) => ({ ...spec, label: `forged: ${spec.extensions.map((e) => `${e.oid}${e.critical ? '!' : ''}`).join(',') || 'no extensions'}` }));

type KeyPairs = Record<CsrSpec['key'], CryptoKeyPair>;

async function keyPairs(): Promise<KeyPairs> {
  const subtle = webcrypto.subtle;
  const ec = (namedCurve: string) => subtle.generateKey({ name: 'ECDSA', namedCurve }, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
  const rsa = (modulusLength: number) =>
    subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
  const [p256, p384, p521, rsa1024, rsa2048] = await Promise.all([ec('P-256'), ec('P-384'), ec('P-521'), rsa(1024), rsa(2048)]);
  return { p256, p384, p521, rsa1024, rsa2048 };
}

const signingAlgorithmOf = (key: CsrSpec['key']) => (key.startsWith('rsa') ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', hash: key === 'p256' ? 'SHA-256' : key === 'p384' ? 'SHA-384' : 'SHA-512' });

/**
 * `count` CSRs with forged subjects, extensions and attributes, each properly signed (so the
 * service gets past the proof of possession and has to read what they say). Specs the library
 * cannot encode are skipped.
 */
export async function forgedCsrs(count: number, seed: number): Promise<Array<{ label: string; pem: string }>> {
  const keys = await keyPairs();
  const out: Array<{ label: string; pem: string }> = [];
  for (const spec of fc.sample(csrSpecArb, { numRuns: count, seed })) {
    try {
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        name: new x509.Name(spec.subject),
        keys: keys[spec.key],
        signingAlgorithm: signingAlgorithmOf(spec.key),
        extensions: spec.extensions.map((e) => new x509.Extension(e.oid, e.critical, e.value)),
        attributes: spec.attributes.map((a) => new x509.Attribute(a.oid, a.values)),
      });
      out.push({ label: spec.label, pem: csr.toString('pem') });
    } catch {
      // The library refused to encode this one: leave it out.
    }
  }
  return out;
}

/** A certificate (self-signed unless `issuer` is given) with raw extensions, for chains and imports. */
export async function forgedCertificate(options: {
  subject: string;
  publicKey: CryptoKey | x509.PublicKey;
  signingKey: CryptoKey;
  issuer?: string;
  notBefore?: Date;
  notAfter?: Date;
  extensions?: x509.Extension[];
  signingAlgorithm?: webcrypto.AlgorithmIdentifier | webcrypto.EcdsaParams;
}): Promise<string> {
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: `01${randomBytes(15).toString('hex')}`,
    subject: options.subject,
    issuer: options.issuer ?? options.subject,
    notBefore: options.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: options.notAfter ?? new Date(Date.now() + 365 * 24 * 3600_000),
    publicKey: options.publicKey,
    signingKey: options.signingKey,
    signingAlgorithm: options.signingAlgorithm ?? { name: 'ECDSA', hash: 'SHA-256' },
    extensions: options.extensions ?? [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)],
  });
  return certificate.toString('pem');
}

export { x509, OID as OIDS };
