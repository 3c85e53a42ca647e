/**
 * A certificate profile's policy, and its verdict on a parsed CSR. Pure: no I/O, no clock.
 * The verdict lists every rule the request breaks (a refusal names them all), and otherwise
 * says which key usages and extended key usages the certificate gets: what the CSR asked for
 * (within what is allowed) plus what the profile always sets.
 *
 * Patterns: `*` stands for one or more characters other than "." (one DNS label), so
 * `*.svc.internal` admits `api.svc.internal` but not `svc.internal` or `a.b.svc.internal`;
 * `**` stands for one or more of any character (`**.example.com` admits any depth).
 */
import { BlockList, isIP } from 'node:net';
import type { CsrKeyAlgorithm, ParsedCsr } from './csr.js';

export const KEY_USAGE_BITS = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;
export type KeyUsageName = keyof typeof KEY_USAGE_BITS;

/** What an Ed25519 key can be certified for: it signs, and neither encrypts nor agrees keys. */
const ED25519_KEY_USAGES = KEY_USAGE_BITS.digitalSignature | KEY_USAGE_BITS.nonRepudiation | KEY_USAGE_BITS.keyCertSign | KEY_USAGE_BITS.cRLSign;

export const EXTENDED_KEY_USAGE_OIDS = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  emailProtection: '1.3.6.1.5.5.7.3.4',
  timeStamping: '1.3.6.1.5.5.7.3.8',
  ocspSigning: '1.3.6.1.5.5.7.3.9',
} as const;
export type ExtendedKeyUsageName = keyof typeof EXTENDED_KEY_USAGE_OIDS;

/** Key algorithm names of the PKI API (Infisical's RSA_2048, EC_prime256v1, ..., and ED25519). */
export const POLICY_KEY_ALGORITHMS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'EC_prime256v1', 'EC_secp384r1', 'EC_secp521r1', 'ED25519'] as const;
export type PolicyKeyAlgorithm = (typeof POLICY_KEY_ALGORITHMS)[number];

export interface SubjectRule {
  /** Attribute short name: CN, O, OU, C, L, ST, emailAddress, ... */
  type: string;
  /** Patterns a value must match; absent means any value. */
  allowed?: string[];
  required?: boolean;
  /** Forbid the attribute altogether. */
  denied?: boolean;
}

export interface SanRules {
  /** DNS name patterns. */
  dns?: string[];
  /** IP addresses or CIDR ranges (v4 or v6). */
  ip?: string[];
  /** Email domains (the part after @), patterns allowed. */
  emailDomains?: string[];
  /** URI prefixes. */
  uriPrefixes?: string[];
  /** At least one SAN must be present. */
  required?: boolean;
}

export interface CertificatePolicy {
  /** Rules per subject attribute; an attribute without a rule is refused. */
  subject: SubjectRule[];
  /** SAN types without an entry here are refused. */
  sans: SanRules;
  keyUsages: { allowed: KeyUsageName[]; always: KeyUsageName[] };
  extendedKeyUsages: { allowed: ExtendedKeyUsageName[]; always: ExtendedKeyUsageName[] };
  keyAlgorithms: PolicyKeyAlgorithm[];
  /** Longest validity, in the ms notation ("90d"). */
  maxValidity: string;
  allowCa: boolean;
}

export interface PolicyVerdict {
  violations: string[];
  keyUsages: number;
  extendedKeyUsages: string[];
}

// Compiled once per pattern text rather than per request; keyed by the text itself, so an
// updated profile never meets a stale expression. Bounded in case profiles churn.
const compiled = new Map<string, RegExp>();
function patternToRegExp(pattern: string): RegExp {
  let regExp = compiled.get(pattern);
  if (!regExp) {
    if (compiled.size >= 1000) compiled.clear();
    compiled.set(pattern, (regExp = compilePattern(pattern)));
  }
  return regExp;
}

function compilePattern(pattern: string): RegExp {
  const escaped = pattern
    .replace(/[.+?^${}()|[\]\\]/g, '\\$&')
    .replace(/\*\*/g, '\u0000')
    .replace(/\*/g, '[^.]+')
    .replace(/\u0000/g, '.+');
  return new RegExp(`^${escaped}$`, 'i');
}

const EKU_NAMES_BY_OID = new Map<string, ExtendedKeyUsageName>(Object.entries(EXTENDED_KEY_USAGE_OIDS).map(([name, oid]) => [oid, name as ExtendedKeyUsageName]));

const matchesAny = (value: string, patterns: string[]) => patterns.some((pattern) => patternToRegExp(pattern).test(value));

export function policyKeyAlgorithm(key: CsrKeyAlgorithm): PolicyKeyAlgorithm | undefined {
  if (key.kind === 'rsa') return POLICY_KEY_ALGORITHMS.find((name) => name === `RSA_${key.bits}`);
  if (key.kind === 'ed25519') return 'ED25519';
  return ({ 'P-256': 'EC_prime256v1', 'P-384': 'EC_secp384r1', 'P-521': 'EC_secp521r1' } as const)[key.curve as 'P-256'];
}

function ipAllowed(address: string, allowed: string[]): boolean {
  const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
  const list = new BlockList();
  for (const entry of allowed) {
    const [network, prefix] = entry.split('/');
    const entryFamily = isIP(network ?? '') === 6 ? 'ipv6' : 'ipv4';
    if (!network || !isIP(network)) continue;
    if (prefix === undefined) list.addAddress(network, entryFamily);
    else list.addSubnet(network, Number(prefix), entryFamily);
  }
  return isIP(address) !== 0 && list.check(address, family);
}

function namesOf<T extends string>(bits: number, table: Record<T, number>): T[] {
  return (Object.keys(table) as T[]).filter((name) => (bits & table[name]) !== 0);
}

