-- The PostgreSQL form of sqlite/004-replicas.sql: leases, and the number of the stored CRL.
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at BIGINT NOT NULL               -- epoch milliseconds
);

ALTER TABLE cas ADD COLUMN crl_stored_number BIGINT;
