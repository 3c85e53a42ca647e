/**
 * Certificate revocation lists (RFC 5280 §5): v2, signed by the CA's key through the same
 * pluggable signer as certificates, with the CA's AKI, an increasing CRL number, and each
 * revoked serial with its date and reason code.
 */
import 'reflect-metadata';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as asn from '@peculiar/asn1-x509';
import { extension, keyIdentifier, type CertificateSigner } from './certificate-builder.js';

/** The API's revocation reasons (Infisical's names, docs/contract.md) and their RFC 5280 CRLReason codes. */
export const REVOCATION_REASONS = {
  UNSPECIFIED: asn.CRLReasons.unspecified,
  KEY_COMPROMISE: asn.CRLReasons.keyCompromise,
  CA_COMPROMISE: asn.CRLReasons.cACompromise,
  AFFILIATION_CHANGED: asn.CRLReasons.affiliationChanged,
  SUPERSEDED: asn.CRLReasons.superseded,
  CESSATION_OF_OPERATION: asn.CRLReasons.cessationOfOperation,
  CERTIFICATE_HOLD: asn.CRLReasons.certificateHold,
  PRIVILEGE_WITHDRAWN: asn.CRLReasons.privilegeWithdrawn,
  A_A_COMPROMISE: asn.CRLReasons.aACompromise,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

export interface CrlTemplate {
  issuer: Buffer;
  issuerPublicKey: Buffer;
  /** The issuer certificate's SKI, when it has one. */
  issuerKeyId?: Buffer | undefined;
  crlNumber: number;
  thisUpdate: Date;
  nextUpdate: Date;
  revoked: Array<{ serialNumber: string; revokedAt: Date; reason: RevocationReason }>;
}

export async function buildCrl(template: CrlTemplate, signer: CertificateSigner): Promise<Buffer> {
  const revokedCertificates = template.revoked.map(
    (entry) =>
      new asn.RevokedCertificate({
        userCertificate: new Uint8Array(Buffer.from(entry.serialNumber, 'hex')).buffer,
        revocationDate: new asn.Time(entry.revokedAt),
        crlEntryExtensions: [extension(asn.id_ce_cRLReasons, false, new asn.CRLReason(REVOCATION_REASONS[entry.reason]))],
      }),
  );
  const tbsCertList = new asn.TBSCertList({
    version: asn.Version.v2,
    signature: signer.algorithm,
    issuer: AsnConvert.parse(template.issuer, asn.Name),
    thisUpdate: new asn.Time(template.thisUpdate),
    nextUpdate: new asn.Time(template.nextUpdate),
    ...(revokedCertificates.length ? { revokedCertificates } : {}),
    crlExtensions: [
      extension(asn.id_ce_authorityKeyIdentifier, false, new asn.AuthorityKeyIdentifier({ keyIdentifier: new asn.KeyIdentifier(template.issuerKeyId ?? keyIdentifier(template.issuerPublicKey)) })),
      extension(asn.id_ce_cRLNumber, false, new asn.CRLNumber(template.crlNumber)),
    ],
  });
  const tbs = Buffer.from(AsnConvert.serialize(tbsCertList));
  const signature = await signer.sign(tbs);
  return Buffer.from(AsnConvert.serialize(new asn.CertificateList({ tbsCertList, signatureAlgorithm: signer.algorithm, signature: new Uint8Array(signature).buffer })));
}