/** Why the policy refuses a DNS name as a subject alternative name; undefined when it admits it (ACME checks ordered names with it). */
export function dnsNameViolation(policy: CertificatePolicy, name: string): string | undefined {
  if (!policy.sans.dns) return `DNS names are not allowed (got ${name})`;
  if (!matchesAny(name, policy.sans.dns)) return `DNS name ${name} does not match ${policy.sans.dns.join(' or ')}`;
  return undefined;
}

export function evaluatePolicy(policy: CertificatePolicy, csr: ParsedCsr): PolicyVerdict {
  const violations: string[] = [];

  // Key: RSA under 2048 bits is never accepted, whatever the profile says.
  const algorithm = policyKeyAlgorithm(csr.keyAlgorithm);
  if (csr.keyAlgorithm.kind === 'rsa' && csr.keyAlgorithm.bits < 2048) violations.push(`RSA keys shorter than 2048 bits are never accepted (got ${csr.keyAlgorithm.bits})`);
  else if (!algorithm || !policy.keyAlgorithms.includes(algorithm)) {
    const key = csr.keyAlgorithm;
    const got = key.kind === 'rsa' ? `RSA_${key.bits}` : key.kind === 'ec' ? `EC ${key.curve}` : 'ED25519';
    violations.push(`key algorithm ${got} is not allowed (allowed: ${policy.keyAlgorithms.join(', ')})`);
  }

  // Subject.
  const rules = new Map(policy.subject.map((rule) => [rule.type.toLowerCase(), rule]));
  for (const attribute of csr.subject) {
    const rule = rules.get(attribute.type.toLowerCase());
    if (!rule) violations.push(`subject attribute ${attribute.type} is not allowed by this profile`);
    else if (rule.denied) violations.push(`subject attribute ${attribute.type} is denied`);
    else if (rule.allowed && !matchesAny(attribute.value, rule.allowed)) violations.push(`subject ${attribute.type} "${attribute.value}" does not match ${rule.allowed.join(' or ')}`);
  }
  for (const rule of policy.subject) {
    if (rule.required && !csr.subject.some((a) => a.type.toLowerCase() === rule.type.toLowerCase())) violations.push(`subject attribute ${rule.type} is required`);
  }

  // Subject alternative names.
  if (csr.subject.length === 0 && csr.sans.length === 0) violations.push('the request names neither a subject nor a subject alternative name (RFC 5280 §4.1.2.6)');
  const sans = policy.sans;
  if (sans.required && csr.sans.length === 0) violations.push('at least one subject alternative name is required');
  for (const san of csr.sans) {
    switch (san.type) {
      case 'dns': {
        const violation = dnsNameViolation(policy, san.value);
        if (violation) violations.push(violation);
        break;
      }
      case 'ip':
        if (!sans.ip) violations.push(`IP addresses are not allowed (got ${san.value})`);
        else if (!ipAllowed(san.value, sans.ip)) violations.push(`IP address ${san.value} is outside ${sans.ip.join(', ')}`);
        break;
      case 'email': {
        const domain = san.value.slice(san.value.lastIndexOf('@') + 1);
        if (!sans.emailDomains) violations.push(`email addresses are not allowed (got ${san.value})`);
        else if (!san.value.includes('@') || !matchesAny(domain, sans.emailDomains)) violations.push(`email ${san.value} is not in ${sans.emailDomains.join(' or ')}`);
        break;
      }
      case 'url':
        if (!sans.uriPrefixes) violations.push(`URIs are not allowed (got ${san.value})`);
        else if (!sans.uriPrefixes.some((prefix) => san.value.startsWith(prefix))) violations.push(`URI ${san.value} does not start with ${sans.uriPrefixes.join(' or ')}`);
        break;
      default:
        violations.push(`subject alternative names of type ${san.type} are not allowed`);
    }
  }

  // Key usages: what the CSR asks must be allowed; the profile's `always` are added.
  const requestedKu = namesOf(csr.keyUsages ?? 0, KEY_USAGE_BITS);
  for (const usage of requestedKu) if (!policy.keyUsages.allowed.includes(usage) && !policy.keyUsages.always.includes(usage)) violations.push(`key usage ${usage} is not allowed`);
  const keyUsages = [...requestedKu, ...policy.keyUsages.always].reduce((bits, usage) => bits | KEY_USAGE_BITS[usage], 0);
  if (csr.keyAlgorithm.kind === 'ed25519') {
    for (const usage of namesOf(keyUsages & ~ED25519_KEY_USAGES, KEY_USAGE_BITS)) violations.push(`key usage ${usage} cannot be used with an Ed25519 key, which only signs (RFC 8410 §5)`);
  }

  const extendedKeyUsages = new Set<string>(policy.extendedKeyUsages.always.map((name) => EXTENDED_KEY_USAGE_OIDS[name]));
  for (const oid of csr.extendedKeyUsages ?? []) {
    const usage = EKU_NAMES_BY_OID.get(oid);
    if (!usage || (!policy.extendedKeyUsages.allowed.includes(usage) && !policy.extendedKeyUsages.always.includes(usage))) violations.push(`extended key usage ${usage ?? oid} is not allowed`);
    else extendedKeyUsages.add(oid);
  }

  if (csr.requestsCa && !policy.allowCa) violations.push('CA certificates cannot be requested under this profile');
  if (!csr.requestsCa && (keyUsages & (KEY_USAGE_BITS.keyCertSign | KEY_USAGE_BITS.cRLSign)) !== 0) violations.push('keyCertSign and cRLSign are for CA certificates only');
  if (keyUsages === 0) violations.push('the certificate would have no key usage: the profile must allow or always set one');

  return { violations, keyUsages, extendedKeyUsages: [...extendedKeyUsages] };
}
