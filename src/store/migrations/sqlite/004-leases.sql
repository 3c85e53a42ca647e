-- Leases (store/lease-store.ts): which replica does a piece of work that must run once across
-- all of them (first-start bootstrap, CRL renewal, the expired-token purge), until when.
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at INTEGER NOT NULL             -- epoch milliseconds
);
