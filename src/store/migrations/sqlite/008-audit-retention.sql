-- The audit trail in its compact form (services/audit-chain.ts, hash format v2), and the sink's
-- cursor. What an event stores is what an investigator needs and nothing derivable:
-- - time as epoch milliseconds (8 bytes at most) instead of a 24-character ISO string;
-- - hashes as 32-byte blobs instead of 64 hex characters;
-- - no outcome: it is a function of status_code (success < 400; denied 401, 403, 429; failure else);
-- - no per-event UUID: seq names an event. Events written before this migration keep theirs in
--   `id`, since their hash (format v1) covers it; it is NULL from here on and selects format v2.
-- prev_hash is the one redundancy kept (it equals the previous row's hash): it lets the
-- verifier tell an edited event from a moved one, and anchors the first event kept after pruning.
-- Old rows are carried over losslessly (their ISO time is exactly the one their milliseconds
-- print, their outcome the one their status gives), so they verify as before. A value no service
-- wrote (a tampered time or hash) becomes 0 or a zero blob and the verifier reports that event.
CREATE TABLE audit_events_compact (
  seq            INTEGER PRIMARY KEY,      -- 1, 2, 3, ... (the service numbers; pruning removes from the start)
  time           INTEGER NOT NULL,         -- epoch milliseconds, never decreasing along seq
  req_id         TEXT NOT NULL,
  identity_id    TEXT,                     -- the acting identity (for a login, the one the clientId names)
  action         TEXT NOT NULL,            -- e.g. kms.key.encrypt, auth.login, audit.prune
  resource_type  TEXT,                     -- key | ca | profile | certificate | identity | audit
  resource_id    TEXT,
  status_code    INTEGER NOT NULL,
  client_address TEXT,
  prev_hash      BLOB NOT NULL,            -- SHA-256 of the previous event; 32 zero bytes for seq 1
  hash           BLOB NOT NULL,            -- SHA-256 of this event's canonical encoding
  id             TEXT                      -- UUID of an event written before 008 (hash format v1); NULL since
);
INSERT INTO audit_events_compact (seq, time, req_id, identity_id, action, resource_type, resource_id, status_code, client_address, prev_hash, hash, id)
SELECT seq,
       COALESCE(CAST(ROUND(unixepoch(time, 'subsec') * 1000) AS INTEGER), 0),
       req_id, identity_id, action, resource_type, resource_id, status_code, client_address,
       COALESCE(unhex(prev_hash), zeroblob(32)),
       COALESCE(unhex(hash), zeroblob(32)),
       id
FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_compact RENAME TO audit_events;
CREATE INDEX audit_events_time ON audit_events(time);
CREATE INDEX audit_events_identity ON audit_events(identity_id);
CREATE INDEX audit_events_resource ON audit_events(resource_id);

-- Where the export to audit.sink has got to (one row, written by the maintenance lease holder
-- that feeds the sink): every event up to exported_seq and every checkpoint up to
-- exported_checkpoint_seq are written to the sink. Pruning never passes exported_seq while a
-- sink is configured. failing_since is set while the sink cannot write (what audit.sinkFailure
-- then does is read from here by every process).
CREATE TABLE audit_sink (
  name                    TEXT PRIMARY KEY,    -- 'sink'
  exported_seq            INTEGER NOT NULL,
  exported_checkpoint_seq INTEGER NOT NULL,
  failing_since           INTEGER,             -- epoch ms of the first failed write since the last good one
  last_error              TEXT
);
