//! Leases of remote verification workers (cluster mode, migration 7).
//!
//! A worker on another machine claims a queued entry: one `UPDATE` moves it from
//! `queued` to `running` and records the lease, so no two claimants (workers, or a
//! worker and the server's own verifier) ever get the same entry. The worker renews
//! the lease while it runs; the server re-queues an entry whose lease ran out. The
//! lease lives in the database, so a server restart keeps it. What counts as expired,
//! and what happens after too many attempts, is the server's policy.

use sqlx::any::AnyRow;

use crate::records::entry_columns;
use crate::{EntryRecord, Store, StoreError, WriteTx, get};

/// A remote worker's hold on an entry's verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationLease {
    /// The lease's id (random hex, chosen by the server).
    pub lease_id: String,
    /// What the worker said about itself when it claimed (host, job id).
    pub worker: String,
    /// When the lease runs out unless renewed (Unix ms).
    pub expires_at: i64,
    /// When the entry was claimed (Unix ms).
    pub started_at: i64,
    /// Claims of this entry by remote workers so far, this one included.
    pub attempts: i64,
}

/// An entry with the lease a worker holds on it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedEntry {
    /// The entry.
    pub entry: EntryRecord,
    /// The lease.
    pub lease: VerificationLease,
}

/// A claim to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLease {
    /// The lease's id.
    pub lease_id: String,
    /// The worker's description of itself.
    pub worker: String,
    /// The time of the claim (Unix ms).
    pub now: i64,
    /// When the lease runs out unless renewed (Unix ms).
    pub expires_at: i64,
    /// Only this entry (a job submitted for it, e.g. with the GPU its method asks
    /// for); `None`: the oldest queued one.
    pub entry_id: Option<i64>,
}

/// The columns [`LeasedEntry::from_row`] reads, in order.
macro_rules! leased_columns {
    () => {
        concat!(
            entry_columns!(),
            ", lease_id, lease_worker, lease_expires_at, verification_started_at, verification_attempts"
        )
    };
}

const LEASED_SELECT: &str = concat!("SELECT ", leased_columns!(), " FROM entries");

/// A lease that is held and not run out: `$1` the lease id, `$2` now.
const CURRENT: &str = "lease_id = $1 AND verification = 'running' AND lease_expires_at > $2";

impl LeasedEntry {
    fn from_row(row: &AnyRow) -> Result<LeasedEntry, StoreError> {
        let entry = EntryRecord::from_row(row)?;
        let lease_id: Option<String> = get(row, 15)?;
        let lease = VerificationLease {
            lease_id: lease_id
                .ok_or_else(|| StoreError::Corrupt(format!("entry {} has no lease", entry.id)))?,
            worker: get::<Option<String>>(row, 16)?.unwrap_or_default(),
            expires_at: get::<Option<i64>>(row, 17)?.unwrap_or(0),
            started_at: get::<Option<i64>>(row, 18)?.unwrap_or(0),
            attempts: get(row, 19)?,
        };
        Ok(LeasedEntry { entry, lease })
    }
}

impl Store {
    /// The entry `lease_id` holds, unless the lease is unknown, finished or run out at `now`.
    pub async fn current_lease(
        &self,
        lease_id: &str,
        now: i64,
    ) -> Result<Option<LeasedEntry>, StoreError> {
        let sql = format!("{LEASED_SELECT} WHERE {CURRENT}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_id)
            .bind(now)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| LeasedEntry::from_row(&r)).transpose()
    }
}

impl Store {
    /// Entries whose lease ran out at `now`, oldest first (a cheap look before taking
    /// the write lock; [`WriteTx::expired_leases`] is the answer to act on).
    pub async fn expired_leases(&self, now: i64) -> Result<Vec<LeasedEntry>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(expired_sql()))
            .bind(now)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(LeasedEntry::from_row).collect()
    }
}

