/**
 * Certificate authorities whose keys are generated and used in the token: self-signed roots,
 * intermediates signed by a CA of this service, and intermediates whose CSR an outside root
 * signs (then imported). Also each CA's CRL: signed in the token, regenerated on every
 * revocation and before it runs out.
 *
 * Crash safety as for KMS keys: the CA row is written `pending` before its key is generated
 * and turned `active` once its certificate (or CSR) is stored; reconcile removes pending rows
 * whose writing replica is no longer alive, and their objects.
 */
import 'reflect-metadata';
import { createHash, randomUUID } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { KeySpec } from '../algorithms.js';
import { badRequest, notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';
import { replicaId } from './leases.js';
import {
  algorithmIdentifierDer,
  buildCaCsr,
  buildCertificate,
  issuerPartsOf,
  SIGNATURE_ALGORITHMS,
  signatureAlgorithm,
  toPem,
  type CertificateSigner,
  type IssuerParts,
} from '../pki/certificate-builder.js';
import { buildCrl, type RevocationReason } from '../pki/crl.js';
import { KEY_USAGE_BITS, type PolicyKeyAlgorithm } from '../pki/policy.js';
import { newSerialNumber } from '../pki/serial.js';
import { parseTtl } from '../pki/ttl.js';
import type { CaRecord, CaType, PkiStore } from '../store/pki-store.js';
import { ecdsaRawToDer } from './kms-encoding.js';
import { OBJECT_LABEL_PREFIX } from './orphan-objects.js';
import { authorize, type Principal } from './permissions.js';

export const CA_KEY_ALGORITHMS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'EC_prime256v1', 'EC_secp384r1'] as const satisfies readonly PolicyKeyAlgorithm[];
export type CaKeyAlgorithm = (typeof CA_KEY_ALGORITHMS)[number];

const CA_KEY_SPECS: Record<CaKeyAlgorithm, KeySpec> = {
  RSA_2048: { kind: 'rsa', bits: 2048 },
  RSA_3072: { kind: 'rsa', bits: 3072 },
  RSA_4096: { kind: 'rsa', bits: 4096 },
  EC_prime256v1: { kind: 'ec', curve: 'P-256' },
  EC_secp384r1: { kind: 'ec', curve: 'P-384' },
};

const CRL_LIFETIME_MS = 7 * 86_400_000;
/** A CRL is made again once less than this is left before its nextUpdate. */
const CRL_RENEW_BEFORE_MS = 86_400_000;

export interface CreateCaInput {
  projectId: string;
  type: CaType;
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  country?: string;
  province?: string;
  locality?: string;
  keyAlgorithm: CaKeyAlgorithm;
  ttl?: string;
  maxPathLength?: number;
  parentCaId?: string;
}

export interface PublicCa {
  id: string;
  projectId: string;
  type: CaType;
  status: CaRecord['status'];
  parentCaId: string | null;
  subject: string;
  keyAlgorithm: string;
  maxPathLength: number | null;
  serialNumber: string | null;
  notBefore: string | null;
  notAfter: string | null;
  createdAt: string;
  updatedAt: string;
}

const toPublicCa = (ca: CaRecord): PublicCa => ({
  id: ca.id,
  projectId: ca.projectId,
  type: ca.type,
  status: ca.status,
  parentCaId: ca.parentCaId,
  subject: ca.subjectDn,
  keyAlgorithm: ca.keyAlgorithm,
  maxPathLength: ca.pathLength,
  serialNumber: ca.serialNumber,
  notBefore: ca.notBefore,
  notAfter: ca.notAfter,
  createdAt: ca.createdAt,
  updatedAt: ca.updatedAt,
});

/** Seconds precision: certificates carry whole seconds, and "ttl to the second" means this. */
export const wholeSecond = (ms: number) => new Date(Math.floor(ms / 1000) * 1000);

