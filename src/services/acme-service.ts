/**
 * ACME (RFC 8555) on certificate profiles: accounts, orders, http-01 authorizations, finalize,
 * certificate download, revocation and key change, under
 * `/api/v1/cert-manager/acme/profiles/{profileId}/`.
 *
 * Every POST is authenticated in `authenticate` in this order: the profile must have ACME open
 * (404 otherwise); the JWS must be readable, its algorithm accepted and its `url` the URL the
 * request was sent to (unauthorized); the key it names must be a valid account of this profile
 * (accountDoesNotExist) or, where the RFC allows, the key in its `jwk`; the signature must
 * verify; and only then is its nonce used (badNonce when unknown, expired or used). A request
 * refused before that changes nothing.
 *
 * Issuance goes through the same path as sign-certificate and EST (certificate-service.ts:
 * policy, token signature, the record that makes the certificate listed, revocable, in the CRL
 * and in OCSP). The CSR must ask for exactly the order's names (a CN, if any, among them) and
 * pass the profile's policy; a refusal is badCSR naming the rule and leaves the order ready.
 *
 * Validation runs in the background of the process that took the challenge POST (the client
 * polls); its outcome is written to the store, so any replica answers the polls. A challenge
 * left `processing` by a process that died is taken up again when the client POSTs it anew
 * after STALE_VALIDATION_MS.
 */
import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { AppError } from '../errors.js';
import type { Logger } from '../logger.js';
import { toPem } from '../pki/certificate-builder.js';
import { REVOCATION_REASONS, type RevocationReason } from '../pki/crl.js';
import type { ReadCsr } from '../pki/csr.js';
import { certificateIdentity } from '../pki/est.js';
import { dnsNameViolation, evaluatePolicy, type CertificatePolicy } from '../pki/policy.js';
import type { AcmeAccountRecord, AcmeAuthorizationRecord, AcmeChallengeRecord, AcmeIdentifier, AcmeOrderRecord, AcmeStore } from '../store/acme-store.js';
import { UniqueViolation } from '../store/database.js';
import type { CaRecord, CertificateRecord, ProfileRecord } from '../store/pki-store.js';
import { acmeProblem, AcmeProblem } from './acme-problem.js';
import { accountJwk, checkHeader, jsonPayload, readJws, thumbprintOf, verifyExternalAccountBinding, verifyWith, type KeyReference } from './acme-jws.js';
import { concurrencyLimit, validateHttp01, type Http01Settings } from './acme-validation.js';
import type { CertificateService } from './certificate-service.js';

/** Where a profile's ACME resources live, below the public base URL. */
export const ACME_PATH = '/api/v1/cert-manager/acme/profiles';

const NONCE_LIFETIME_MS = 60 * 60 * 1000;
const ORDER_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000;
/**
 * A validation still `processing` after this long was abandoned (its process stopped). Longer
 * than the longest a validation can run: at most 5 attempts (config schema) of at most 10 s
 * each, a second apart, plus two DNS tries of 2 s per lookup.
 */
const STALE_VALIDATION_MS = 2 * 60 * 1000;
/**
 * Validations one process runs at once; more wait for a slot. Each holds a socket and a DNS
 * query to a place a client chose, so a flood of challenges must not hold unbounded numbers.
 */
