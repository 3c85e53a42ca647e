/**
 * Certificate authorities, certificate profiles and issued certificates: metadata and public
 * material only (certificates, CRLs, CSRs); CA private keys are token objects named by
 * `objectId`.
 */
import { uniqueWrite, type Store } from './database.js';
import { prepared } from './queries.js';
import { recentRows } from './recent-rows.js';
import { RowWriterUnavailable, type RowWriter } from './row-writer.js';
import type { RowState } from './key-store.js';

export type CaType = 'root' | 'intermediate';
export type CaStatus = 'active' | 'disabled' | 'pending-certificate';

export interface CaRecord {
  id: string;
  projectId: string;
  type: CaType;
  status: CaStatus;
  state: RowState;
  parentCaId: string | null;
  subject: Buffer;
  subjectDn: string;
  keyAlgorithm: string;
  objectId: Buffer;
  publicKey: Buffer;
  pathLength: number | null;
  certificate: Buffer | null;
  outsideChain: string | null;
  csr: string | null;
  serialNumber: string | null;
  notBefore: string | null;
  notAfter: string | null;
  crlNumber: number;
  crl: Buffer | null;
  crlNextUpdate: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface ProfileRecord {
  id: string;
  projectId: string;
  caId: string;
  slug: string;
  description: string;
  policy: unknown;
  defaults: { ttl?: string };
  /** EST enrollment (RFC 7030) is open for this profile. */
  estEnabled: boolean;
  /** scrypt hash of the EST passphrase; never leaves the service. */
  estPassphraseHash: string | null;
  /** ACME (RFC 8555) is open for this profile. */
  acmeEnabled: boolean;
  /** New ACME accounts must carry an external account binding made with `acmeEabSecret`. */
  acmeRequireEab: boolean;
  /** The EAB HMAC key (base64url), made on first request; never in an answer but the eab-secret route's. */
  acmeEabSecret: string | null;
  createdAt: string;
  updatedAt: string;
}

/** What an OCSP answer needs of a certificate. */
export type CertificateStatusRecord = Pick<CertificateRecord, 'status' | 'revocationReason' | 'revokedAt'>;

export interface CertificateRecord {
  id: string;
  projectId: string;
  caId: string;
  profileId: string | null;
  serialNumber: string;
  subjectDn: string;
  sans: Array<{ type: string; value: string }>;
  notBefore: string;
  notAfter: string;
  der: Buffer;
  fingerprintSha256: string;
  status: 'active' | 'revoked';
  revocationReason: string | null;
  revokedAt: string | null;
  createdAt: string;
}

/** Column ↔ field names, worked out once per name: rows are converted on every issuance. */
function memoized(convert: (name: string) => string): (name: string) => string {
  const known = new Map<string, string>();
  return (name) => {
    let converted = known.get(name);
    if (converted === undefined) known.set(name, (converted = convert(name)));
    return converted;
  };
}
const camel = memoized((column) => column.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()));
const snake = memoized((field) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`));

function fromRow<T>(row: Record<string, unknown> | undefined, json: string[] = []): T | undefined {
  if (!row) return undefined;
  const out: Record<string, unknown> = {};
  for (const [column, value] of Object.entries(row)) out[camel(column)] = json.includes(column) && typeof value === 'string' ? JSON.parse(value) : value;
  return out as T;
}

function toRow(record: object, json: string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(record)) out[snake(field)] = json.includes(field) ? JSON.stringify(value) : value;
  return out;
}

const PROFILE_JSON = ['policy', 'defaults'];
/** The profile's flags are INTEGER 0 or 1 on both engines (as kms_keys.is_disabled). */
const PROFILE_FLAGS = ['estEnabled', 'acmeEnabled', 'acmeRequireEab'] as const;
const profileToRow = (profile: Partial<ProfileRecord>) => {
  const flags: Record<string, number> = {};
  for (const flag of PROFILE_FLAGS) if (flag in profile) flags[flag] = profile[flag] ? 1 : 0;
  return toRow({ ...profile, ...flags }, PROFILE_JSON);
};
const profileFromRow = (row: Record<string, unknown> | undefined) => {
  const profile = fromRow<ProfileRecord>(row, PROFILE_JSON);
  if (profile) for (const flag of PROFILE_FLAGS) profile[flag] = Number(profile[flag]) === 1;
  return profile;
};
const CERT_JSON = ['sans'];
const CERTIFICATE_COLUMNS = [
  'id',
  'project_id',
  'ca_id',
  'profile_id',
  'serial_number',
  'subject_dn',
  'sans',
  'not_before',
  'not_after',
  'der',
  'fingerprint_sha256',
  'status',
  'revocation_reason',
  'revoked_at',
  'created_at',
] as const;

/**
 * How old a CA or profile row the issue path may rely on (recentCa, recentProfile): a CA disabled
 * or a profile changed by another process is obeyed here within this bound, as key rows are
 * (services/key-service.ts KEY_ROW_MAX_AGE_MS).
 */
export const PKI_ROW_MAX_AGE_MS = 500;

/** Columns a CaRecord does not carry (bookkeeping of this store's own). */
const CA_INTERNAL = ['crlStoredNumber', 'owner'];
function toCa(row: Record<string, unknown> | undefined): CaRecord | undefined {
  const ca = fromRow<CaRecord & { crlStoredNumber?: unknown }>(row);
  if (ca) for (const field of CA_INTERNAL) delete (ca as unknown as Record<string, unknown>)[field];
  return ca;
}

export interface PkiStore {
  /** `owner`: the replica writing the pending row (services/leases.ts). */
  insertCa(ca: CaRecord, owner: string): Promise<void>;
  updateCa(id: string, changes: Partial<Omit<CaRecord, 'crlNumber' | 'crl'>>): Promise<void>;
  getCa(id: string): Promise<CaRecord | undefined>;
  listCas(projectId: string): Promise<CaRecord[]>;
  allActiveCas(): Promise<CaRecord[]>;
  /** CAs not active, with the replica that wrote them pending (null if unknown). */
  pendingCas(): Promise<Array<CaRecord & { owner: string | null }>>;
  removeCa(id: string): Promise<void>;
  caObjectIds(): Promise<Buffer[]>;
  /**
   * Takes the CA's next CRL number: raises cas.crl_number by one and returns the new value, in
   * one statement, so callers anywhere (other replicas included) never get the same number.
   */
  nextCrlNumber(caId: string): Promise<number>;
  /**
   * Stores a CRL signed under `crlNumber` unless one with a higher number is stored already
   * (a caller that took its number earlier but finished later); true when stored.
   */
  saveCrl(caId: string, crlNumber: number, crl: Buffer, nextUpdate: string): Promise<boolean>;

  /**
   * The CA or profile row as the issue path may use it: read by this process at most
   * PKI_ROW_MAX_AGE_MS before (recent-rows.ts). Every write through this store forgets the row
   * at once; a write by another process is seen within the bound.
   */
  recentCa(id: string): Promise<CaRecord | undefined>;
  recentProfile(id: string): Promise<ProfileRecord | undefined>;

  insertProfile(profile: ProfileRecord): Promise<void>;
  updateProfile(id: string, changes: Partial<ProfileRecord>): Promise<void>;
  getProfile(id: string): Promise<ProfileRecord | undefined>;
  listProfiles(projectId: string): Promise<ProfileRecord[]>;
  removeProfile(id: string): Promise<void>;
  /**
   * The profile's EAB key: stores `candidate` unless one is stored already, then returns the
   * stored one, so replicas asked at once all hand out the same key.
   */
  ensureAcmeEabSecret(id: string, candidate: string): Promise<string | undefined>;

  insertCertificate(certificate: CertificateRecord): Promise<void>;
  getCertificate(id: string): Promise<CertificateRecord | undefined>;
  listCertificates(projectId: string, offset: number, limit: number): Promise<{ certificates: CertificateRecord[]; totalCount: number }>;
  /** By the issuing CA and serial (lowercase hex): one read on the serial's unique index. */
  certificateBySerial(caId: string, serialHex: string): Promise<CertificateRecord | undefined>;
  /** The status columns only, for OCSP (every OCSP request reads it): the same indexed read without the certificate. */
  certificateStatus(caId: string, serialHex: string): Promise<CertificateStatusRecord | undefined>;
  /** Marks a certificate revoked; false when it already was. */
  revokeCertificate(id: string, reason: string, revokedAt: string): Promise<boolean>;
  revokedCertificates(caId: string): Promise<Array<Pick<CertificateRecord, 'serialNumber' | 'revocationReason' | 'revokedAt'>>>;
}

/**
 * `rowWriter`: where new certificates are inserted instead of on `store`'s own connection (the
 * audit writer thread on SQLite, store/row-writer.ts); when it cannot take a row, the row is
 * inserted here as before.
 */
export function createPkiStore(store: Store, options: { rowWriter?: RowWriter | undefined } = {}): PkiStore {
  const { db } = store;
  // The rows are converted by name (toRow/fromRow): the tables' column names are the records'
  // field names in snake case, so the casts below only restate that.
  type Values = never;
  // The issue path's statements, compiled once (queries.ts prepared).
  const selectCa = prepared(db, 1, (id: string) => db.selectFrom('cas').selectAll().where('id', '=', id).where('state', '=', 'active'));
  const selectProfile = prepared(db, 1, (id: string) => db.selectFrom('certificate_profiles').selectAll().where('id', '=', id));
  const selectCertificate = prepared(db, 1, (id: string) => db.selectFrom('certificates').selectAll().where('id', '=', id));
  // OCSP reads a status on every request; EST re-enrollment reads the presented certificate.
  const selectCertificateStatus = prepared(db, 2, (serialHex: string, caId: string) =>
    db.selectFrom('certificates').select(['status', 'revocation_reason', 'revoked_at']).where('serial_number', '=', serialHex).where('ca_id', '=', caId),
  );
  const selectCertificateBySerial = prepared(db, 2, (serialHex: string, caId: string) => db.selectFrom('certificates').selectAll().where('serial_number', '=', serialHex).where('ca_id', '=', caId));
  const insertCertificate = prepared(db, CERTIFICATE_COLUMNS.length, (...values: unknown[]) =>
    db.insertInto('certificates').values(Object.fromEntries(CERTIFICATE_COLUMNS.map((column, i) => [column, values[i]])) as Values),
  );
  const getCa = async (id: string) => toCa((await selectCa(id))[0]);
  const getProfile = async (id: string) => profileFromRow((await selectProfile(id))[0]);
  const recentCas = recentRows(getCa, PKI_ROW_MAX_AGE_MS);
  const recentProfiles = recentRows(getProfile, PKI_ROW_MAX_AGE_MS);
  return {
    async insertCa(ca, owner) {
      return recentCas.writing(ca.id, async () => {
        await db.insertInto('cas').values(toRow({ ...ca, owner }) as Values).execute();
      });
    },
    async updateCa(id, changes) {
      return recentCas.writing(id, async () => {
        await db
          .updateTable('cas')
          .set(toRow({ ...changes, updatedAt: new Date().toISOString() }) as Values)
          .where('id', '=', id)
          .execute();
      });
    },
    getCa,
    recentCa: (id) => recentCas.get(id),
    recentProfile: (id) => recentProfiles.get(id),
    async listCas(projectId) {
      const rows = await db.selectFrom('cas').selectAll().where('project_id', '=', projectId).where('state', '=', 'active').orderBy('created_at').orderBy('id').execute();
      return rows.map((row) => toCa(row)!);
    },
    async allActiveCas() {
      const rows = await db.selectFrom('cas').selectAll().where('state', '=', 'active').where('status', '!=', 'pending-certificate').execute();
      return rows.map((row) => toCa(row)!);
    },
    async pendingCas() {
      return (await db.selectFrom('cas').selectAll().where('state', '!=', 'active').execute()).map((row) => ({ ...toCa(row)!, owner: row.owner }));
    },
    async removeCa(id) {
      return recentCas.writing(id, async () => {
        await db.deleteFrom('cas').where('id', '=', id).execute();
      });
    },
    async caObjectIds() {
      return (await db.selectFrom('cas').select('object_id').execute()).map((row) => row.object_id);
    },
    async nextCrlNumber(caId) {
      return recentCas.writing(caId, async () => {
        const row = await db
          .updateTable('cas')
          .set((eb) => ({ crl_number: eb('crl_number', '+', 1) }))
          .where('id', '=', caId)
          .returning('crl_number')
          .executeTakeFirst();
        if (!row) throw new Error(`No CA ${caId} to number a CRL for`);
        return Number(row.crl_number);
      });
    },
    async saveCrl(caId, crlNumber, crl, nextUpdate) {
      return recentCas.writing(caId, async () => {
        const result = await db
          .updateTable('cas')
          .set({ crl, crl_stored_number: crlNumber, crl_next_update: nextUpdate, updated_at: new Date().toISOString() })
          .where('id', '=', caId)
          .where((eb) => eb.or([eb('crl_stored_number', 'is', null), eb('crl_stored_number', '<', crlNumber)]))
          .executeTakeFirst();
        return result.numUpdatedRows > 0n;
      });
    },

    async insertProfile(profile) {
      return recentProfiles.writing(profile.id, async () => {
        await uniqueWrite(() => db.insertInto('certificate_profiles').values(profileToRow(profile) as Values).execute());
      });
    },
    async updateProfile(id, changes) {
      return recentProfiles.writing(id, async () => {
        await db
          .updateTable('certificate_profiles')
          .set(profileToRow({ ...changes, updatedAt: new Date().toISOString() }) as Values)
          .where('id', '=', id)
          .execute();
      });
    },
    getProfile,
    async listProfiles(projectId) {
      const rows = await db.selectFrom('certificate_profiles').selectAll().where('project_id', '=', projectId).orderBy('slug').execute();
      return rows.map((row) => profileFromRow(row)!);
    },
    async removeProfile(id) {
      return recentProfiles.writing(id, async () => {
        await db.deleteFrom('certificate_profiles').where('id', '=', id).execute();
      });
    },
    async ensureAcmeEabSecret(id, candidate) {
      return recentProfiles.writing(id, async () => {
        await db.updateTable('certificate_profiles').set({ acme_eab_secret: candidate }).where('id', '=', id).where('acme_eab_secret', 'is', null).execute();
        const row = await db.selectFrom('certificate_profiles').select('acme_eab_secret').where('id', '=', id).executeTakeFirst();
        return row?.acme_eab_secret ?? undefined;
      });
    },

    async insertCertificate(certificate) {
      const row = toRow(certificate, CERT_JSON);
      const values = CERTIFICATE_COLUMNS.map((column) => row[column] ?? null);
      if (options.rowWriter) {
        try {
          return await options.rowWriter('certificates', CERTIFICATE_COLUMNS, values);
        } catch (error) {
          if (!(error instanceof RowWriterUnavailable)) throw error;
        }
      }
      await insertCertificate(...values);
    },
    async getCertificate(id) {
      return fromRow<CertificateRecord>((await selectCertificate(id))[0], CERT_JSON);
    },
    async listCertificates(projectId, offset, limit) {
      const rows = await db
        .selectFrom('certificates')
        .selectAll()
        .where('project_id', '=', projectId)
        .orderBy('created_at', 'desc')
        .orderBy('id')
        .limit(limit)
        .offset(offset)
        .execute();
      const { count } = await db
        .selectFrom('certificates')
        .select((eb) => eb.fn.countAll<number>().as('count'))
        .where('project_id', '=', projectId)
        .executeTakeFirstOrThrow();
      return { certificates: rows.map((row) => fromRow<CertificateRecord>(row, CERT_JSON)!), totalCount: Number(count) };
    },
    async certificateBySerial(caId, serialHex) {
      return fromRow<CertificateRecord>((await selectCertificateBySerial(serialHex, caId))[0], CERT_JSON);
    },
    async certificateStatus(caId, serialHex) {
      const row = (await selectCertificateStatus(serialHex, caId))[0];
      return row && { status: row.status as CertificateStatusRecord['status'], revocationReason: row.revocation_reason, revokedAt: row.revoked_at };
    },
    async revokeCertificate(id, reason, revokedAt) {
      const result = await db
        .updateTable('certificates')
        .set({ status: 'revoked', revocation_reason: reason, revoked_at: revokedAt })
        .where('id', '=', id)
        .where('status', '=', 'active')
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },
    async revokedCertificates(caId) {
      const rows = await db
        .selectFrom('certificates')
        .select(['serial_number', 'revocation_reason', 'revoked_at'])
        .where('ca_id', '=', caId)
        .where('status', '=', 'revoked')
        .orderBy('revoked_at')
        .execute();
      return rows.map((row) => ({ serialNumber: row.serial_number, revocationReason: row.revocation_reason, revokedAt: row.revoked_at }));
    },
  };
}
