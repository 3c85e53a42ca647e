/**
 * Each CA's CRL: signed in the token, made again on every revocation and before it runs out.
 *
 * One CRL generation at a time per CA in this process (each reads the revoked list fresh).
 * Across replicas, the store hands out the numbers (nextCrlNumber: unique and increasing
 * whoever asks) and keeps the highest-numbered CRL (saveCrl), so a replica that took its
 * number first but finished last never puts an older list back.
 */
import type { CertificateSigner } from '../pki/certificate-builder.js';
import { buildCrl, type RevocationReason } from '../pki/crl.js';
import { wholeSecond } from '../pki/ttl.js';
import type { CaRecord, PkiStore } from '../store/pki-store.js';

const CRL_LIFETIME_MS = 7 * 86_400_000;
/** A CRL is made again once less than this is left before its nextUpdate. */
const CRL_RENEW_BEFORE_MS = 86_400_000;

export interface CrlDeps {
  store: Pick<PkiStore, 'getCa' | 'nextCrlNumber' | 'revokedCertificates' | 'saveCrl' | 'allActiveCas'>;
  signerFor: (ca: CaRecord) => CertificateSigner;
  issuerKeyId: (ca: CaRecord) => Buffer | undefined;
}

export function createCrlMaker({ store, signerFor, issuerKeyId }: CrlDeps) {
  const queues = new Map<string, Promise<unknown>>();

  async function make(ca: CaRecord): Promise<Buffer> {
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

  /** Makes the CA's CRL now, after any generation of it already queued; resolves to the current CRL. */
  function regenerate(ca: CaRecord): Promise<Buffer> {
    const previous = queues.get(ca.id) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(async () => make((await store.getCa(ca.id)) ?? ca));
    queues.set(ca.id, next);
    void next
      .finally(() => {
        if (queues.get(ca.id) === next) queues.delete(ca.id);
      })
      .catch(() => undefined);
    return next;
  }

  return {
    regenerate,
    /** Makes every CRL that would run out within a day again (a maintenance duty: one replica runs it). */
    async renewExpiring(): Promise<void> {
      for (const ca of await store.allActiveCas()) {
        if (!ca.crlNextUpdate || Date.parse(ca.crlNextUpdate) - Date.now() < CRL_RENEW_BEFORE_MS) await regenerate(ca);
      }
    },
  };
}
