-- The PostgreSQL form of sqlite/008-audit-retention.sql: the audit trail in its compact form
-- (hash format v2: time in epoch ms, hashes as 32-byte BYTEA, outcome derived from status_code,
-- no per-event UUID after this migration) and the sink's cursor. Old rows are carried over
-- losslessly and keep their UUID in `id` (their v1 hash covers it). A value no service wrote
-- (a tampered time or hash) becomes 0 or a zero hash, and the verifier reports that event.
CREATE TABLE audit_events_compact (
  seq            BIGINT PRIMARY KEY,       -- 1, 2, 3, ... (the service numbers; pruning removes from the start)
  time           BIGINT NOT NULL,          -- epoch milliseconds, never decreasing along seq
  req_id         TEXT NOT NULL,
  identity_id    TEXT,
  action         TEXT NOT NULL,
  resource_type  TEXT,
  resource_id    TEXT,
  status_code    INTEGER NOT NULL,
  client_address TEXT,
  prev_hash      BYTEA NOT NULL,
  hash           BYTEA NOT NULL,
  id             TEXT                      -- UUID of an event written before 008 (hash format v1); NULL since
);
INSERT INTO audit_events_compact (seq, time, req_id, identity_id, action, resource_type, resource_id, status_code, client_address, prev_hash, hash, id)
SELECT seq,
       CASE WHEN time ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' THEN (extract(epoch FROM time::timestamptz) * 1000)::bigint ELSE 0 END,
       req_id, identity_id, action, resource_type, resource_id, status_code, client_address,
       CASE WHEN prev_hash ~ '^([0-9a-f]{2})+$' THEN decode(prev_hash, 'hex') ELSE decode(repeat('00', 32), 'hex') END,
       CASE WHEN hash ~ '^([0-9a-f]{2})+$' THEN decode(hash, 'hex') ELSE decode(repeat('00', 32), 'hex') END,
       id
FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_compact RENAME TO audit_events;
ALTER TABLE audit_events RENAME CONSTRAINT audit_events_compact_pkey TO audit_events_pkey;
CREATE INDEX audit_events_time ON audit_events(time);
CREATE INDEX audit_events_identity ON audit_events(identity_id, seq);
CREATE INDEX audit_events_resource ON audit_events(resource_id, seq);

CREATE TABLE audit_sink (
  name                    TEXT PRIMARY KEY,
  exported_seq            BIGINT NOT NULL,
  exported_checkpoint_seq BIGINT NOT NULL,
  failing_since           BIGINT,
  last_error              TEXT
);
