-- Verifications run by remote workers (cluster mode): a worker claims a queued
-- entry and holds it under a lease it renews; a lease not renewed in time puts
-- the entry back in the queue (or fails it after too many attempts). Kept here,
-- not in memory, so a server restart loses no lease. NULL `lease_id`: no remote
-- worker holds the entry (queued, done, or run by the server's own verifier).
ALTER TABLE entries ADD COLUMN lease_id TEXT;
ALTER TABLE entries ADD COLUMN lease_worker TEXT;
ALTER TABLE entries ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE entries ADD COLUMN verification_started_at BIGINT;
ALTER TABLE entries ADD COLUMN verification_attempts BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX entries_lease ON entries(lease_id);
