-- The PostgreSQL form of sqlite/004-leases.sql: which replica does a piece of work that must run
-- once across all of them, until when.
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at BIGINT NOT NULL              -- epoch milliseconds
);
