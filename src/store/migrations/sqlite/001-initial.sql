-- Metadata only: no key material is ever stored here, only what names it in the token.
CREATE TABLE settings (
  name  TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

CREATE TABLE identities (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  client_id   TEXT NOT NULL UNIQUE,
  permissions TEXT NOT NULL,           -- JSON: [{projectId, actions: [...]}]
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL
);

CREATE TABLE client_secrets (
  id          TEXT PRIMARY KEY,
  identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
  prefix      TEXT NOT NULL,           -- first characters of the secret, to pick the hash to check
  hash        TEXT NOT NULL,           -- scrypt$N$r$p$salt$hash
  description TEXT NOT NULL DEFAULT '',
  created_at  TEXT NOT NULL
);
CREATE INDEX client_secrets_identity ON client_secrets(identity_id);

CREATE TABLE access_tokens (
  token_hash     TEXT PRIMARY KEY,     -- SHA-256 of the bearer token; the token itself is never stored
  identity_id    TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
  issued_at      INTEGER NOT NULL,     -- epoch milliseconds
  expires_at     INTEGER NOT NULL,
  max_expires_at INTEGER NOT NULL
);
CREATE INDEX access_tokens_identity ON access_tokens(identity_id);

CREATE TABLE kms_keys (
  id          TEXT PRIMARY KEY,
  org_id      TEXT NOT NULL,
  project_id  TEXT NOT NULL,
  name        TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  is_disabled INTEGER NOT NULL DEFAULT 0,
  key_usage   TEXT NOT NULL,
  algorithm   TEXT NOT NULL,
  version     INTEGER NOT NULL,        -- the version new ciphertexts and signatures use
  state       TEXT NOT NULL,           -- pending | active | deleting (see reconcile)
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL,
  UNIQUE (project_id, name)
);

CREATE TABLE kms_key_versions (
  key_id     TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,
  version    INTEGER NOT NULL,
  object_id  BLOB NOT NULL UNIQUE,     -- CKA_ID of the token objects
  public_key BLOB,                     -- DER SubjectPublicKeyInfo, for sign-verify keys
  state      TEXT NOT NULL,            -- pending | active | deleting
  created_at TEXT NOT NULL,
  PRIMARY KEY (key_id, version)
);
