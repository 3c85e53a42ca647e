-- Certificate authorities (their keys live in the token, named by object_id = CKA_ID),
-- certificate profiles, issued certificates. `state` works as for kms_keys: a `pending` CA row
-- is written before its key is generated, and reconcile undoes one a crash left behind.
CREATE TABLE cas (
  id              TEXT PRIMARY KEY,
  project_id      TEXT NOT NULL,
  type            TEXT NOT NULL,             -- root | intermediate
  status          TEXT NOT NULL,             -- active | disabled | pending-certificate
  state           TEXT NOT NULL,             -- pending | active
  parent_ca_id    TEXT REFERENCES cas(id),   -- for an intermediate signed by a CA of this service
  subject         BLOB NOT NULL,             -- DER Name
  subject_dn      TEXT NOT NULL,             -- the same, as text for people
  key_algorithm   TEXT NOT NULL,
  object_id       BLOB NOT NULL UNIQUE,
  public_key      BLOB NOT NULL,             -- DER SubjectPublicKeyInfo
  path_length     INTEGER,
  certificate     BLOB,                      -- DER, once signed
  outside_chain   TEXT,                      -- PEM chain above an externally signed intermediate
  csr             TEXT,                      -- PEM, for an intermediate signed outside
  serial_number   TEXT,
  not_before      TEXT,
  not_after       TEXT,
  crl_number      INTEGER NOT NULL DEFAULT 0,
  crl             BLOB,
  crl_next_update TEXT,
  created_at      TEXT NOT NULL,
  updated_at      TEXT NOT NULL
);
CREATE INDEX cas_project ON cas(project_id);

CREATE TABLE certificate_profiles (
  id          TEXT PRIMARY KEY,
  project_id  TEXT NOT NULL,
  ca_id       TEXT NOT NULL REFERENCES cas(id),
  slug        TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  policy      TEXT NOT NULL,                 -- JSON CertificatePolicy
  defaults    TEXT NOT NULL,                 -- JSON {ttl?}
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL,
  UNIQUE (project_id, slug)
);

CREATE TABLE certificates (
  id                TEXT PRIMARY KEY,
  project_id        TEXT NOT NULL,
  ca_id             TEXT NOT NULL REFERENCES cas(id),
  profile_id        TEXT,
  serial_number     TEXT NOT NULL UNIQUE,    -- 40 lowercase hex
  subject_dn        TEXT NOT NULL,
  sans              TEXT NOT NULL,           -- JSON [{type, value}]
  not_before        TEXT NOT NULL,
  not_after         TEXT NOT NULL,
  der               BLOB NOT NULL,
  fingerprint_sha256 TEXT NOT NULL,
  status            TEXT NOT NULL,           -- active | revoked
  revocation_reason TEXT,
  revoked_at        TEXT,
  created_at        TEXT NOT NULL
);
CREATE INDEX certificates_project ON certificates(project_id, created_at);
CREATE INDEX certificates_ca_revoked ON certificates(ca_id, status);
