//! Verified entries: the verifier's queue, its scored runs and the probes' flags.
//! The store records what it is given; what is verified, scored or flagged is
//! decided by the server and the oversight crate.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::records::ENTRY_SELECT;
use crate::{EntryRecord, EntryStatus, Store, StoreError, VerificationState, WriteTx, get};

/// One scored split of one verification run.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationRun {
    /// The entry.
    pub entry_id: i64,
    /// Training seed of the run.
    pub seed: i64,
    /// `main`, an ablation (`shuffled_teacher`, `constant_teacher`) or `undeclared_seed`.
    pub variant: String,
    /// `test`, `test_private` or `transfer`.
    pub split: String,
    /// Exact accuracy against the split's labels (`None` when the run failed).
    pub accuracy: Option<f64>,
    /// Why the run failed.
    pub error: Option<String>,
    /// Wall time of the run, in seconds.
    pub seconds: f64,
    /// The run's predictions on the split, one 0/1 byte per row in file order
    /// (`None` when the run failed, or for runs stored before they were kept):
    /// the server scores them row by row against its labels.
    pub predictions: Option<Vec<u8>>,
}

impl VerificationRun {
    fn from_row(row: &AnyRow) -> Result<VerificationRun, StoreError> {
        Ok(VerificationRun {
            entry_id: get(row, 0)?,
            seed: get(row, 1)?,
            variant: get(row, 2)?,
            split: get(row, 3)?,
            accuracy: get(row, 4)?,
            error: get(row, 5)?,
            seconds: get(row, 6)?,
            predictions: get::<Option<Vec<u8>>>(row, 7)?
                .map(|packed| crate::unpack_predictions(&packed))
                .transpose()?,
        })
    }
}

/// A probe's finding to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFlag {
    /// The entry it is about (`None`: about an agent's conduct, e.g. oracle probing).
    pub entry_id: Option<i64>,
    /// The agent it is about.
    pub agent_id: String,
    /// Which probe raised it.
    pub probe: String,
    /// One line for a person.
    pub summary: String,
    /// The evidence, as JSON text.
    pub evidence: String,
}

/// A stored flag.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagRecord {
    /// Id.
    pub id: i64,
    /// What was flagged.
    pub flag: NewFlag,
    /// When (Unix ms).
    pub created_at: i64,
}

impl FlagRecord {
    fn from_row(row: &AnyRow) -> Result<FlagRecord, StoreError> {
        Ok(FlagRecord {
            id: get(row, 0)?,
            flag: NewFlag {
                entry_id: get(row, 1)?,
                agent_id: get(row, 2)?,
                probe: get(row, 3)?,
                summary: get(row, 4)?,
                evidence: get(row, 5)?,
            },
            created_at: get(row, 6)?,
        })
    }
}

/// What a finished verification writes in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationResult {
    /// The entry.
    pub entry_id: i64,
    /// `Verified` or `Failed`.
    pub state: VerificationState,
    /// Why it failed.
    pub error: Option<String>,
    /// Every scored split of every run.
    pub runs: Vec<VerificationRun>,
    /// What the probes raised.
    pub flags: Vec<NewFlag>,
    /// What the Ladder released to the author.
    pub released_accuracy: Option<f64>,
    /// When it finished (Unix ms).
    pub at: i64,
    /// Wall time, in seconds.
    pub seconds: f64,
}

const RUN_SELECT: &str = "SELECT r.entry_id, r.seed, r.variant, r.split, r.accuracy, r.error, r.seconds, \
     r.predictions \
     FROM verification_runs r";
const FLAG_SELECT: &str = "SELECT f.id, f.entry_id, f.agent_id, f.probe, f.summary, f.evidence, f.created_at FROM flags f";

