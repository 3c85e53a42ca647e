/**
 * Certificate authorities, certificate profiles and issued certificates: metadata and public
 * material only (certificates, CRLs, CSRs); CA private keys are token objects named by
 * `objectId`.
 */
import type { Statement } from 'better-sqlite3';
import type { Db } from './database.js';
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

function insertSql(table: string, row: Record<string, unknown>): string {
  const columns = Object.keys(row);
  return `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map((c) => `@${c}`).join(', ')})`;
}

function updateSql(table: string, changes: Record<string, unknown>): string {
  return `UPDATE ${table} SET ${Object.keys(changes).map((c) => `${c} = @${c}`).join(', ')} WHERE id = @id`;
}

const PROFILE_JSON = ['policy', 'defaults'];
/** SQLite has no BOOLEAN: est_enabled is 0 or 1. */
const profileToRow = (profile: Partial<ProfileRecord>) => toRow('estEnabled' in profile ? { ...profile, estEnabled: profile.estEnabled ? 1 : 0 } : profile, PROFILE_JSON);
const profileFromRow = (row: Record<string, unknown> | undefined) => {
  const profile = fromRow<ProfileRecord>(row, PROFILE_JSON);
  if (profile) profile.estEnabled = Boolean(profile.estEnabled);
  return profile;
};
const CERT_JSON = ['sans'];

export function createSqlitePkiStore(db: Db) {
  // Statements are prepared once per SQL text: preparing on every call showed up in profiles.
  const statements = new Map<string, Statement<any[]>>(); // bindings vary per statement
  const sql = (text: string) => {
    let statement = statements.get(text);
    if (!statement) statements.set(text, (statement = db.prepare(text)));
    return statement;
  };
  return {
    async insertCa(ca: CaRecord): Promise<void> {
      const row = toRow(ca);
      sql(insertSql('cas', row)).run(row);
    },
    async updateCa(id: string, changes: Partial<CaRecord>): Promise<void> {
      const row = toRow({ ...changes, updatedAt: new Date().toISOString() });
      sql(updateSql('cas', row)).run({ ...row, id });
    },
    async getCa(id: string): Promise<CaRecord | undefined> {
      return fromRow<CaRecord>(sql(`SELECT * FROM cas WHERE id = ? AND state = 'active'`).get(id) as Record<string, unknown> | undefined);
    },
    async listCas(projectId: string): Promise<CaRecord[]> {
      return (sql(`SELECT * FROM cas WHERE project_id = ? AND state = 'active' ORDER BY created_at, id`).all(projectId) as Record<string, unknown>[]).map((row) => fromRow<CaRecord>(row)!);
    },
    async allActiveCas(): Promise<CaRecord[]> {
      return (sql(`SELECT * FROM cas WHERE state = 'active' AND status != 'pending-certificate'`).all() as Record<string, unknown>[]).map((row) => fromRow<CaRecord>(row)!);
    },
    async pendingCas(): Promise<CaRecord[]> {
      return (sql(`SELECT * FROM cas WHERE state != 'active'`).all() as Record<string, unknown>[]).map((row) => fromRow<CaRecord>(row)!);
    },
    async removeCa(id: string): Promise<void> {
      sql('DELETE FROM cas WHERE id = ?').run(id);
    },
    async caObjectIds(): Promise<Buffer[]> {
      return (sql('SELECT object_id FROM cas').all() as Array<{ object_id: Buffer }>).map((row) => row.object_id);
    },

    async insertProfile(profile: ProfileRecord): Promise<void> {
      const row = profileToRow(profile);
      sql(insertSql('certificate_profiles', row)).run(row);
    },
    async updateProfile(id: string, changes: Partial<ProfileRecord>): Promise<void> {
      const row = profileToRow({ ...changes, updatedAt: new Date().toISOString() });
      sql(updateSql('certificate_profiles', row)).run({ ...row, id });
    },
    async getProfile(id: string): Promise<ProfileRecord | undefined> {
      return profileFromRow(sql('SELECT * FROM certificate_profiles WHERE id = ?').get(id) as Record<string, unknown> | undefined);
    },
    async listProfiles(projectId: string): Promise<ProfileRecord[]> {
      return (sql('SELECT * FROM certificate_profiles WHERE project_id = ? ORDER BY slug').all(projectId) as Record<string, unknown>[]).map((row) => profileFromRow(row)!);
    },
    async removeProfile(id: string): Promise<void> {
      sql('DELETE FROM certificate_profiles WHERE id = ?').run(id);
    },

    async insertCertificate(certificate: CertificateRecord): Promise<void> {
      const row = toRow(certificate, CERT_JSON);
      sql(insertSql('certificates', row)).run(row);
    },
    async getCertificate(id: string): Promise<CertificateRecord | undefined> {
      return fromRow<CertificateRecord>(sql('SELECT * FROM certificates WHERE id = ?').get(id) as Record<string, unknown> | undefined, CERT_JSON);
    },
    async listCertificates(projectId: string, offset: number, limit: number): Promise<{ certificates: CertificateRecord[]; totalCount: number }> {
      const rows = sql('SELECT * FROM certificates WHERE project_id = ? ORDER BY created_at DESC, id LIMIT ? OFFSET ?').all(projectId, limit, offset) as Record<string, unknown>[];
      const { count } = sql('SELECT COUNT(*) AS count FROM certificates WHERE project_id = ?').get(projectId) as { count: number };
      return { certificates: rows.map((row) => fromRow<CertificateRecord>(row, CERT_JSON)!), totalCount: count };
    },
    /** By the issuing CA and serial (lowercase hex): one read on the serial's unique index. */
    async certificateBySerial(caId: string, serialHex: string): Promise<CertificateRecord | undefined> {
      return fromRow<CertificateRecord>(sql('SELECT * FROM certificates WHERE serial_number = ? AND ca_id = ?').get(serialHex, caId) as Record<string, unknown> | undefined, CERT_JSON);
    },
    /** The status columns only, for OCSP: the same indexed read without the certificate itself. */
    async certificateStatus(caId: string, serialHex: string): Promise<CertificateStatusRecord | undefined> {
      return fromRow<CertificateStatusRecord>(
        sql('SELECT status, revocation_reason, revoked_at FROM certificates WHERE serial_number = ? AND ca_id = ?').get(serialHex, caId) as Record<string, unknown> | undefined,
      );
    },
    /** Marks a certificate revoked; false when it already was. */
    async revokeCertificate(id: string, reason: string, revokedAt: string): Promise<boolean> {
      return sql(`UPDATE certificates SET status = 'revoked', revocation_reason = ?, revoked_at = ? WHERE id = ? AND status = 'active'`).run(reason, revokedAt, id).changes > 0;
    },
    async revokedCertificates(caId: string): Promise<Array<Pick<CertificateRecord, 'serialNumber' | 'revocationReason' | 'revokedAt'>>> {
      return (sql(`SELECT serial_number, revocation_reason, revoked_at FROM certificates WHERE ca_id = ? AND status = 'revoked' ORDER BY revoked_at`).all(caId) as Record<string, unknown>[]).map(
        (row) => fromRow(row)!,
      );
    },
  };
}

export type PkiStore = ReturnType<typeof createSqlitePkiStore>;
