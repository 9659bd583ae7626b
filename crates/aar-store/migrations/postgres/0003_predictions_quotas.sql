-- Each evaluation's public predictions, bit-packed (`aar_store::pack_predictions`),
-- so that probes of the labels can be looked for afterwards. NULL for
-- evaluations stored before this migration.
ALTER TABLE evaluations ADD COLUMN predictions BYTEA;

-- Bumped by every change of the Ladder that is not an evaluation (the release
-- of a verified entry's score), so that an evaluation writer in another
-- process sees that its cache of the Ladder is stale.
CREATE TABLE ladder_epoch (
    id     BIGINT PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL
);
INSERT INTO ladder_epoch (id, epoch) VALUES (1, 0);

-- Quotas count each agent's entries and snapshots over the last hour.
CREATE INDEX entries_agent_time ON entries(agent_id, created_at);
CREATE INDEX snapshots_agent_time ON snapshots(agent_id, created_at);
