/**
 * The tables as Kysely sees them (what a SELECT returns on either engine, once database.ts has
 * made PostgreSQL's BIGINT a number and BYTEA a Buffer, as better-sqlite3 gives them). The SQL
 * that makes them is in migrations/sqlite and migrations/postgres.
 */
import type { Generated } from 'kysely';

export interface SettingsTable {
  name: string;
  value: string;
}

export interface IdentitiesTable {
  id: string;
  name: string;
  client_id: string;
  permissions: string;
  created_at: string;
  updated_at: string;
}

export interface ClientSecretsTable {
  id: string;
  identity_id: string;
  prefix: string;
  hash: string;
  description: Generated<string>;
  created_at: string;
}

export interface AccessTokensTable {
  token_hash: string;
  identity_id: string;
  issued_at: number;
  expires_at: number;
  max_expires_at: number;
}

export interface KmsKeysTable {
  id: string;
  org_id: string;
  project_id: string;
  name: string;
  description: Generated<string>;
  is_disabled: Generated<number>;
  key_usage: string;
  algorithm: string;
  version: number;
  state: string;
  /** The replica that wrote the row while pending (migration 009). */
  owner: Generated<string | null>;
  created_at: string;
  updated_at: string;
}

export interface KmsKeyVersionsTable {
  key_id: string;
  version: number;
  object_id: Buffer;
  public_key: Buffer | null;
  state: string;
  owner: Generated<string | null>;
  created_at: string;
}

export interface CasTable {
  id: string;
  project_id: string;
  type: string;
  status: string;
  state: string;
  owner: Generated<string | null>;
  parent_ca_id: string | null;
  subject: Buffer;
  subject_dn: string;
  key_algorithm: string;
  object_id: Buffer;
  public_key: Buffer;
  path_length: number | null;
  certificate: Buffer | null;
  outside_chain: string | null;
  csr: string | null;
  serial_number: string | null;
  not_before: string | null;
  not_after: string | null;
  crl_number: Generated<number>;
  crl: Buffer | null;
  crl_next_update: string | null;
  /** The number of the CRL in `crl` (crl_number may have run ahead of it); migration 005. */
  crl_stored_number: number | null;
  created_at: string;
  updated_at: string;
}

export interface CertificateProfilesTable {
  id: string;
  project_id: string;
  ca_id: string;
  slug: string;
  description: Generated<string>;
  policy: string;
  defaults: string;
  est_enabled: Generated<number>;
  est_passphrase_hash: string | null;
  /** ACME (migration 007): 0 or 1 each; the EAB HMAC key, base64url, once made. */
  acme_enabled: Generated<number>;
  acme_require_eab: Generated<number>;
  acme_eab_secret: string | null;
  created_at: string;
  updated_at: string;
}

export interface CertificatesTable {
  id: string;
  project_id: string;
  ca_id: string;
  profile_id: string | null;
  serial_number: string;
  subject_dn: string;
  sans: string;
  not_before: string;
  not_after: string;
  der: Buffer;
  fingerprint_sha256: string;
  status: string;
  revocation_reason: string | null;
  revoked_at: string | null;
  created_at: string;
}

/** Compact since migration 008: see services/audit-chain.ts for how a row becomes an event. */
export interface AuditEventsTable {
  seq: number;
  /** Epoch milliseconds. */
  time: number;
  req_id: string;
  identity_id: string | null;
  action: string;
  resource_type: string | null;
  resource_id: string | null;
  status_code: number;
  client_address: string | null;
  /** 32 bytes each. */
  prev_hash: Buffer;
  hash: Buffer;
  /** Only on events written before migration 008 (hash format v1). */
  id: string | null;
}

export interface AuditCheckpointsTable {
  seq: number;
  head_hash: string;
  signed_at: string;
  algorithm: string;
  signature: Buffer;
}

export interface AuditSinkTable {
  name: string;
  exported_seq: number;
  exported_checkpoint_seq: number;
  failing_since: number | null;
  last_error: string | null;
}

export interface LeasesTable {
  name: string;
  holder: string;
  expires_at: number;
}

export interface AcmeNoncesTable {
  nonce: string;
  expires_at: number;
}

export interface AcmeAccountsTable {
  id: string;
  profile_id: string;
  jwk: string;
  thumbprint: string;
  status: string;
  contact: string;
  eab_kid: string | null;
  created_at: string;
}

export interface AcmeOrdersTable {
  id: string;
  account_id: string;
  profile_id: string;
  status: string;
  identifiers: string;
  expires_at: string;
  error: string | null;
  certificate_id: string | null;
  created_at: string;
  updated_at: string;
}

export interface AcmeAuthorizationsTable {
  id: string;
  order_id: string;
  account_id: string;
  identifier_type: string;
  identifier_value: string;
  status: string;
  expires_at: string;
}

export interface AcmeChallengesTable {
  id: string;
  authorization_id: string;
  type: string;
  token: string;
  status: string;
  validated_at: string | null;
  error: string | null;
  updated_at: string;
}

export interface SchemaMigrationsTable {
  name: string;
  applied_at: string;
}

export interface Schema {
  settings: SettingsTable;
  identities: IdentitiesTable;
  client_secrets: ClientSecretsTable;
  access_tokens: AccessTokensTable;
  kms_keys: KmsKeysTable;
  kms_key_versions: KmsKeyVersionsTable;
  cas: CasTable;
  certificate_profiles: CertificateProfilesTable;
  certificates: CertificatesTable;
  audit_events: AuditEventsTable;
  audit_checkpoints: AuditCheckpointsTable;
  audit_sink: AuditSinkTable;
  leases: LeasesTable;
  acme_nonces: AcmeNoncesTable;
  acme_accounts: AcmeAccountsTable;
  acme_orders: AcmeOrdersTable;
  acme_authorizations: AcmeAuthorizationsTable;
  acme_challenges: AcmeChallengesTable;
  schema_migrations: SchemaMigrationsTable;
}
