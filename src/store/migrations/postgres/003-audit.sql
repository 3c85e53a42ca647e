-- The PostgreSQL form of sqlite/003-audit.sql: an append-only hash chain of events and signed
-- checkpoints of its head. seq is assigned by the service as last + 1 under a transaction-scoped
-- advisory lock (store/audit-store.ts), so a gap means a removed event; nothing in the service
-- ever updates or deletes these rows.
CREATE TABLE audit_events (
  seq            BIGINT PRIMARY KEY,       -- 1, 2, 3, ... (no sequence: the service numbers)
  id             TEXT NOT NULL,            -- UUID
  time           TEXT COLLATE "C" NOT NULL, -- ISO 8601 UTC with milliseconds, never decreasing
  req_id         TEXT NOT NULL,
  identity_id    TEXT,                     -- the acting identity (for a login, the one the clientId names)
  action         TEXT NOT NULL,            -- e.g. kms.key.encrypt, auth.login
  resource_type  TEXT,                     -- key | ca | profile | certificate | identity | audit
  resource_id    TEXT,
  outcome        TEXT NOT NULL,            -- success | denied | failure
  status_code    INTEGER NOT NULL,
  client_address TEXT,
  prev_hash      TEXT NOT NULL,            -- hex SHA-256 of the previous event; 64 zeros for seq 1
  hash           TEXT NOT NULL             -- hex SHA-256 of this event's canonical encoding
);
CREATE INDEX audit_events_time ON audit_events(time);
CREATE INDEX audit_events_identity ON audit_events(identity_id, seq);
CREATE INDEX audit_events_resource ON audit_events(resource_id, seq);

CREATE TABLE audit_checkpoints (
  seq       BIGINT PRIMARY KEY,            -- the head event signed
  head_hash TEXT NOT NULL,
  signed_at TEXT NOT NULL,
  algorithm TEXT NOT NULL,                 -- ECDSA_SHA_256 (P-256 audit key in the token)
  signature BYTEA NOT NULL                 -- DER, over "hsm-signer audit checkpoint\n<seq>\n<head_hash>\n<signed_at>"
);