export function pemToDer(pem: string, label: string): Buffer[] {
  const blocks = [...pem.matchAll(new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`, 'g'))];
  return blocks.map((block) => Buffer.from(block[1]!.replace(/\s/g, ''), 'base64'));
}

/**
 * What signing a certificate under one CA needs beyond the request: the parts of the
 * TBSCertificate every certificate of this CA shares, the signature, and the PEM answers.
 */
export interface IssuingCa {
  parts: IssuerParts;
  /** Hashes the DER TBSCertificate here and signs the digest in the token. */
  sign(tbs: Buffer): Promise<Buffer>;
  issuingPem: string;
  /** The issuing CA certificate and every certificate above it, PEM, issuer first. */
  chainPem: string;
}

export interface CaDeps {
  pkiStore: PkiStore;
  token: Pick<Token, 'generateKey' | 'destroyObjects' | 'signDigest'>;
  /** The service's public base URL (known once it listens). */
  publicBaseUrl: () => string;
  logger: Logger;
}

export function createCaService(deps: CaDeps) {
  const { pkiStore: store, token, publicBaseUrl, logger } = deps;

  const certificateUrl = (caId: string) => `${publicBaseUrl()}/pki/ca/${caId}/certificate.der`;
  const crlUrl = (caId: string) => `${publicBaseUrl()}/pki/ca/${caId}/crl.der`;
  /** The CA's OCSP responder (routes/ocsp.ts), named in the AIA of what it issues. */
  const ocspUrl = (caId: string) => `${publicBaseUrl()}/api/v1/cert-manager/ocsp/${caId}`;

  /** The CA's key as a certificate/CRL signer: hash here, sign the digest in the token. */
  function signerFor(ca: Pick<CaRecord, 'objectId' | 'keyAlgorithm'>): CertificateSigner {
    const spec = CA_KEY_SPECS[ca.keyAlgorithm as CaKeyAlgorithm];
    const hash = spec.kind === 'ec' && spec.curve === 'P-384' ? 'sha384' : 'sha256';
    const oid =
      spec.kind === 'rsa' ? SIGNATURE_ALGORITHMS.sha256WithRSAEncryption : hash === 'sha384' ? SIGNATURE_ALGORITHMS.ecdsaWithSHA384 : SIGNATURE_ALGORITHMS.ecdsaWithSHA256;
    return {
      algorithm: signatureAlgorithm(oid),
      async sign(tbs) {
        const digest = createHash(hash).update(tbs).digest();
        const raw = await token.signDigest(ca.objectId, spec.kind === 'rsa' ? 'pkcs1' : 'ecdsa', hash, digest);
        return spec.kind === 'rsa' ? raw : ecdsaRawToDer(raw);
      },
    };
  }

  /**
   * Per-CA parts of every certificate it issues, made once. Safe to keep because nothing in
   * them changes once the CA has its certificate: the issuer name, key and SKI are the
   * certificate's, written once when the CA turns active and never replaced; the chain above
   * is made of certificates that likewise never change (this service's parents, or the outside
   * chain imported together with the certificate). Entries are keyed by the CA certificate's
   * serial, read afresh with the CA row on every request, so a CA that got its certificate in
   * another process sharing the store is never served from a stale entry; and by the public
   * base URL (the AIA/CDP URLs), known only once the service listens. What can change (the CA's
   * status, the profile) is re-read per request by the caller.
   */
  const issuingCache = new Map<string, { key: string; issuing: Promise<IssuingCa> }>();
  function issuing(ca: CaRecord): Promise<IssuingCa> {
    const key = `${ca.serialNumber}|${publicBaseUrl()}`;
    const cached = issuingCache.get(ca.id);
    if (cached?.key === key) return cached.issuing;
    const made = makeIssuing(ca);
    issuingCache.set(ca.id, { key, issuing: made });
    made.catch(() => {
      if (issuingCache.get(ca.id)?.issuing === made) issuingCache.delete(ca.id);
    });
    return made;
  }

  async function makeIssuing(ca: CaRecord): Promise<IssuingCa> {
    if (!ca.certificate) throw badRequest('The CA has no certificate yet: import it first');
    const signer = signerFor(ca);
    const parts = issuerPartsOf(
      { issuer: ca.subject, issuerPublicKey: ca.publicKey, issuerKeyId: issuerKeyId(ca), crlDistributionPoint: crlUrl(ca.id), caIssuersUrl: certificateUrl(ca.id), ocspUrl: ocspUrl(ca.id) },
      algorithmIdentifierDer(signer.algorithm),
    );
    const issuingPem = toPem(ca.certificate);
    return { parts, sign: signer.sign, issuingPem, chainPem: [issuingPem, ...(await chainAbove(ca))].join('\n') };
  }

  async function existing(caId: string): Promise<CaRecord> {
    const ca = await store.getCa(caId);
    if (!ca) throw notFound(`Certificate authority with ID '${caId}' not found`);
    return ca;
  }

  /** PEM chain above a CA (its issuer first, up to the root); empty for a root. */
  async function chainAbove(ca: CaRecord): Promise<string[]> {
    if (ca.outsideChain) return pemToDer(ca.outsideChain, 'CERTIFICATE').map((der) => toPem(der));
    if (!ca.parentCaId) return [];
    const parent = await existing(ca.parentCaId);
    return [toPem(parent.certificate!), ...(await chainAbove(parent))];
  }

  /**
   * The key identifier certificates and CRLs put in their AKI: the CA certificate's own SKI
   * (an outside parent may have chosen any value), else the RFC 5280 method-1 hash.
   */
  const keyIds = new Map<string, Buffer | undefined>(); // by CA certificate serial: parsed once
  function issuerKeyId(ca: CaRecord): Buffer | undefined {
    if (!ca.certificate || !ca.serialNumber) return undefined;
    if (!keyIds.has(ca.serialNumber)) {
      const ski = new x509.X509Certificate(ca.certificate).getExtension(x509.SubjectKeyIdentifierExtension);
      keyIds.set(ca.serialNumber, ski ? Buffer.from(ski.keyId, 'hex') : undefined);
    }
    return keyIds.get(ca.serialNumber);
  }

  // One CRL generation at a time per CA in this process (each reads the revoked list fresh).
  // Across replicas, the store hands out the numbers (nextCrlNumber: unique and increasing
  // whoever asks) and keeps the highest-numbered CRL (saveCrl), so a replica that took its
  // number first but finished last never puts an older list back.
  const crlQueues = new Map<string, Promise<unknown>>();
  function regenerateCrl(ca: CaRecord): Promise<Buffer> {
    const previous = crlQueues.get(ca.id) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(async () => makeCrl((await store.getCa(ca.id)) ?? ca));
    crlQueues.set(ca.id, next);
    void next.finally(() => {
      if (crlQueues.get(ca.id) === next) crlQueues.delete(ca.id);
    }).catch(() => undefined);
    return next;
  }

  async function makeCrl(ca: CaRecord): Promise<Buffer> {
    // The number first: a certificate revoked after this read is in the next CRL, whose number is higher.
    const crlNumber = await store.nextCrlNumber(ca.id);
    const revoked = await store.revokedCertificates(ca.id);
    const now = Date.now();
    const crl = await buildCrl(
      {
        issuer: ca.subject,
        issuerPublicKey: ca.publicKey,
        issuerKeyId: issuerKeyId(ca),
        crlNumber,
        thisUpdate: wholeSecond(now),
        nextUpdate: wholeSecond(now + CRL_LIFETIME_MS),
        revoked: revoked.map((entry) => ({ serialNumber: entry.serialNumber, revokedAt: new Date(entry.revokedAt!), reason: entry.revocationReason as RevocationReason })),
      },
      signerFor(ca),
    );
    if (await store.saveCrl(ca.id, crlNumber, crl, new Date(now + CRL_LIFETIME_MS).toISOString())) return crl;
    // Another replica stored a newer CRL meanwhile: that one is the CA's current list.
    return (await store.getCa(ca.id))?.crl ?? crl;
  }

  function subjectOf(input: CreateCaInput): { der: Buffer; dn: string } {
    const rdns: x509.JsonName = [];
    if (input.country) rdns.push({ C: [input.country] });
    if (input.province) rdns.push({ ST: [input.province] });
    if (input.locality) rdns.push({ L: [input.locality] });
    if (input.organization) rdns.push({ O: [input.organization] });
    if (input.organizationalUnit) rdns.push({ OU: [input.organizationalUnit] });
    rdns.push({ CN: [input.commonName] });
    const name = new x509.Name(rdns);
    return { der: Buffer.from(name.toArrayBuffer()), dn: name.toString() };
  }

  async function activate(ca: CaRecord, certificate: Buffer, outsideChain: string | null): Promise<CaRecord> {
    const parsed = new x509.X509Certificate(certificate);
    const changes: Partial<CaRecord> = {
      certificate,
      outsideChain,
      status: 'active',
      state: 'active',
      serialNumber: parsed.serialNumber.toLowerCase(),
      notBefore: parsed.notBefore.toISOString(),
      notAfter: parsed.notAfter.toISOString(),
    };
    await store.updateCa(ca.id, changes);
    issuingCache.delete(ca.id);
    const active = { ...ca, ...changes };
    await regenerateCrl(active);
    return (await store.getCa(ca.id))!;
  }

  return {
    signerFor,
    issuing,
    issuerKeyId,
    chainAbove,
    certificateUrl,
    crlUrl,
    ocspUrl,
    existing,

    async create(principal: Principal | 'bootstrap', input: CreateCaInput): Promise<PublicCa> {
      if (principal !== 'bootstrap') authorize(principal, input.projectId, 'manage-pki');
      const lifetime = parseTtl(input.ttl ?? (input.type === 'root' ? '10y' : '5y'));
      if (lifetime === undefined) throw badRequest(`ttl "${input.ttl}" is not a duration in the ms notation (e.g. "5y", "365d")`);
      let parent: CaRecord | undefined;
      if (input.type === 'root' && input.parentCaId) throw badRequest('A root CA has no parent CA');
      if (input.parentCaId) {
        parent = await existing(input.parentCaId);
        if (principal !== 'bootstrap') authorize(principal, parent.projectId, 'manage-pki');
        if (parent.status !== 'active') throw badRequest(`The parent CA is ${parent.status}`);
        if (parent.pathLength === 0) throw badRequest('The parent CA has path length 0: it cannot sign another CA');
      }
      const now = Date.now();
      const notBefore = wholeSecond(now);
      const notAfter = wholeSecond(now + lifetime);
      if (parent && notAfter.getTime() > Date.parse(parent.notAfter!)) throw badRequest(`ttl runs past the parent CA's expiry (${parent.notAfter})`);
      let pathLength = input.maxPathLength === undefined || input.maxPathLength < 0 ? null : input.maxPathLength;
      if (parent && parent.pathLength !== null) pathLength = Math.min(pathLength ?? parent.pathLength - 1, parent.pathLength - 1);

      const subject = subjectOf(input);
      const id = randomUUID();
      const objectId = Buffer.from(id.replaceAll('-', ''), 'hex');
      const stamp = new Date(now).toISOString();
      const pending: CaRecord = {
        id,
        projectId: input.projectId,
        type: input.type,
        status: 'pending-certificate',
        state: 'pending',
        parentCaId: parent?.id ?? null,
        subject: subject.der,
        subjectDn: subject.dn,
        keyAlgorithm: input.keyAlgorithm,
        objectId,
        publicKey: Buffer.alloc(0),
        pathLength,
        certificate: null,
        outsideChain: null,
        csr: null,
        serialNumber: null,
        notBefore: null,
        notAfter: null,
        crlNumber: 0,
        crl: null,
        crlNextUpdate: null,
        createdAt: stamp,
        updatedAt: stamp,
      };
      await store.insertCa(pending, replicaId);
      try {
        const { publicKeySpki } = await token.generateKey(objectId, `${OBJECT_LABEL_PREFIX}ca:${id}`, CA_KEY_SPECS[input.keyAlgorithm]);
        const ca = { ...pending, publicKey: publicKeySpki! };
        await store.updateCa(id, { publicKey: ca.publicKey });
        if (input.type === 'intermediate' && !parent) {
          // Signed outside: keep the CSR; the CA becomes active when its certificate is imported.
          const csr = toPem(await buildCaCsr(ca.subject, ca.publicKey, pathLength ?? undefined, signerFor(ca)), 'CERTIFICATE REQUEST');
          await store.updateCa(id, { csr, state: 'active' });
          return toPublicCa((await store.getCa(id))!);
        }
        const issuer = parent ?? ca;
        const certificate = await buildCertificate(
          {
            serialNumber: newSerialNumber(),
            issuer: issuer.subject,
            subject: ca.subject,
            notBefore,
            notAfter,
            subjectPublicKey: ca.publicKey,
            issuerPublicKey: issuer.publicKey,
            issuerKeyId: parent && issuerKeyId(parent),
            ca: pathLength === null ? {} : { pathLength },
            keyUsages: KEY_USAGE_BITS.keyCertSign | KEY_USAGE_BITS.cRLSign,
            ...(parent ? { crlDistributionPoint: crlUrl(parent.id), caIssuersUrl: certificateUrl(parent.id), ocspUrl: ocspUrl(parent.id) } : {}),
          },
          signerFor(issuer),
        );
        return toPublicCa(await activate(ca, certificate, null));
      } catch (error) {
        await token.destroyObjects(objectId).catch(() => undefined);
        await store.removeCa(id);
        throw error;
      }
    },

    async list(principal: Principal, projectId: string): Promise<PublicCa[]> {
      authorize(principal, projectId, 'read');
      return (await store.listCas(projectId)).map(toPublicCa);
    },

    async get(principal: Principal, caId: string): Promise<PublicCa> {
      const ca = await existing(caId);
      authorize(principal, ca.projectId, 'read');
      return toPublicCa(ca);
    },

    async setStatus(principal: Principal, caId: string, status: 'active' | 'disabled'): Promise<PublicCa> {
      const ca = await existing(caId);
      authorize(principal, ca.projectId, 'manage-pki');
      if (ca.status === 'pending-certificate') throw badRequest('The CA has no certificate yet: import it first');
      await store.updateCa(caId, { status });
      return toPublicCa((await store.getCa(caId))!);
    },

    async certificate(principal: Principal, caId: string): Promise<{ certificate: string; certificateChain: string; serialNumber: string }> {
      const ca = await existing(caId);
      authorize(principal, ca.projectId, 'read');
      if (!ca.certificate) throw badRequest('The CA has no certificate yet: import it first');
      return { certificate: toPem(ca.certificate), certificateChain: (await chainAbove(ca)).join('\n'), serialNumber: ca.serialNumber! };
    },

    async csr(principal: Principal, caId: string): Promise<{ csr: string }> {
      const ca = await existing(caId);
      authorize(principal, ca.projectId, 'read');
      if (!ca.csr) throw badRequest('This CA was not created for an outside parent: it has no CSR');
      return { csr: ca.csr };
    },

    /** Imports the certificate an outside parent signed for a CA made with a CSR. */
    async importCertificate(principal: Principal, caId: string, certificatePem: string, chainPem: string): Promise<PublicCa> {
      const ca = await existing(caId);
      authorize(principal, ca.projectId, 'manage-pki');
      if (ca.status !== 'pending-certificate') throw badRequest('The CA already has a certificate');
      const [der] = pemToDer(certificatePem, 'CERTIFICATE');
      if (!der) throw badRequest('certificate is not a PEM certificate');
      let certificate: x509.X509Certificate;
      let publicKey: Buffer;
      let basic: x509.BasicConstraintsExtension | null;
      try {
        // @peculiar/x509 parses the key and extensions lazily: read them here, where a
        // malformed one is the client's error.
        certificate = new x509.X509Certificate(der);
        publicKey = Buffer.from(certificate.publicKey.rawData);
        basic = certificate.getExtension(x509.BasicConstraintsExtension);
      } catch {
        throw badRequest('certificate cannot be parsed');
      }
      if (!publicKey.equals(ca.publicKey)) throw badRequest("The certificate's public key is not this CA's key");
      if (!basic?.ca) throw badRequest('The certificate is not a CA certificate (BasicConstraints cA is not set)');
      // Every block must parse: skipping one that does not would import a chain nobody checked.
      const chain = pemToDer(chainPem, 'CERTIFICATE').map((item, index) => {
        try {
          return new x509.X509Certificate(item);
        } catch {
          throw badRequest(`certificateChain: certificate ${index + 1} cannot be parsed`);
        }
      });
      if (chain.length === 0) throw badRequest('certificateChain must hold the issuer certificate (and those above it)');
      let child = certificate;
      for (const issuer of chain) {
        // A key algorithm or size WebCrypto refuses fails as a throw (sometimes before any
        // promise exists), not a false.
        const verified = await (async () => child.verify({ publicKey: issuer.publicKey, signatureOnly: true }))().catch(() => false);
        if (!verified) throw badRequest('The certificate chain does not verify: each certificate must be signed by the next');
        child = issuer;
      }
      if (Date.now() > certificate.notAfter.getTime()) throw badRequest('The certificate has expired');
      const outsideChain = chain.map((item) => item.toString('pem')).join('\n');
      const active = await activate(ca, der, outsideChain);
      if (basic.pathLength !== undefined) await store.updateCa(ca.id, { pathLength: basic.pathLength });
      logger.info({ caId: ca.id }, 'imported the certificate of an externally signed CA');
      return toPublicCa((await store.getCa(active.id))!);
    },

    /** The DER certificate and CRL relying parties fetch without credentials. */
    async publicCertificate(caId: string): Promise<Buffer> {
      const ca = await existing(caId);
      if (!ca.certificate) throw notFound('The CA has no certificate yet');
      return ca.certificate;
    },

    async publicCrl(caId: string): Promise<Buffer> {
      const ca = await existing(caId);
      if (!ca.certificate) throw notFound('The CA has no CRL yet');
      // The maintainer replica renews CRLs a day before they run out (renewExpiringCrls); every
      // replica serves the stored one, and makes one itself only when there is none or it has
      // run out (no maintainer has run for a day), so relying parties never get a stale CRL.
      if (!ca.crl || !ca.crlNextUpdate || Date.parse(ca.crlNextUpdate) <= Date.now()) return regenerateCrl(ca);
      return ca.crl;
    },

    async regenerateCrl(caId: string): Promise<void> {
      await regenerateCrl(await existing(caId));
    },

    /** Makes every CRL that would run out within a day again (a maintenance duty: one replica runs it). */
    async renewExpiringCrls(): Promise<void> {
      for (const ca of await store.allActiveCas()) {
        if (!ca.crlNextUpdate || Date.parse(ca.crlNextUpdate) - Date.now() < CRL_RENEW_BEFORE_MS) await regenerateCrl(ca);
      }
    },

    /** Removes CAs left pending by a writer that is not alive (`isLive`), and their token objects. */
    async reconcile(isLive: (owner: string | null) => boolean): Promise<number> {
      const pending = (await store.pendingCas()).filter((ca) => !isLive(ca.owner));
      for (const ca of pending) {
        await token.destroyObjects(ca.objectId);
        await store.removeCa(ca.id);
        issuingCache.delete(ca.id);
      }
      return pending.length;
    },
  };
}

export type CaService = ReturnType<typeof createCaService>;
