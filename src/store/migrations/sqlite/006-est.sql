-- EST enrollment per certificate profile (RFC 7030): opted into, with a passphrase kept only
-- as a slow hash (scrypt$N$r$p$salt$hash, as client secrets are). est_enabled is 0 or 1.
ALTER TABLE certificate_profiles ADD COLUMN est_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificate_profiles ADD COLUMN est_passphrase_hash TEXT;
