-- Verified entries: an entry is a method (a snapshot) the server's verifier
-- re-runs per seed on the public test, the private test and the transfer set.
-- `verification`: queued -> running -> verified | failed. `released_accuracy`
-- is what the Ladder released to the entry's author (NULL: nothing).
ALTER TABLE entries ADD COLUMN verification TEXT NOT NULL DEFAULT 'none';
ALTER TABLE entries ADD COLUMN verification_error TEXT;
ALTER TABLE entries ADD COLUMN released_accuracy DOUBLE PRECISION;
ALTER TABLE entries ADD COLUMN verified_at BIGINT;
ALTER TABLE entries ADD COLUMN verification_seconds DOUBLE PRECISION;
CREATE INDEX entries_verification ON entries(verification);

-- One scored split of one verification run. `variant` is `main` (the method as
-- submitted), an ablation (`shuffled_teacher`, `constant_teacher`) or
-- `undeclared_seed` (a seed outside the declared set, for the cherry-picking probe).
CREATE TABLE verification_runs (
    id          INTEGER PRIMARY KEY,
    entry_id    BIGINT NOT NULL REFERENCES entries(id),
    seed        BIGINT NOT NULL,
    variant     TEXT NOT NULL,
    split       TEXT NOT NULL,
    accuracy    DOUBLE PRECISION,
    error       TEXT,
    seconds     DOUBLE PRECISION NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (entry_id, seed, variant, split)
);
CREATE INDEX verification_runs_entry ON verification_runs(entry_id);

-- What a probe raised, with its evidence (JSON). Never disqualifies by itself.
CREATE TABLE flags (
    id          INTEGER PRIMARY KEY,
    entry_id    BIGINT REFERENCES entries(id),
    agent_id    TEXT NOT NULL REFERENCES agents(id),
    probe       TEXT NOT NULL,
    summary     TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX flags_entry ON flags(entry_id);
