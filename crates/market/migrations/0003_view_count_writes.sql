-- The write ids of view increments applied by write-behind, recorded in the
-- same transaction as the increment, so a batch delivered twice (a worker
-- that committed and died before acknowledging) counts once.
CREATE TABLE view_count_writes (
    write_id TEXT PRIMARY KEY,
    entry_ms BIGINT NOT NULL
);
CREATE INDEX view_count_writes_entry_ms ON view_count_writes (entry_ms);
