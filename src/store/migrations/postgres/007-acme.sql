-- The PostgreSQL form of sqlite/007-acme.sql (epoch ms as BIGINT, flags as INTEGER 0/1 as there).
-- ACME (RFC 8555) per certificate profile. A profile opts in (acme_enabled 0/1) and may require
-- external account binding (acme_require_eab 0/1) with an HMAC key made on first request for it
-- (base64url; the verifier needs the key itself, so it is kept, never logged or listed).
ALTER TABLE certificate_profiles ADD COLUMN acme_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificate_profiles ADD COLUMN acme_require_eab INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificate_profiles ADD COLUMN acme_eab_secret TEXT;

-- Everything an ACME flow needs lives here, not in a process, so any replica serves any step.
-- Replay nonces: a nonce is used by deleting its row (DELETE ... RETURNING), so it is used once.
CREATE TABLE acme_nonces (
  nonce      TEXT PRIMARY KEY,
  expires_at BIGINT NOT NULL                -- epoch ms
);
CREATE INDEX acme_nonces_expiry ON acme_nonces(expires_at);

CREATE TABLE acme_accounts (
  id          TEXT PRIMARY KEY,
  profile_id  TEXT NOT NULL,
  jwk         TEXT NOT NULL,                -- JSON public JWK (required members only)
  thumbprint  TEXT NOT NULL,                -- RFC 7638 SHA-256, base64url
  status      TEXT NOT NULL,                -- valid | deactivated
  contact     TEXT NOT NULL,                -- JSON ["mailto:..."]
  eab_kid     TEXT,                         -- the EAB key id it was bound with, if any
  created_at  TEXT NOT NULL,
  UNIQUE (profile_id, thumbprint)
);

CREATE TABLE acme_orders (
  id             TEXT PRIMARY KEY,
  account_id     TEXT NOT NULL REFERENCES acme_accounts(id),
  profile_id     TEXT NOT NULL,
  status         TEXT NOT NULL,             -- pending | ready | processing | valid | invalid
  identifiers    TEXT NOT NULL,             -- JSON [{type, value}]
  expires_at     TEXT NOT NULL,
  error          TEXT,                      -- JSON problem document
  certificate_id TEXT,
  created_at     TEXT NOT NULL,
  updated_at     TEXT NOT NULL
);
CREATE INDEX acme_orders_account ON acme_orders(account_id, created_at);
CREATE INDEX acme_orders_certificate ON acme_orders(certificate_id);

CREATE TABLE acme_authorizations (
  id               TEXT PRIMARY KEY,
  order_id         TEXT NOT NULL REFERENCES acme_orders(id),
  account_id       TEXT NOT NULL,
  identifier_type  TEXT NOT NULL,
  identifier_value TEXT NOT NULL,
  status           TEXT NOT NULL,           -- pending | valid | invalid | deactivated
  expires_at       TEXT NOT NULL
);
CREATE INDEX acme_authorizations_order ON acme_authorizations(order_id);

CREATE TABLE acme_challenges (
  id               TEXT PRIMARY KEY,
  authorization_id TEXT NOT NULL REFERENCES acme_authorizations(id),
  type             TEXT NOT NULL,           -- http-01
  token            TEXT NOT NULL,
  status           TEXT NOT NULL,           -- pending | processing | valid | invalid
  validated_at     TEXT,
  error            TEXT,                    -- JSON problem document
  updated_at       TEXT NOT NULL
);
CREATE INDEX acme_challenges_authorization ON acme_challenges(authorization_id);
