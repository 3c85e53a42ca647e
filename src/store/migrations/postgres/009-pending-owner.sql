-- Which replica wrote a pending row (its replica id, services/leases.ts), so that a replica
-- undoing a crash's leftovers removes only pending rows whose writer is no longer alive (its
-- `replica:` lease has expired), never another replica's creation in progress. NULL for rows
-- written before this column existed: no live replica claims them.
ALTER TABLE kms_keys ADD COLUMN owner TEXT;
ALTER TABLE kms_key_versions ADD COLUMN owner TEXT;
ALTER TABLE cas ADD COLUMN owner TEXT;
