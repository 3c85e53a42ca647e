-- The PostgreSQL form of sqlite/005-crl-stored-number.sql: the number of the CRL in cas.crl.
ALTER TABLE cas ADD COLUMN crl_stored_number BIGINT;
