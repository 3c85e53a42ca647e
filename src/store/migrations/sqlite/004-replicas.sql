-- What replicas sharing one store coordinate through.
--
-- Named leases (store/lease-store.ts): at most one holder per name until expires_at, so that
-- one replica at a time runs a given periodic job.
CREATE TABLE leases (
  name       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at INTEGER NOT NULL              -- epoch milliseconds
);

-- cas.crl_number is now the last CRL number handed out (PkiStore.nextCrlNumber), which can run
-- ahead of the CRL stored: this is the number of the one in cas.crl, so that a replica that
-- took a number first but finished signing last cannot replace a newer CRL with an older one.
ALTER TABLE cas ADD COLUMN crl_stored_number INTEGER;