fn expired_sql() -> String {
    format!(
        "{LEASED_SELECT} WHERE verification = 'running' AND lease_id IS NOT NULL \
         AND lease_expires_at <= $1 ORDER BY id"
    )
}

impl WriteTx {
    /// Claims the oldest queued entry for a remote worker: one `UPDATE` guarded by the
    /// `queued` state, so two claimants never get the same entry. `None`: nothing queued.
    pub async fn claim_verification(
        &mut self,
        lease: &NewLease,
    ) -> Result<Option<LeasedEntry>, StoreError> {
        let sql = concat!(
            "UPDATE entries SET verification = 'running', lease_id = $1, lease_worker = $2, ",
            "lease_expires_at = $3, verification_started_at = $4, ",
            "verification_attempts = verification_attempts + 1 ",
            "WHERE id = (SELECT id FROM entries WHERE verification = 'queued' ",
            "AND ($5 IS NULL OR id = $5) ORDER BY id LIMIT 1) ",
            "AND verification = 'queued' RETURNING ",
            leased_columns!()
        );
        let row = sqlx::query(sql)
            .bind(&lease.lease_id)
            .bind(&lease.worker)
            .bind(lease.expires_at)
            .bind(lease.now)
            .bind(lease.entry_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| LeasedEntry::from_row(&r)).transpose()
    }

    /// Claims one entry for the server's own verifier: queued, left running by a
    /// server that stopped (no lease), or held by a worker whose lease ran out. False
    /// when a remote worker holds it, or it is done.
    pub async fn claim_local(&mut self, entry_id: i64, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE entries SET verification = 'running', lease_id = NULL, lease_worker = NULL, \
             lease_expires_at = NULL, verification_started_at = $2 WHERE id = $1 AND \
             (verification = 'queued' OR (verification = 'running' AND \
             (lease_id IS NULL OR lease_expires_at <= $2)))",
        )
        .bind(entry_id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Renews a current lease until `expires_at`; false when it is unknown, finished or
    /// already run out at `now` (a lease that ran out is never revived).
    pub async fn extend_lease(
        &mut self,
        lease_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!("UPDATE entries SET lease_expires_at = $3 WHERE {CURRENT}");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// [`Store::current_lease`] inside this transaction (under the write lock, so the
    /// answer holds until commit).
    pub async fn current_lease(
        &mut self,
        lease_id: &str,
        now: i64,
    ) -> Result<Option<LeasedEntry>, StoreError> {
        let sql = format!("{LEASED_SELECT} WHERE {CURRENT}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_id)
            .bind(now)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| LeasedEntry::from_row(&r)).transpose()
    }

    /// Entries whose lease ran out at `now`, oldest first.
    pub async fn expired_leases(&mut self, now: i64) -> Result<Vec<LeasedEntry>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(expired_sql()))
            .bind(now)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(LeasedEntry::from_row).collect()
    }

    /// Puts the entry `lease_id` holds back in the queue (the lease ran out); the
    /// attempt stays counted. False when no running entry has that lease.
    pub async fn requeue_lease(&mut self, lease_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE entries SET verification = 'queued', lease_id = NULL, lease_expires_at = NULL \
             WHERE lease_id = $1 AND verification = 'running'",
        )
        .bind(lease_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A worker gives a current lease back (it is stopping): the entry is queued again
    /// and the attempt is not counted (the worker was not lost). The entry's id, or
    /// `None` when the lease is not current.
    pub async fn release_lease(
        &mut self,
        lease_id: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "UPDATE entries SET verification = 'queued', lease_id = NULL, lease_expires_at = NULL, \
             verification_attempts = verification_attempts - 1 WHERE {CURRENT} RETURNING id"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_id)
            .bind(now)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| get(&r, 0)).transpose()
    }

    /// Puts entries left running without a lease (by a server's own verifier that
    /// stopped) back in the queue, for remote workers; returns how many.
    pub async fn requeue_unleased_runs(&mut self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE entries SET verification = 'queued' \
             WHERE verification = 'running' AND lease_id IS NULL",
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }
}