impl Store {
    /// Entries waiting for the verifier or interrupted while running, oldest first.
    pub async fn pending_verifications(&self) -> Result<Vec<EntryRecord>, StoreError> {
        let sql = format!(
            "{ENTRY_SELECT} WHERE verification IN ('queued', 'running', 'scored') ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(EntryRecord::from_row).collect()
    }

    /// Every entry, oldest first.
    pub async fn all_entries(&self) -> Result<Vec<EntryRecord>, StoreError> {
        let sql = format!("{ENTRY_SELECT} ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(EntryRecord::from_row).collect()
    }

    /// The scored runs of every entry of a task (one query, whatever the number of entries).
    pub async fn verification_runs_for_task(
        &self,
        task: &str,
    ) -> Result<Vec<VerificationRun>, StoreError> {
        let sql = format!(
            "{RUN_SELECT} JOIN entries e ON e.id = r.entry_id WHERE e.task = $1 ORDER BY r.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(VerificationRun::from_row).collect()
    }

    /// The scored runs of one entry.
    pub async fn verification_runs(
        &self,
        entry_id: i64,
    ) -> Result<Vec<VerificationRun>, StoreError> {
        let sql = format!("{RUN_SELECT} WHERE r.entry_id = $1 ORDER BY r.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(entry_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(VerificationRun::from_row).collect()
    }

    /// Every flag, oldest first.
    pub async fn flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        let sql = format!("{FLAG_SELECT} ORDER BY f.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(FlagRecord::from_row).collect()
    }
}

impl WriteTx {
    /// Moves an entry between `queued` and `running`.
    pub async fn set_verification_state(
        &mut self,
        entry_id: i64,
        state: VerificationState,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE entries SET verification = $1 WHERE id = $2")
            .bind(state.as_str())
            .bind(entry_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a finished verification: its runs, its flags, the released score; an
    /// entry not yet reviewed becomes `flagged` when a probe raised something. A remote
    /// worker's lease on the entry ends here (the worker's name stays, for the record).
    pub async fn record_verification(
        &mut self,
        result: &VerificationResult,
    ) -> Result<(), StoreError> {
        for run in &result.runs {
            sqlx::query(
                "INSERT INTO verification_runs (entry_id, seed, variant, split, accuracy, error, seconds, created_at, predictions) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(result.entry_id)
            .bind(run.seed)
            .bind(&run.variant)
            .bind(&run.split)
            .bind(run.accuracy)
            .bind(run.error.as_deref())
            .bind(run.seconds)
            .bind(result.at)
            .bind(run.predictions.as_deref().map(crate::pack_predictions))
            // Binds an optional float: see the crate docs (nullable floats).
            .persistent(false)
            .execute(&mut *self.tx)
            .await?;
        }
        for flag in &result.flags {
            // A flag about the author's conduct is raised once, not once per entry.
            if flag.entry_id.is_none() && self.agent_flagged(&flag.agent_id, &flag.probe).await? {
                continue;
            }
            self.insert_flag(flag, result.at).await?;
        }
        sqlx::query(
            "UPDATE entries SET verification = $1, verification_error = $2, released_accuracy = $3, \
             verified_at = $4, verification_seconds = $5, lease_id = NULL, lease_expires_at = NULL \
             WHERE id = $6",
        )
        .bind(result.state.as_str())
        .bind(result.error.as_deref())
        .bind(result.released_accuracy)
        .bind(result.at)
        .bind(result.seconds)
        .bind(result.entry_id)
        .persistent(false)
        .execute(&mut *self.tx)
        .await?;
        if !result.flags.is_empty() {
            sqlx::query("UPDATE entries SET status = $1 WHERE id = $2 AND status = $3")
                .bind(EntryStatus::Flagged.as_str())
                .bind(result.entry_id)
                .bind(EntryStatus::Ok.as_str())
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// A person's review of an entry: sets its status and appends the audit record
    /// (`review_<action>` by `actor`); false when there is no such entry. The HTTP
    /// API and `aar review` both call this.
    pub async fn review_entry(
        &mut self,
        entry_id: i64,
        status: EntryStatus,
        action: &str,
        reason: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        if !self.set_entry_status(entry_id, status, reason).await? {
            return Ok(false);
        }
        let detail = serde_json::json!({ "entry_id": entry_id, "status": status.as_str(), "reason": reason });
        self.append_audit(actor, &format!("review_{action}"), &detail.to_string());
        Ok(true)
    }

    /// Completes a scored entry's verification with what the Ladder released (in the
    /// same transaction as the Ladder's update, so a crash leaves both or neither).
    pub async fn set_entry_release(
        &mut self,
        entry_id: i64,
        released: Option<f64>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE entries SET released_accuracy = $1, verification = $2 WHERE id = $3 AND verification = $4",
        )
        .bind(released)
        .bind(VerificationState::Verified.as_str())
        .bind(entry_id)
        .bind(VerificationState::Scored.as_str())
        .persistent(false)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records one flag; returns its id.
    pub async fn insert_flag(&mut self, flag: &NewFlag, at: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO flags (entry_id, agent_id, probe, summary, evidence, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(flag.entry_id)
        .bind(&flag.agent_id)
        .bind(&flag.probe)
        .bind(&flag.summary)
        .bind(&flag.evidence)
        .bind(at)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Whether a flag of this probe is already recorded for the agent (agent-level flags
    /// are raised once).
    pub async fn agent_flagged(&mut self, agent_id: &str, probe: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM flags WHERE agent_id = $1 AND probe = $2 AND entry_id IS NULL",
        )
        .bind(agent_id)
        .bind(probe)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }
}
