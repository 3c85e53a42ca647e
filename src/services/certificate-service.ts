/**
 * Certificate profiles (a CA, a policy, defaults) and what is issued under them:
 * sign-certificate (CSR → certificate, policy applied, signed in the token), certificate
 * records, revocation (which makes the issuing CA's CRL again at once).
 *
 * Order of checks in sign-certificate, as for KMS operations: the profile must exist (404),
 * then the caller needs issue-certificate on its project (403), then the CA must be usable,
 * the CSR valid and within the policy, and the ttl within both the profile's maximum and the
 * CA's own expiry (400, naming every violated rule).
 */
import { hash as digestOf, randomBytes, randomUUID } from 'node:crypto';
import { badRequest, notFound } from '../errors.js';
import { certificateDer, tbsCertificateDer, toPem, type GeneralNameJson } from '../pki/certificate-builder.js';
import { parseCsr, type ReadCsr } from '../pki/csr.js';
import type { CsrThreadPool } from '../pki/csr-threads.js';
import type { RevocationReason } from '../pki/crl.js';
import { evaluatePolicy, type CertificatePolicy } from '../pki/policy.js';
import { newSerialNumber } from '../pki/serial.js';
import { parseTtl } from '../pki/ttl.js';
import type { CertificateRecord, PkiStore, ProfileRecord } from '../store/pki-store.js';
import { wholeSecond } from '../pki/ttl.js';
import type { CaService } from './ca-service.js';
import { hashSecret } from './identity-service.js';
import { authorize, type Principal } from './permissions.js';
import { UniqueViolation } from '../store/database.js';

export interface ProfileInput {
  projectId: string;
  caId: string;
  slug: string;
  description?: string;
  policy: CertificatePolicy;
  defaults?: { ttl?: string };
  /** EST enrollment: the passphrase is hashed at once and never shown again. */
  est?: { enabled: boolean; passphrase?: string };
  /** ACME enrollment; with requireEab, new accounts need an external account binding. */
  acme?: { enabled: boolean; requireEab?: boolean };
}

export interface PublicProfile {
  id: string;
  projectId: string;
  caId: string;
  slug: string;
  description: string;
  policy: CertificatePolicy;
  defaults: { ttl?: string };
  /** Whether EST is open; whether a passphrase is set, never the passphrase or its hash. */
  est: { enabled: boolean; passphraseSet: boolean };
  /** Whether ACME is open and needs external account binding (the EAB key has its own route). */
  acme: { enabled: boolean; requireEab: boolean };
  createdAt: string;
  updatedAt: string;
}

// Field by field: the record holds the EST passphrase hash and the ACME EAB key, which must
// never reach an answer.
const toPublicProfile = (profile: ProfileRecord): PublicProfile => ({
  id: profile.id,
  projectId: profile.projectId,
  caId: profile.caId,
  slug: profile.slug,
  description: profile.description,
  policy: profile.policy as CertificatePolicy,
  defaults: profile.defaults,
  est: { enabled: profile.estEnabled, passphraseSet: profile.estPassphraseHash !== null },
  acme: { enabled: profile.acmeEnabled, requireEab: profile.acmeRequireEab },
  createdAt: profile.createdAt,
  updatedAt: profile.updatedAt,
});

/** What issuing under a profile returns, whichever protocol asked. */
export interface IssuedCertificate {
  record: CertificateRecord;
  certificate: string;
  issuingCaCertificate: string;
  certificateChain: string;
}

/** Overrides for a re-enrollment, which keeps the subject of the certificate it renews byte for byte. */
export interface IssueOptions {
  /** The requested validity in the ms notation; absent, the profile's default ttl (else its maximum), cut at the CA's expiry. */
  ttl?: string;
  subjectDer?: Buffer;
  /** Refusals found by the caller, reported together with the policy's. */
  violations?: string[];
}

export interface PublicCertificate {
  id: string;
  projectId: string;
  caId: string;
  profileId: string | null;
  serialNumber: string;
  subject: string;
  subjectAltNames: Array<{ type: string; value: string }>;
  notBefore: string;
  notAfter: string;
  status: 'active' | 'revoked';
  revocationReason: string | null;
  revokedAt: string | null;
  fingerprints: { sha256: string; sha1: string };
  createdAt: string;
}

const fingerprint = (der: Buffer, hash: 'sha1' | 'sha256') =>
  digestOf(hash, der)
    .toUpperCase()
    .match(/../g)!
    .join(':');

