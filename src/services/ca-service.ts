/**
 * Certificate authorities whose keys are generated and used in the token: self-signed roots,
 * intermediates signed by a CA of this service, and intermediates whose CSR an outside root
 * signs (then imported). Their lifecycle and what issuing under one needs; the rest lives
 * beside it: the CA's key as a signer (ca-signer.ts), its CRL (ca-crl.ts), and the checks on a
 * certificate an outside parent signed (outside-chain.ts).
 *
 * Crash safety as for KMS keys: the CA row is written `pending` before its key is generated
 * and turned `active` once its certificate (or CSR) is stored; reconcile removes pending rows
 * whose writing replica is no longer alive, and their objects.
 */
import 'reflect-metadata';
import type { CaKeyAlgorithm } from '../algorithms.js';
import { randomUUID } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { badRequest, notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';
import { replicaId } from './leases.js';
import { algorithmIdentifierDer, buildCaCsr, buildCertificate, issuerPartsOf, toPem, type IssuerParts } from '../pki/certificate-builder.js';
import { KEY_USAGE_BITS } from '../pki/policy.js';
import { newSerialNumber } from '../pki/serial.js';
import { pemToDer } from '../pki/der.js';
import { parseTtl, wholeSecond } from '../pki/ttl.js';
import type { CaRecord, CaType, PkiStore } from '../store/pki-store.js';
import { OBJECT_LABEL_PREFIX } from './orphan-objects.js';
import { createCrlMaker } from './ca-crl.js';
import { CA_KEY_SPECS, caSigner } from './ca-signer.js';
import { readOutsideCertificate } from './outside-chain.js';
import { authorize, type Principal } from './permissions.js';

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

  const signerFor = (ca: Pick<CaRecord, 'objectId' | 'keyAlgorithm'>) => caSigner(token, ca);

  /**
   * Per-CA parts of every certificate it issues, made once. Safe to keep because nothing in
   * them changes once the CA has its certificate: the issuer name, key and SKI are the
   * certificate's, written once when the CA turns active and never replaced; the chain above
   * is made of certificates that likewise never change (this service's parents, or the outside
   * chain imported together with the certificate). Entries are keyed by the CA certificate's
   * serial, which comes with the CA row the caller read (at most PKI_ROW_MAX_AGE_MS old on the
   * issue path), so a CA that got its certificate in another process sharing the store is never
   * served from a stale entry; and by the public base URL (the AIA/CDP URLs), known only once
   * the service listens. What can change (the CA's status, the profile) is the caller's to read,
   * within that same bound.
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

  /** `recent`: a row up to PKI_ROW_MAX_AGE_MS old will do (the issue path; pki-store.ts recentCa). */
  async function existing(caId: string, freshness: 'current' | 'recent' = 'current'): Promise<CaRecord> {
    const ca = await (freshness === 'recent' ? store.recentCa(caId) : store.getCa(caId));
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

  const crls = createCrlMaker({ store, signerFor, issuerKeyId });
  const regenerateCrl = crls.regenerate;

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
    // What issuers (certificates, OCSP, EST, ACME) need of a CA: its row, the chain above it,
    // the parts every certificate it issues shares, and its key as a signer.
    signerFor,
    issuing,
    chainAbove,
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
      const { der, outsideChain, pathLength } = await readOutsideCertificate(ca.publicKey, certificatePem, chainPem);
      const active = await activate(ca, der, outsideChain);
      if (pathLength !== undefined) await store.updateCa(ca.id, { pathLength });
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
    renewExpiringCrls: crls.renewExpiring,

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