const MAX_CONCURRENT_VALIDATIONS = 32;
const MAX_IDENTIFIERS = 100;
const MAX_CONTACTS = 10;
/** Ids in URLs are uuids the server made; anything else is not looked up (PostgreSQL refuses NUL in text). */
const isId = (value: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(value);
/** How soon a client should poll a challenge or order being worked on. */
const RETRY_AFTER_SECONDS = 1;

/** RFC 5280 reason codes a client may give; 6 (certificateHold) is not a revocation. */
const REASON_CODES: Record<number, RevocationReason> = {
  0: 'UNSPECIFIED',
  1: 'KEY_COMPROMISE',
  2: 'CA_COMPROMISE',
  3: 'AFFILIATION_CHANGED',
  4: 'SUPERSEDED',
  5: 'CESSATION_OF_OPERATION',
  9: 'PRIVILEGE_WITHDRAWN',
  10: 'A_A_COMPROMISE',
};

/** What a route sends: status, JSON or text body, and the headers ACME gives each resource. */
export interface AcmeAnswer {
  status: number;
  body?: unknown;
  /** For a non-JSON body (the certificate chain). */
  contentType?: string;
  location?: string;
  /** `Link` relations other than "index" (which every answer carries). */
  links?: Array<{ url: string; rel: string }>;
  retryAfterSeconds?: number;
  /** What the audit trail names: the resource acted on. */
  auditResourceId?: string;
  /** False for reads (POST-as-GET polls), which are not audit events. */
  audited?: boolean;
}

export interface AcmeRequest {
  profileId: string;
  /** The URL the client sent the request to (the public base URL and the path). */
  url: string;
  body: unknown;
  /** Called once the JWS verified and its nonce was used: from here on the request is the account's (the route audits it). */
  onAuthenticated?: () => void;
}

interface Authenticated {
  profile: ProfileRecord;
  base: string;
  /** The key's JWK (required members) and thumbprint. */
  jwk: Record<string, string>;
  thumbprint: string;
  /** Present for `kid` requests. */
  account?: AcmeAccountRecord;
  /** Undefined for POST-as-GET. */
  payload: Record<string, unknown> | undefined;
}

export interface AcmeDeps {
  acmeStore: AcmeStore;
  certificates: Pick<CertificateService, 'existingProfile' | 'existingCertificate' | 'issue' | 'revokeRecord' | 'readCsr'>;
  pkiStore: { certificateBySerial(caId: string, serialHex: string): Promise<CertificateRecord | undefined> };
  cas: { existing(caId: string): Promise<CaRecord>; chainAbove(ca: CaRecord): Promise<string[]> };
  publicBaseUrl: () => string;
  http01: Http01Settings;
  logger: Logger;
}

const nowIso = () => new Date().toISOString();
const isExpired = (iso: string) => Date.parse(iso) <= Date.now();

/** A DNS name as an ACME identifier: LDH labels, at most 253 characters; lowercased. */
const DNS_NAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

function pemOfDer(base64url: string, label: string): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(base64url, 'base64url')
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

export function createAcmeService(deps: AcmeDeps) {
  const { acmeStore: store, certificates, logger } = deps;
  /** Validations running in this process, so shutdown can wait for them. */
  const validations = new Set<Promise<void>>();

  const baseOf = (profileId: string) => `${deps.publicBaseUrl()}${ACME_PATH}/${profileId}`;
  const accountUrl = (base: string, id: string) => `${base}/accounts/${id}`;
  const orderUrl = (base: string, id: string) => `${base}/orders/${id}`;
  const authorizationUrl = (base: string, id: string) => `${base}/authorizations/${id}`;
  const challengeUrl = (base: string, authorizationId: string, id: string) => `${base}/authorizations/${authorizationId}/challenges/${id}`;

  async function acmeProfile(profileId: string): Promise<ProfileRecord> {
    let profile: ProfileRecord;
    if (!isId(profileId)) throw acmeProblem('malformed', `Certificate profile '${profileId.slice(0, 64)}' not found`, { status: 404 });
    try {
      profile = await certificates.existingProfile(profileId);
    } catch (error) {
      if (error instanceof AppError && error.statusCode === 404) throw acmeProblem('malformed', `Certificate profile '${profileId}' not found`, { status: 404 });
      throw error;
    }
    if (!profile.acmeEnabled) throw acmeProblem('malformed', `ACME is not enabled for certificate profile '${profileId}'`, { status: 404 });
    return profile;
  }

  async function newNonce(): Promise<string> {
    const nonce = randomBytes(16).toString('base64url');
    await store.addNonce(nonce, Date.now() + NONCE_LIFETIME_MS);
    return nonce;
  }

  async function authenticate(request: AcmeRequest, reference: KeyReference): Promise<Authenticated> {
    const profile = await acmeProfile(request.profileId);
    const base = baseOf(profile.id);
    const read = readJws(request.body);
    checkHeader(read.header, reference);
    // §6.4: the signed URL must be this request's, or a request signed for one resource could be replayed at another.
    if (read.header.url !== request.url) throw acmeProblem('unauthorized', `The JWS "url" (${read.header.url.slice(0, 300)}) is not the URL this request was sent to (${request.url})`);
    if (read.header.nonce === undefined) throw acmeProblem('badNonce', 'The JWS has no "nonce"; get one from newNonce');
    let account: AcmeAccountRecord | undefined;
    let jwk: Record<string, string>;
    if (read.header.kid !== undefined) {
      const prefix = `${base}/accounts/`;
      const id = read.header.kid.startsWith(prefix) ? read.header.kid.slice(prefix.length) : '';
      account = /^[0-9a-f-]{36}$/.test(id) ? await store.getAccount(id) : undefined;
      if (!account || account.profileId !== profile.id) throw acmeProblem('accountDoesNotExist', `No account ${read.header.kid.slice(0, 300)} on this profile`);
      // §7.3.6: a deactivated account's requests are 401 unauthorized.
      if (account.status !== 'valid') throw acmeProblem('unauthorized', `The account is ${account.status}`, { status: 401 });
      // A profile that came to require EAB after this account was made: the account is not bound, so it may not act.
      if (profile.acmeRequireEab && account.eabKid === null) throw acmeProblem('externalAccountRequired', 'This profile now requires external account binding, and this account was made without one: make a new account with the binding');
      jwk = account.jwk;
    } else {
      jwk = accountJwk(read.header.jwk!);
    }
    const payloadText = await verifyWith(read, jwk);
    // Last: a request refused above leaves its nonce for a corrected retry, and only a signed request uses one.
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(read.header.nonce) || !(await store.useNonce(read.header.nonce, Date.now()))) throw acmeProblem('badNonce', 'The nonce is unknown, expired or already used; retry with the one in this answer');
    request.onAuthenticated?.();
    return { profile, base, jwk, thumbprint: account?.thumbprint ?? (await thumbprintOf(jwk)), ...(account ? { account } : {}), payload: jsonPayload(payloadText) };
  }

  function accountObject(base: string, account: AcmeAccountRecord) {
    return { status: account.status, contact: account.contact, orders: `${accountUrl(base, account.id)}/orders` };
  }

  function checkContacts(contact: unknown): string[] {
    if (contact === undefined) return [];
    if (!Array.isArray(contact) || contact.length > MAX_CONTACTS || contact.some((item) => typeof item !== 'string')) throw acmeProblem('invalidContact', `"contact" must be a list of at most ${MAX_CONTACTS} mailto: URLs`);
    for (const item of contact as string[]) {
      if (!item.startsWith('mailto:')) throw acmeProblem('unsupportedContact', `Only mailto: contacts are accepted (got ${item.slice(0, 100)})`);
      const address = item.slice('mailto:'.length);
      if (address.length > 254 || !/^[^\s@,?&<>]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/.test(address)) throw acmeProblem('invalidContact', `${item.slice(0, 100)} is not one email address`);
    }
    return contact as string[];
  }

  /** The order's status as a client should see it: one past its expiry can no longer complete. */
  const orderStatus = (order: AcmeOrderRecord) => ((order.status === 'pending' || order.status === 'ready') && isExpired(order.expiresAt) ? 'invalid' : order.status);
  const authorizationStatus = (authz: AcmeAuthorizationRecord) => (authz.status === 'pending' && isExpired(authz.expiresAt) ? 'expired' : authz.status);

  async function orderObject(base: string, order: AcmeOrderRecord) {
    const authorizations = await store.authorizationsOfOrder(order.id);
    const status = orderStatus(order);
    return {
      status,
      expires: order.expiresAt,
      identifiers: order.identifiers,
      authorizations: authorizations.map((authz) => authorizationUrl(base, authz.id)),
      finalize: `${orderUrl(base, order.id)}/finalize`,
      ...(order.status === 'valid' && order.certificateId ? { certificate: `${orderUrl(base, order.id)}/certificate` } : {}),
      ...(order.error ? { error: order.error } : status === 'invalid' && order.status !== 'invalid' ? { error: { type: 'urn:ietf:params:acme:error:malformed', detail: 'The order expired' } } : {}),
    };
  }

  function challengeObject(base: string, challenge: AcmeChallengeRecord) {
    return {
      type: challenge.type,
      url: challengeUrl(base, challenge.authorizationId, challenge.id),
      token: challenge.token,
      status: challenge.status,
      ...(challenge.validatedAt ? { validated: challenge.validatedAt } : {}),
      ...(challenge.error ? { error: challenge.error } : {}),
    };
  }

  async function authorizationObject(base: string, authz: AcmeAuthorizationRecord) {
    const challenges = await store.challengesOf([authz.id]);
    return {
      identifier: { type: authz.identifierType, value: authz.identifierValue },
      status: authorizationStatus(authz),
      expires: authz.expiresAt,
      challenges: challenges.map((challenge) => challengeObject(base, challenge)),
    };
  }

  /** An order of the requesting account, or unauthorized (whether it exists elsewhere is not told). */
  async function ownOrder(auth: Authenticated, orderId: string): Promise<AcmeOrderRecord> {
    const order = isId(orderId) ? await store.getOrder(orderId) : undefined;
    if (!order || order.accountId !== auth.account!.id) throw acmeProblem('unauthorized', `No order ${orderId} of this account`, { status: 404 });
    return order;
  }

  async function ownAuthorization(auth: Authenticated, authorizationId: string): Promise<AcmeAuthorizationRecord> {
    const authz = isId(authorizationId) ? await store.getAuthorization(authorizationId) : undefined;
    if (!authz || authz.accountId !== auth.account!.id) throw acmeProblem('unauthorized', `No authorization ${authorizationId} of this account`, { status: 404 });
    return authz;
  }

  function checkIdentifiers(profile: ProfileRecord, given: unknown): AcmeIdentifier[] {
    if (!Array.isArray(given) || given.length === 0) throw acmeProblem('malformed', '"identifiers" must be a non-empty list');
    if (given.length > MAX_IDENTIFIERS) throw acmeProblem('rejectedIdentifier', `An order may name at most ${MAX_IDENTIFIERS} identifiers`);
    const names = new Set<string>();
    const refusals: string[] = [];
    for (const identifier of given) {
      if (typeof identifier !== 'object' || identifier === null || typeof identifier.type !== 'string' || typeof identifier.value !== 'string') throw acmeProblem('malformed', 'Each identifier must be {type, value} with two strings');
      const { type, value } = identifier as AcmeIdentifier;
      if (type === 'ip') throw acmeProblem('rejectedIdentifier', `IP address identifiers (RFC 8738) are not supported: ${value.slice(0, 64)}`);
      if (type !== 'dns') throw acmeProblem('unsupportedIdentifier', `Identifiers of type ${type.slice(0, 32)} are not supported; only dns`);
      const name = value.toLowerCase();
      if (name.startsWith('*.')) throw acmeProblem('rejectedIdentifier', `${value.slice(0, 253)}: wildcard names need dns-01 validation, which this server does not offer (http-01 only)`);
      if (!DNS_NAME.test(name)) throw acmeProblem('rejectedIdentifier', `${value.slice(0, 253)} is not a DNS name`);
      const violation = dnsNameViolation(profile.policy as CertificatePolicy, name);
      if (violation) refusals.push(violation);
      names.add(name);
    }
    if (refusals.length > 0) throw acmeProblem('rejectedIdentifier', `The profile's policy refuses: ${refusals.join('; ')}`);
    return [...names].sort().map((value) => ({ type: 'dns', value }));
  }

  /** The CSR's names must be the order's: every SAN a DNS name of the order, every name of the order a SAN, a CN (if any) one of them. */
  function csrNameProblems(csr: ReadCsr, order: AcmeOrderRecord): string[] {
    const wanted = new Set(order.identifiers.map((identifier) => identifier.value));
    const problems: string[] = [];
    const sans = new Set<string>();
    for (const san of csr.sans) {
      if (san.type !== 'dns') problems.push(`the CSR names a ${san.type} subject alternative name (${san.value}), which the order does not`);
      else sans.add(san.value.toLowerCase());
    }
    for (const name of sans) if (!wanted.has(name)) problems.push(`the CSR names ${name}, which the order does not`);
    for (const name of wanted) if (!sans.has(name)) problems.push(`the CSR does not name ${name} as a subject alternative name`);
    for (const attribute of csr.subject) {
      // Only the name was validated: an organization or a country in the subject would be
      // vouched for by the CA on the strength of an http-01 answer alone.
      if (attribute.type !== 'CN') problems.push(`the CSR's subject names ${attribute.type}, which ACME does not validate (only a CN, one of the order's names)`);
      else if (!wanted.has(attribute.value.toLowerCase())) problems.push(`the CSR's common name ${attribute.value} is not one of the order's names`);
    }
    if (csr.requestsCa) problems.push('the CSR asks for a CA certificate, which ACME does not issue');
    return problems;
  }

  async function chainPem(record: CertificateRecord): Promise<string> {
    const ca = await deps.cas.existing(record.caId);
    const above = [toPem(ca.certificate!), ...(await deps.cas.chainAbove(ca))];
    // The root is the relying party's own trust anchor; ACME chains stop below it.
    const chain = above.filter((pem) => {
      const certificate = new X509Certificate(pem);
      return certificate.subject !== certificate.issuer || !certificate.verify(certificate.publicKey);
    });
    return [toPem(record.der), ...chain].map((pem) => (pem.endsWith('\n') ? pem : `${pem}\n`)).join('');
  }

  const validationSlots = concurrencyLimit(MAX_CONCURRENT_VALIDATIONS);

  function startValidation(auth: Authenticated, authz: AcmeAuthorizationRecord, challenge: AcmeChallengeRecord): void {
    const account = auth.account!;
    const run = (async () => {
      let error;
      try {
        // The account's key now: a key change after the order still validates with the new key.
        const current = (await store.getAccount(account.id)) ?? account;
        const keyAuthorization = `${challenge.token}.${await thumbprintOf(current.jwk)}`;
        error = await validationSlots.run(() => validateHttp01(authz.identifierValue, challenge.token, keyAuthorization, deps.http01));
      } catch (cause) {
        logger.error({ err: cause }, 'ACME validation failed unexpectedly');
        error = { type: 'urn:ietf:params:acme:error:serverInternal', detail: 'Validation failed on the server', status: 500 };
      }
      await store.finishChallenge({ challengeId: challenge.id, authorizationId: authz.id, orderId: authz.orderId, ...(error ? { error } : {}), now: nowIso() });
    })().catch((cause: unknown) => logger.error({ err: cause }, 'recording an ACME validation failed'));
    validations.add(run);
    void run.finally(() => validations.delete(run));
  }

  const asGetOnly = (auth: Authenticated, what: string) => {
    if (auth.payload !== undefined) throw acmeProblem('malformed', `${what} is read with POST-as-GET (an empty payload)`);
  };

  return {
    newNonce,
    /** Checks that the profile serves ACME (for newNonce, which needs no JWS). */
    acmeProfile,

    async directory(profileId: string) {
      const profile = await acmeProfile(profileId);
      const base = baseOf(profile.id);
      return {
        newNonce: `${base}/new-nonce`,
        newAccount: `${base}/new-account`,
        newOrder: `${base}/new-order`,
        revokeCert: `${base}/revoke-cert`,
        keyChange: `${base}/key-change`,
        meta: { externalAccountRequired: profile.acmeRequireEab },
      };
    },

    async newAccount(request: AcmeRequest): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'jwk');
      const payload = auth.payload ?? {};
      const existing = await store.accountByThumbprint(auth.profile.id, auth.thumbprint);
      if (existing && existing.status !== 'valid') throw acmeProblem('unauthorized', `The account of this key is ${existing.status}`, { status: 401 });
      if (existing) return { status: 200, body: accountObject(auth.base, existing), location: accountUrl(auth.base, existing.id), auditResourceId: existing.id, audited: false };
      if (payload.onlyReturnExisting === true) throw acmeProblem('accountDoesNotExist', 'No account exists for this key on this profile');
      const contact = checkContacts(payload.contact);
      let eabKid: string | null = null;
      if (payload.externalAccountBinding !== undefined) {
        eabKid = await verifyExternalAccountBinding(payload.externalAccountBinding, { kid: auth.profile.id, url: `${auth.base}/new-account`, secret: auth.profile.acmeEabSecret, accountThumbprint: auth.thumbprint });
      } else if (auth.profile.acmeRequireEab) {
        throw acmeProblem('externalAccountRequired', "This profile requires external account binding: an administrator reads its key from the profile's acme/eab-secret route");
      }
      const account: AcmeAccountRecord = { id: randomUUID(), profileId: auth.profile.id, jwk: auth.jwk, thumbprint: auth.thumbprint, status: 'valid', contact, eabKid, createdAt: nowIso() };
      try {
        await store.insertAccount(account);
      } catch (error) {
        if (!(error instanceof UniqueViolation)) throw error;
        // The same key registered at the same moment elsewhere: that account is this one.
        const raced = await store.accountByThumbprint(auth.profile.id, auth.thumbprint);
        if (!raced) throw error;
        return { status: 200, body: accountObject(auth.base, raced), location: accountUrl(auth.base, raced.id), auditResourceId: raced.id, audited: false };
      }
      return { status: 201, body: accountObject(auth.base, account), location: accountUrl(auth.base, account.id), auditResourceId: account.id };
    },

    /** POST to the account URL: read it, change its contacts, or deactivate it. */
    async account(request: AcmeRequest, accountId: string): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      if (auth.account!.id !== accountId) throw acmeProblem('unauthorized', 'A request to an account URL must be signed by that account');
      const payload = auth.payload;
      if (payload === undefined || (payload.status === undefined && payload.contact === undefined)) {
        return { status: 200, body: accountObject(auth.base, auth.account!), location: accountUrl(auth.base, accountId), audited: false };
      }
      if (payload.status !== undefined && payload.status !== 'deactivated') throw acmeProblem('malformed', 'An account\'s status can only be changed to "deactivated"');
      const changes: { status?: 'deactivated'; contact?: string[] } = {};
      if (payload.contact !== undefined) changes.contact = checkContacts(payload.contact);
      if (payload.status === 'deactivated') changes.status = 'deactivated';
      if (!(await store.updateAccount(accountId, changes))) throw acmeProblem('unauthorized', 'The account is no longer valid');
      return { status: 200, body: accountObject(auth.base, { ...auth.account!, ...changes }), location: accountUrl(auth.base, accountId), auditResourceId: accountId };
    },

    async accountOrders(request: AcmeRequest, accountId: string): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      if (auth.account!.id !== accountId) throw acmeProblem('unauthorized', "An account's orders are read by that account only");
      asGetOnly(auth, "The account's order list");
      const ids = await store.orderIdsOfAccount(accountId, 1000);
      return { status: 200, body: { orders: ids.map((id) => orderUrl(auth.base, id)) }, audited: false };
    },

    async newOrder(request: AcmeRequest): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      const payload = auth.payload;
      if (payload === undefined) throw acmeProblem('malformed', 'newOrder needs a payload with "identifiers"');
      if (payload.notBefore !== undefined || payload.notAfter !== undefined) throw acmeProblem('malformed', 'notBefore and notAfter are not supported: the profile decides the validity');
      const identifiers = checkIdentifiers(auth.profile, payload.identifiers);
      const now = nowIso();
      const expiresAt = new Date(Date.now() + ORDER_LIFETIME_MS).toISOString();
      const order: AcmeOrderRecord = {
        id: randomUUID(),
        accountId: auth.account!.id,
        profileId: auth.profile.id,
        status: 'pending',
        identifiers,
        expiresAt,
        error: null,
        certificateId: null,
        createdAt: now,
        updatedAt: now,
      };
      const authorizations: AcmeAuthorizationRecord[] = identifiers.map((identifier) => ({
        id: randomUUID(),
        orderId: order.id,
        accountId: order.accountId,
        identifierType: identifier.type,
        identifierValue: identifier.value,
        status: 'pending',
        expiresAt,
      }));
      const challenges: AcmeChallengeRecord[] = authorizations.map((authz) => ({
        id: randomUUID(),
        authorizationId: authz.id,
        type: 'http-01',
        token: randomBytes(32).toString('base64url'),
        status: 'pending',
        validatedAt: null,
        error: null,
        updatedAt: now,
      }));
      await store.insertOrder(order, authorizations, challenges);
      return { status: 201, body: await orderObject(auth.base, order), location: orderUrl(auth.base, order.id), auditResourceId: order.id };
    },

    async order(request: AcmeRequest, orderId: string): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      asGetOnly(auth, 'An order');
      const order = await ownOrder(auth, orderId);
      return { status: 200, body: await orderObject(auth.base, order), location: orderUrl(auth.base, order.id), ...(order.status === 'processing' ? { retryAfterSeconds: RETRY_AFTER_SECONDS } : {}), audited: false };
    },

    async authorization(request: AcmeRequest, authorizationId: string): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      let authz = await ownAuthorization(auth, authorizationId);
      const payload = auth.payload;
      let audited = false;
      if (payload !== undefined) {
        if (payload.status !== 'deactivated') throw acmeProblem('malformed', 'An authorization can only be changed to status "deactivated"');
        if (!(await store.deactivateAuthorization(authz.id, nowIso()))) throw acmeProblem('malformed', `The authorization is ${authorizationStatus(authz)} and cannot be deactivated`);
        authz = (await store.getAuthorization(authz.id))!;
        audited = true;
      }
      const status = authorizationStatus(authz);
      return { status: 200, body: await authorizationObject(auth.base, authz), ...(status === 'pending' ? { retryAfterSeconds: RETRY_AFTER_SECONDS } : {}), auditResourceId: authz.orderId, audited };
    },

    /** POST {} to a challenge asks for its validation (answered at once, `processing`); POST-as-GET reads it. */
    async challenge(request: AcmeRequest, authorizationId: string, challengeId: string): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      const authz = await ownAuthorization(auth, authorizationId);
      let challenge = isId(challengeId) ? await store.getChallenge(challengeId) : undefined;
      if (!challenge || challenge.authorizationId !== authz.id) throw acmeProblem('malformed', `No challenge ${challengeId} in this authorization`, { status: 404 });
      let audited = false;
      if (auth.payload !== undefined) {
        if (authorizationStatus(authz) !== 'pending' && challenge.status === 'pending') throw acmeProblem('malformed', `The authorization is ${authorizationStatus(authz)}; its challenges can no longer be answered`);
        const now = Date.now();
        if (await store.startChallenge(challenge.id, new Date(now).toISOString(), new Date(now - STALE_VALIDATION_MS).toISOString())) {
          challenge = (await store.getChallenge(challenge.id))!;
          startValidation(auth, authz, challenge);
          audited = true;
        }
      }
      return {
        status: 200,
        body: challengeObject(auth.base, challenge),
        links: [{ url: authorizationUrl(auth.base, authz.id), rel: 'up' }],
        ...(challenge.status === 'processing' ? { retryAfterSeconds: RETRY_AFTER_SECONDS } : {}),
        auditResourceId: authz.orderId,
        audited,
      };
    },

    async finalize(request: AcmeRequest, orderId: string): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      const order = await ownOrder(auth, orderId);
      const payload = auth.payload;
      if (orderStatus(order) !== 'ready') throw acmeProblem('orderNotReady', `The order is ${orderStatus(order)}, not ready`);
      if (payload === undefined || typeof payload.csr !== 'string' || !/^[A-Za-z0-9_-]+$/.test(payload.csr) || payload.csr.length > 16384) throw acmeProblem('malformed', 'finalize needs "csr": the base64url DER of a PKCS#10 request');
      let csr: ReadCsr;
      try {
        csr = await certificates.readCsr(pemOfDer(payload.csr, 'CERTIFICATE REQUEST'));
      } catch (error) {
        if (error instanceof AppError && error.statusCode < 500) throw acmeProblem('badCSR', error.message);
        throw error;
      }
      const refusals = [...csrNameProblems(csr, order), ...evaluatePolicy(auth.profile.policy as CertificatePolicy, csr).violations];
      if (refusals.length > 0) throw acmeProblem('badCSR', `The CSR was refused: ${refusals.join('; ')}`);
      // One of two concurrent finalize calls claims the order; the other is told it is not ready.
      if (!(await store.claimFinalize(order.id, nowIso()))) throw acmeProblem('orderNotReady', 'The order is being finalized or was finalized already');
      let certificateId: string;
      try {
        certificateId = (await certificates.issue(auth.profile, csr)).record.id;
      } catch (error) {
        await store.releaseFinalize(order.id, nowIso());
        if (error instanceof AppError && error.statusCode < 500) throw acmeProblem('badCSR', error.message);
        throw error;
      }
      await store.completeOrder(order.id, certificateId, nowIso());
      const done = (await store.getOrder(order.id))!;
      return { status: 200, body: await orderObject(auth.base, done), location: orderUrl(auth.base, order.id), auditResourceId: certificateId };
    },

    async certificate(request: AcmeRequest, orderId: string): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      asGetOnly(auth, 'A certificate');
      const order = await ownOrder(auth, orderId);
      if (order.status !== 'valid' || !order.certificateId) throw acmeProblem('orderNotReady', `The order is ${orderStatus(order)}; it has no certificate`);
      const record = await certificates.existingCertificate(order.certificateId);
      return { status: 200, body: await chainPem(record), contentType: 'application/pem-certificate-chain', audited: false };
    },

    /** revokeCert: signed by the account that ordered the certificate, or by the certificate's own key (`jwk`). */
    async revokeCert(request: AcmeRequest): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'either');
      const payload = auth.payload;
      if (payload === undefined || typeof payload.certificate !== 'string' || !/^[A-Za-z0-9_-]+$/.test(payload.certificate) || payload.certificate.length > 16384) {
        throw acmeProblem('malformed', 'revokeCert needs "certificate": the base64url DER of the certificate');
      }
      const reasonCode = payload.reason ?? 0;
      const reason = typeof reasonCode === 'number' ? REASON_CODES[reasonCode] : undefined;
      if (!reason || !(reason in REVOCATION_REASONS)) throw acmeProblem('badRevocationReason', `Revocation reason ${JSON.stringify(reasonCode).slice(0, 20)} is not accepted (0-5, 9, 10)`);
      const der = Buffer.from(payload.certificate, 'base64url');
      const identity = certificateIdentity(der);
      const record = identity && (await deps.pkiStore.certificateBySerial(auth.profile.caId, identity.serialHex));
      if (!record || !record.der.equals(der) || record.profileId !== auth.profile.id) throw acmeProblem('malformed', 'This profile issued no such certificate', { status: 404 });
      if (auth.account) {
        const order = await store.orderOfCertificate(record.id);
        if (!order || order.accountId !== auth.account.id) throw acmeProblem('unauthorized', 'Only the account that ordered a certificate, or its own key, may revoke it');
      } else {
        let certificateKey: string | undefined;
        try {
          certificateKey = await thumbprintOf(accountJwk(new X509Certificate(der).publicKey.export({ format: 'jwk' }) as Record<string, unknown>));
        } catch {
          // A certificate key no account key could be (P-521, say): it cannot have signed this request.
        }
        if (certificateKey !== auth.thumbprint) throw acmeProblem('unauthorized', "A revocation signed with a jwk must be signed with the certificate's own key");
      }
      try {
        await certificates.revokeRecord(record, reason);
      } catch (error) {
        if (error instanceof AppError && error.statusCode === 400) throw acmeProblem('alreadyRevoked', 'The certificate is already revoked');
        throw error;
      }
      return { status: 200, auditResourceId: record.id };
    },

    /** keyChange (§7.3.5): the inner JWS, signed by the new key, names the account and its old key. */
    async keyChange(request: AcmeRequest): Promise<AcmeAnswer> {
      const auth = await authenticate(request, 'kid');
      const account = auth.account!;
      const inner = readJws(auth.payload, 'The inner JWS of keyChange');
      checkHeader(inner.header, 'jwk');
      if (inner.header.url !== request.url) throw acmeProblem('malformed', 'The inner JWS "url" must be the keyChange URL, as the outer one');
      const newJwk = accountJwk(inner.header.jwk!);
      const body = jsonPayload(await verifyWith(inner, newJwk));
      if (body === undefined || body.account !== accountUrl(auth.base, account.id)) throw acmeProblem('malformed', 'The inner JWS payload must name this account in "account"');
      if (typeof body.oldKey !== 'object' || body.oldKey === null || (await thumbprintOf(accountJwk(body.oldKey as Record<string, unknown>))) !== account.thumbprint) {
        throw acmeProblem('malformed', 'The inner JWS payload\'s "oldKey" is not the account\'s current key');
      }
      const thumbprint = await thumbprintOf(newJwk);
      const holder = await store.accountByThumbprint(auth.profile.id, thumbprint);
      if (holder) throw acmeProblem('malformed', 'The new key is already the key of an account', { status: 409, location: accountUrl(auth.base, holder.id) });
      try {
        if (!(await store.updateAccount(account.id, { jwk: newJwk, thumbprint }))) throw acmeProblem('unauthorized', 'The account is no longer valid');
      } catch (error) {
        if (error instanceof UniqueViolation) throw acmeProblem('malformed', 'The new key is already the key of an account', { status: 409 });
        throw error;
      }
      return { status: 200, body: accountObject(auth.base, account), location: accountUrl(auth.base, account.id), auditResourceId: account.id };
    },

    purgeExpiredNonces: () => store.purgeExpiredNonces(Date.now()),

    /** Resolves once the validations this process started have written their results. */
    async idle(): Promise<void> {
      while (validations.size > 0) await Promise.allSettled([...validations]);
    },
  };
}

export type AcmeService = ReturnType<typeof createAcmeService>;
export { AcmeProblem };

