/**
 * EST enrollment (RFC 7030) per certificate profile: the CA certificates, simpleenroll and
 * simplereenroll. A profile opts in (`est.enabled`) with a passphrase kept as an scrypt hash.
 *
 * Order of checks, as for the other PKI operations: the profile must exist with EST enabled
 * (404), then the client must authenticate (401), then the CA must be usable and the CSR valid
 * and within the profile's policy (400 naming every violated rule). What is issued goes through
 * the same path as sign-certificate (certificate-service.ts: policy, token signing, the record
 * that makes it listable, revocable, in the CRL and in OCSP).
 *
 * Authentication: HTTP Basic with the profile's passphrase (the user name is ignored), or, for
 * a re-enrollment, a client certificate that this profile's CA issued, that is recorded here
 * byte for byte, not revoked and within its validity. Whoever delivered the certificate (this
 * listener's TLS handshake, or a trusted proxy that terminated TLS) has already checked that
 * the client holds its key. A re-enrollment with such a certificate keeps its subject (byte
 * for byte) and SANs: the CSR must ask for the same (RFC 7030 §4.2.2), only the key may change.
 */
import { notFound, unauthorized } from '../errors.js';
import { parseCsr } from '../pki/csr.js';
import type { CsrThreadPool } from '../pki/csr-threads.js';
import { certificateIdentity, certsOnly, estCsrText } from '../pki/est.js';
import type { CaRecord, CertificateRecord, ProfileRecord } from '../store/pki-store.js';
import type { CertificateService } from './certificate-service.js';
import { secretMatches } from './identity-service.js';

export type EstOperation = 'simpleenroll' | 'simplereenroll';

export interface EstCredentials {
  /** The password of an HTTP Basic Authorization header. */
  password?: string | undefined;
  /** The client certificate (DER) the TLS handshake or a trusted proxy presented. */
  clientCertificate?: Buffer | undefined;
}

export interface EstDeps {
  pkiStore: { certificateBySerial(caId: string, serialHex: string): Promise<CertificateRecord | undefined> };
  cas: { existing(caId: string): Promise<CaRecord>; chainAbove(ca: CaRecord): Promise<string[]> };
  certificates: Pick<CertificateService, 'existingProfile' | 'issue'>;
  /** Parses the enrollment's CSR off the event loop; parseCsr on it when absent. */
  csrThreads?: Pick<CsrThreadPool, 'parse'>;
}

const pemToDer = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
const sanList = (sans: Array<{ type: string; value: string }>) => sans.map((san) => `${san.type}:${san.value}`).sort();

export function createEstService(deps: EstDeps) {
  const { pkiStore: store, cas, certificates } = deps;

  async function estProfile(profileId: string): Promise<ProfileRecord> {
    const profile = await certificates.existingProfile(profileId);
    if (!profile.estEnabled) throw notFound(`EST is not enabled for certificate profile '${profileId}'`);
    return profile;
  }

  /** The record of a presented certificate when it may re-enroll under this profile. */
  async function renewable(profile: ProfileRecord, der: Buffer): Promise<CertificateRecord | undefined> {
    const identity = certificateIdentity(der);
    if (!identity) return undefined;
    const record = await store.certificateBySerial(profile.caId, identity.serialHex);
    const now = Date.now();
    if (!record || !record.der.equals(der) || record.status !== 'active') return undefined;
    if (now < Date.parse(record.notBefore) || now > Date.parse(record.notAfter)) return undefined;
    return record;
  }

  return {
    /** The profile's CA certificate and every certificate above it to the root, as PKCS#7 certs-only DER. */
    async cacerts(profileId: string): Promise<Buffer> {
      const profile = await estProfile(profileId);
      const ca = await cas.existing(profile.caId);
      if (!ca.certificate) throw notFound("The profile's CA has no certificate yet");
      return certsOnly([ca.certificate, ...(await cas.chainAbove(ca)).map(pemToDer)]);
    },

    /**
     * Checks the credentials and issues; resolves to the PKCS#7 certs-only DER holding the new
     * certificate. `authenticated` is called once the client is known to be allowed (the route
     * clears its failed-attempt count there).
     */
    async enroll(profileId: string, operation: EstOperation, credentials: EstCredentials, body: Buffer, authenticated: () => void = () => undefined): Promise<{ pkcs7: Buffer; certificateId: string }> {
      const profile = await estProfile(profileId);
      let renewed: CertificateRecord | undefined;
      if (operation === 'simplereenroll' && credentials.clientCertificate) renewed = await renewable(profile, credentials.clientCertificate);
      if (!renewed) {
        const passphraseOk = credentials.password !== undefined && profile.estPassphraseHash !== null && (await secretMatches(credentials.password, profile.estPassphraseHash));
        if (!passphraseOk) {
          throw unauthorized(
            operation === 'simplereenroll'
              ? "EST re-enrollment needs a valid certificate this profile's CA issued, or the profile's EST passphrase (HTTP Basic)"
              : "EST enrollment needs the profile's EST passphrase (HTTP Basic)",
          );
        }
      }
      authenticated();

      const text = estCsrText(body);
      const csr = await (deps.csrThreads ? deps.csrThreads.parse(text) : parseCsr(text));
      const violations: string[] = [];
      if (renewed) {
        if (csr.subjectDn !== renewed.subjectDn) violations.push(`simplereenroll keeps the subject of the certificate it renews ("${renewed.subjectDn}"); the CSR asks for "${csr.subjectDn}"`);
        if (sanList(csr.sans).join(',') !== sanList(renewed.sans).join(',')) {
          violations.push(`simplereenroll keeps the subject alternative names of the certificate it renews (${sanList(renewed.sans).join(', ') || 'none'}); the CSR asks for ${sanList(csr.sans).join(', ') || 'none'}`);
        }
      }
      const renewedSubject = renewed && certificateIdentity(renewed.der)?.subject;
      const issued = await certificates.issue(profile, csr, { violations, ...(renewedSubject ? { subjectDer: renewedSubject } : {}) });
      return { pkcs7: certsOnly([issued.record.der]), certificateId: issued.record.id };
    },
  };
}

export type EstService = ReturnType<typeof createEstService>;
