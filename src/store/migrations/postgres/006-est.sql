-- The PostgreSQL form of sqlite/006-est.sql: EST per certificate profile, the passphrase as an
-- scrypt hash only; est_enabled 0 or 1 (INTEGER as on SQLite, like kms_keys.is_disabled).
ALTER TABLE certificate_profiles ADD COLUMN est_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificate_profiles ADD COLUMN est_passphrase_hash TEXT;
