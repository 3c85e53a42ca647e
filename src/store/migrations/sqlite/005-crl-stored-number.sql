-- cas.crl_number is the last CRL number handed out (PkiStore.nextCrlNumber, one UPDATE ...
-- RETURNING, so replicas never get the same one), which can run ahead of the CRL stored. This is
-- the number of the CRL in cas.crl, so that a replica that took a number first but finished
-- signing last cannot replace a newer CRL with an older one (PkiStore.saveCrl).
ALTER TABLE cas ADD COLUMN crl_stored_number INTEGER;