const toPublicCertificate = (record: CertificateRecord): PublicCertificate => ({
  id: record.id,
  projectId: record.projectId,
  caId: record.caId,
  profileId: record.profileId,
  serialNumber: record.serialNumber,
  subject: record.subjectDn,
  subjectAltNames: record.sans,
  notBefore: record.notBefore,
  notAfter: record.notAfter,
  status: record.status,
  revocationReason: record.revocationReason,
  revokedAt: record.revokedAt,
  fingerprints: { sha256: record.fingerprintSha256, sha1: fingerprint(record.der, 'sha1') },
  createdAt: record.createdAt,
});

export function createCertificateService(deps: {
  pkiStore: PkiStore;
  cas: CaService;
  /** Parses the CSRs given as text (sign-certificate) off the event loop; parseCsr on it when absent. */
  csrThreads?: Pick<CsrThreadPool, 'parse'>;
}) {
  const { pkiStore: store, cas, csrThreads } = deps;
  const readCsr = csrThreads ? (pem: string) => csrThreads.parse(pem) : parseCsr;

  /** `recent`: a row up to PKI_ROW_MAX_AGE_MS old will do (sign-certificate; pki-store.ts recentProfile). */
  async function existingProfile(profileId: string, freshness: 'current' | 'recent' = 'current'): Promise<ProfileRecord> {
    const profile = await (freshness === 'recent' ? store.recentProfile(profileId) : store.getProfile(profileId));
    if (!profile) throw notFound(`Certificate profile with ID '${profileId}' not found`);
    return profile;
  }

  async function existingCertificate(certificateId: string): Promise<CertificateRecord> {
    const certificate = await store.getCertificate(certificateId);
    if (!certificate) throw notFound(`Certificate with ID '${certificateId}' not found`);
    return certificate;
  }

  /** The EST columns for a profile's `est` input: a new passphrase is hashed; enabling needs one. */
  async function estColumns(est: ProfileInput['est'], current: ProfileRecord | undefined): Promise<Pick<ProfileRecord, 'estEnabled' | 'estPassphraseHash'>> {
    const estPassphraseHash = est?.passphrase !== undefined ? await hashSecret(est.passphrase) : (current?.estPassphraseHash ?? null);
    const estEnabled = est?.enabled ?? current?.estEnabled ?? false;
    if (estEnabled && estPassphraseHash === null) throw badRequest('est.passphrase is required to enable EST on a profile');
    return { estEnabled, estPassphraseHash };
  }

  const acmeColumns = (acme: ProfileInput['acme'], current: ProfileRecord | undefined): Pick<ProfileRecord, 'acmeEnabled' | 'acmeRequireEab'> => ({
    acmeEnabled: acme?.enabled ?? current?.acmeEnabled ?? false,
    acmeRequireEab: acme?.requireEab ?? current?.acmeRequireEab ?? false,
  });

  /** Marks a certificate revoked and makes its CA's CRL again at once; whoever asked was checked by the caller. */
  async function revokeRecord(certificate: CertificateRecord, reason: RevocationReason): Promise<{ message: string; serialNumber: string; revokedAt: string }> {
    const revokedAt = wholeSecond(Date.now()).toISOString();
    if (!(await store.revokeCertificate(certificate.id, reason, revokedAt))) throw badRequest('The certificate is already revoked');
    await cas.regenerateCrl(certificate.caId);
    return { message: 'Successfully revoked certificate', serialNumber: certificate.serialNumber, revokedAt };
  }

  async function checkProfile(input: Pick<ProfileInput, 'projectId' | 'caId' | 'policy' | 'defaults'>): Promise<void> {
    const ca = await cas.existing(input.caId);
    if (ca.projectId !== input.projectId) throw badRequest('The CA belongs to another project');
    if (parseTtl(input.policy.maxValidity) === undefined) throw badRequest(`policy.maxValidity "${input.policy.maxValidity}" is not a duration in the ms notation`);
    if (input.defaults?.ttl !== undefined && parseTtl(input.defaults.ttl) === undefined) throw badRequest(`defaults.ttl "${input.defaults.ttl}" is not a duration in the ms notation`);
  }

  /**
   * Issues a certificate for a parsed CSR under a profile, whoever asked (sign-certificate,
   * EST): the CA must be active, the CSR within the policy and the validity within the
   * profile's maximum and the CA's expiry (400 naming every violated rule); then it is signed
   * in the token and recorded (listed, revocable, in the CRL and OCSP). The subject and SANs
   * are the CSR's; a re-enrollment passes the renewed certificate's subject DER to keep it
   * byte for byte.
   */
  async function issue(profile: ProfileRecord, csrInput: ReadCsr | string, options: IssueOptions = {}): Promise<IssuedCertificate> {
    // Issuing relies on the CA's status and expiry as of at most PKI_ROW_MAX_AGE_MS ago.
    const ca = await cas.existing(profile.caId, 'recent');
    if (ca.status !== 'active') throw badRequest(`The profile's CA is ${ca.status === 'disabled' ? 'disabled' : 'not active yet'}`);
    // A PEM is parsed only once the CA is known to be usable: that refusal comes first.
    const csr = typeof csrInput === 'string' ? await readCsr(csrInput) : csrInput;

    const policy = profile.policy as CertificatePolicy;
    const verdict = evaluatePolicy(policy, csr);
    const violations = [...(options.violations ?? []), ...verdict.violations];

    const now = Date.now();
    const notBefore = wholeSecond(now);
    let notAfter = notBefore;
    const max = parseTtl(policy.maxValidity)!;
    if (options.ttl === undefined) {
      // No requested validity (EST has none): the profile's default, else its maximum, ending
      // no later than the CA itself.
      const ttl = (profile.defaults.ttl !== undefined ? parseTtl(profile.defaults.ttl) : undefined) ?? max;
      notAfter = wholeSecond(Math.min(notBefore.getTime() + Math.min(ttl, max), Date.parse(ca.notAfter!)));
    } else {
      const ttl = parseTtl(options.ttl);
      if (ttl === undefined) violations.push(`ttl "${options.ttl}" is not a duration in the ms notation (e.g. "90d", "24h")`);
      else {
        notAfter = wholeSecond(notBefore.getTime() + ttl);
        if (ttl > max) violations.push(`ttl ${options.ttl} is longer than the profile's maximum validity ${policy.maxValidity}`);
        if (notAfter.getTime() > Date.parse(ca.notAfter!)) violations.push(`ttl ${options.ttl} runs past the issuing CA's expiry (${ca.notAfter})`);
      }
    }
    if (violations.length > 0) throw badRequest(`The certificate request was refused: ${violations.join('; ')}`);

    const serialNumber = newSerialNumber();
    const issuer = await cas.issuing(ca);
    const tbs = tbsCertificateDer(issuer.parts, {
      serialNumber,
      subject: options.subjectDer ?? csr.subjectDer,
      notBefore,
      notAfter,
      subjectPublicKey: csr.publicKeySpki,
      ca: csr.requestsCa ? (csr.requestedPathLength !== undefined ? { pathLength: csr.requestedPathLength } : {}) : undefined,
      keyUsages: verdict.keyUsages,
      extendedKeyUsages: verdict.extendedKeyUsages,
      subjectAltNames: csr.sans as GeneralNameJson[],
    });
    const der = certificateDer(tbs, issuer.parts.algorithm, await issuer.sign(tbs));
    const record: CertificateRecord = {
      id: randomUUID(),
      projectId: profile.projectId,
      caId: ca.id,
      profileId: profile.id,
      serialNumber: serialNumber.toString('hex'),
      subjectDn: csr.subjectDn,
      sans: csr.sans,
      notBefore: notBefore.toISOString(),
      notAfter: notAfter.toISOString(),
      der,
      fingerprintSha256: fingerprint(der, 'sha256'),
      status: 'active',
      revocationReason: null,
      revokedAt: null,
      createdAt: new Date(now).toISOString(),
    };
    await store.insertCertificate(record);
    return { record, certificate: toPem(der), issuingCaCertificate: issuer.issuingPem, certificateChain: issuer.chainPem };
  }

  return {
    async createProfile(principal: Principal | 'bootstrap', input: ProfileInput): Promise<PublicProfile> {
      if (principal !== 'bootstrap') authorize(principal, input.projectId, 'manage-pki');
      await checkProfile(input);
      const now = new Date().toISOString();
      const profile: ProfileRecord = {
        id: randomUUID(),
        projectId: input.projectId,
        caId: input.caId,
        slug: input.slug,
        description: input.description ?? '',
        policy: input.policy,
        defaults: input.defaults ?? {},
        ...(await estColumns(input.est, undefined)),
        ...acmeColumns(input.acme, undefined),
        acmeEabSecret: null,
        createdAt: now,
        updatedAt: now,
      };
      try {
        await store.insertProfile(profile);
      } catch (error) {
        if (error instanceof UniqueViolation) throw badRequest(`A certificate profile '${input.slug}' already exists in project '${input.projectId}'`);
        throw error;
      }
      return toPublicProfile(profile);
    },

    async listProfiles(principal: Principal, projectId: string): Promise<PublicProfile[]> {
      authorize(principal, projectId, 'read');
      return (await store.listProfiles(projectId)).map(toPublicProfile);
    },

    async getProfile(principal: Principal, profileId: string): Promise<PublicProfile> {
      const profile = await existingProfile(profileId);
      authorize(principal, profile.projectId, 'read');
      return toPublicProfile(profile);
    },

    async updateProfile(principal: Principal, profileId: string, changes: Partial<Pick<ProfileInput, 'caId' | 'description' | 'policy' | 'defaults' | 'est' | 'acme'>>): Promise<PublicProfile> {
      const profile = await existingProfile(profileId);
      authorize(principal, profile.projectId, 'manage-pki');
      await checkProfile({
        projectId: profile.projectId,
        caId: changes.caId ?? profile.caId,
        policy: changes.policy ?? (profile.policy as CertificatePolicy),
        defaults: changes.defaults ?? profile.defaults,
      });
      const { est, acme, ...rest } = changes;
      await store.updateProfile(profileId, { ...rest, ...(est ? await estColumns(est, profile) : {}), ...(acme ? acmeColumns(acme, profile) : {}) });
      return toPublicProfile(await existingProfile(profileId));
    },

    /**
     * GET …/certificate-profiles/{profileId}/acme/eab-secret: the profile's external account
     * binding key (made on the first call, the same on every later one and every replica). The
     * key id is the profile id.
     */
    async acmeEabSecret(principal: Principal, profileId: string): Promise<{ eabKid: string; eabSecret: string }> {
      const profile = await existingProfile(profileId);
      authorize(principal, profile.projectId, 'manage-pki');
      const secret = profile.acmeEabSecret ?? (await store.ensureAcmeEabSecret(profileId, randomBytes(32).toString('base64url')));
      if (!secret) throw notFound(`Certificate profile with ID '${profileId}' not found`);
      return { eabKid: profile.id, eabSecret: secret };
    },

    async deleteProfile(principal: Principal, profileId: string): Promise<PublicProfile> {
      const profile = await existingProfile(profileId);
      authorize(principal, profile.projectId, 'manage-pki');
      await store.removeProfile(profileId);
      return toPublicProfile(profile);
    },

    /** POST /api/v3/pki/certificates/sign-certificate */
    async signCertificate(principal: Principal, input: { profileId: string; csr: string; ttl: string }) {
      const profile = await existingProfile(input.profileId, 'recent');
      authorize(principal, profile.projectId, 'issue-certificate');
      const issued = await issue(profile, input.csr, { ttl: input.ttl });
      return {
        certificate: issued.certificate,
        issuingCaCertificate: issued.issuingCaCertificate,
        certificateChain: issued.certificateChain,
        serialNumber: issued.record.serialNumber,
        certificateId: issued.record.id,
      };
    },

    existingProfile,
    /** parseCsr, on the CSR threads when there are any (ACME's finalize reads its CSR here). */
    readCsr,
    existingCertificate,
    issue,
    revokeRecord,

    async get(principal: Principal, certificateId: string): Promise<PublicCertificate> {
      const certificate = await existingCertificate(certificateId);
      authorize(principal, certificate.projectId, 'read');
      return toPublicCertificate(certificate);
    },

    async body(principal: Principal, certificateId: string): Promise<{ certificate: string; certificateChain: string; serialNumber: string }> {
      const certificate = await existingCertificate(certificateId);
      authorize(principal, certificate.projectId, 'read');
      const ca = await cas.existing(certificate.caId);
      return {
        certificate: toPem(certificate.der),
        certificateChain: [toPem(ca.certificate!), ...(await cas.chainAbove(ca))].join('\n'),
        serialNumber: certificate.serialNumber,
      };
    },

    async list(principal: Principal, projectId: string, offset: number, limit: number): Promise<{ certificates: PublicCertificate[]; totalCount: number }> {
      authorize(principal, projectId, 'read');
      const { certificates, totalCount } = await store.listCertificates(projectId, offset, limit);
      return { certificates: certificates.map(toPublicCertificate), totalCount };
    },

    async revoke(principal: Principal, certificateId: string, reason: RevocationReason): Promise<{ message: string; serialNumber: string; revokedAt: string }> {
      const certificate = await existingCertificate(certificateId);
      authorize(principal, certificate.projectId, 'issue-certificate');
      return revokeRecord(certificate, reason);
    },
  };
}

export type CertificateService = ReturnType<typeof createCertificateService>;
