-- EST enrollment per certificate profile: opted into, with a passphrase kept only as a slow
-- hash (scrypt$N$r$p$salt$hash, as client secrets are).
ALTER TABLE certificate_profiles ADD COLUMN est_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificate_profiles ADD COLUMN est_passphrase_hash TEXT;
