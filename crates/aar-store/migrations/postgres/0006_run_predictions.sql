-- Each verification run's predictions on its split, bit-packed
-- (`aar_store::pack_predictions`), so the server can score them row by row
-- against its labels (PGR with the test's own sampling noise). NULL for runs
-- stored before this migration, and for failed runs.
ALTER TABLE verification_runs ADD COLUMN predictions BYTEA;
