//! Write transactions: every mutation of the server's state.

use sqlx::{Any, AnyPool, Row, Transaction};

use crate::audit::audit_hash;
use crate::predictions::{EvaluationInsert, pack_predictions};
use crate::records::{EntryStatus, EvaluationRecord, NewPost, SnapshotRecord};
use crate::{AgentRecord, AuditRecord, StoreError, now_millis};

/// A write transaction holding the write lock; nothing is visible to others,
/// and nothing is durable, until [`WriteTx::commit`] returns.
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    /// The audit chain head as of the last record appended in this transaction.
    head: (i64, String),
    /// Audit records appended but not yet written: they are inserted at
    /// commit, many rows per statement (nothing reads the log inside a write).
    audit: Vec<AuditRecord>,
}

/// What an agent has stored of one kind (entries or snapshots), for quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    /// The agent's, in all.
    pub agent_total: i64,
    /// The agent's since the given time.
    pub agent_recent: i64,
    /// When the oldest of those was stored (Unix ms): the hourly quota frees an hour later.
    pub oldest_recent: Option<i64>,
    /// Everyone's, in all.
    pub campaign_total: i64,
    /// Bytes the agent stores in all (snapshots; 0 for entries).
    pub bytes: i64,
}

impl QuotaUsage {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<QuotaUsage, StoreError> {
        Ok(QuotaUsage {
            agent_total: row.try_get(0)?,
            agent_recent: row.try_get(1)?,
            oldest_recent: row.try_get(2)?,
            campaign_total: row.try_get(3)?,
            bytes: row.try_get(4)?,
        })
    }
}

/// Rows per multi-row `INSERT`, well under every backend's parameter limit.
const ROWS_PER_INSERT: usize = 64;

/// `($1, $2, ..), ($k+1, ..), ..` for `rows` rows of `columns` parameters.
fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl WriteTx {
    pub(crate) async fn begin(pool: &AnyPool) -> Result<WriteTx, StoreError> {
        let mut tx = pool.begin().await?;
        // Lock first (see the crate docs): a no-op update of the head row,
        // which also reads the chain head in the same statement.
        let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *tx)
            .await?;
        let head = (row.try_get(0)?, row.try_get(1)?);
        Ok(WriteTx {
            tx,
            head,
            audit: Vec::new(),
        })
    }

    /// Commits; once this returns the writes survive a crash.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let audit = std::mem::take(&mut self.audit);
        for chunk in audit.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO audit_log (seq, at, actor, action, detail, prev_hash, hash) VALUES {}",
                placeholders(chunk.len(), 7)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                query = query
                    .bind(r.seq)
                    .bind(r.at)
                    .bind(&r.actor)
                    .bind(&r.action)
                    .bind(&r.detail)
                    .bind(&r.prev_hash)
                    .bind(&r.hash);
            }
            query.execute(&mut *self.tx).await?;
        }
        if !audit.is_empty() {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(self.head.0)
                .bind(&self.head.1)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }

    /// Appends one record to the audit hash chain. The record and the new head
    /// are written at commit, in the same transaction as everything else.
    pub fn append_audit(&mut self, actor: &str, action: &str, detail: &str) -> AuditRecord {
        let (prev_seq, prev_hash) = &self.head;
        let seq = prev_seq + 1;
        let at = now_millis();
        let hash = audit_hash(prev_hash, seq, at, actor, action, detail);
        let record = AuditRecord {
            seq,
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            detail: detail.to_owned(),
            prev_hash: prev_hash.clone(),
            hash: hash.clone(),
        };
        self.head = (seq, hash);
        self.audit.push(record.clone());
        record
    }

    /// When the campaign was closed, if it is closed (read under the write lock).
    pub async fn campaign_closed_at(&mut self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT closed_at FROM campaign WHERE id = 1")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Closes the campaign at `at` unless it is closed already; returns when it was closed.
    /// There is no reopening: once private scores are shown, evaluating again would leak them.
    pub async fn close_campaign(&mut self, at: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE campaign SET closed_at = COALESCE(closed_at, $1) WHERE id = 1 RETURNING closed_at",
        )
        .bind(at)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Registers an agent; false when the name is taken.
    pub async fn insert_agent(&mut self, agent: &AgentRecord) -> Result<bool, StoreError> {
        let taken = sqlx::query("SELECT 1 FROM agents WHERE name = $1")
            .bind(&agent.name)
            .fetch_optional(&mut *self.tx)
            .await?;
        if taken.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO agents (id, name, token_hash, created_at, expires_at, revoked) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&agent.id)
        .bind(&agent.name)
        .bind(&agent.token_hash)
        .bind(agent.created_at)
        .bind(agent.expires_at)
        .bind(i64::from(agent.revoked))
        .execute(&mut *self.tx)
        .await?;
        Ok(true)
    }

    /// Revokes an agent's token; false when there is no such agent.
    pub async fn revoke_agent(&mut self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE agents SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Evaluations by one agent, or by everyone when `agent_id` is `None`: how
    /// many in all, and the times (Unix ms, oldest first) of those since `since`.
    pub async fn evaluation_usage(
        &mut self,
        agent_id: Option<&str>,
        since: i64,
    ) -> Result<(i64, Vec<i64>), StoreError> {
        let (total, times) = match agent_id {
            Some(agent) => {
                let total = sqlx::query("SELECT COUNT(*) FROM evaluations WHERE agent_id = $1")
                    .bind(agent)
                    .fetch_one(&mut *self.tx)
                    .await?;
                let times = sqlx::query(
                    "SELECT created_at FROM evaluations WHERE agent_id = $1 AND created_at >= $2 ORDER BY created_at",
                )
                .bind(agent)
                .bind(since)
                .fetch_all(&mut *self.tx)
                .await?;
                (total, times)
            }
            None => {
                let total = sqlx::query("SELECT COUNT(*) FROM evaluations")
                    .fetch_one(&mut *self.tx)
                    .await?;
                let times = sqlx::query(
                    "SELECT created_at FROM evaluations WHERE created_at >= $1 ORDER BY created_at",
                )
                .bind(since)
                .fetch_all(&mut *self.tx)
                .await?;
                (total, times)
            }
        };
        let times = times
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<i64>, _>>()?;
        Ok((total.try_get(0)?, times))
    }

    /// The largest evaluation id (0 when there is none). Under the write lock
    /// the next evaluation's id is this plus one.
    pub async fn max_evaluation_id(&mut self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM evaluations")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// A previous evaluation by the same agent of the same task with the same
    /// predictions and the same entry and seed (both absent, or both equal).
    pub async fn find_duplicate(
        &mut self,
        agent_id: &str,
        task: &str,
        predictions_hash: &str,
        entry_seed: Option<(i64, i64)>,
    ) -> Result<Option<EvaluationRecord>, StoreError> {
        let base = "SELECT id, agent_id, task, predictions_hash, n_predictions, public_accuracy, private_accuracy, \
                    released_accuracy, entry_id, seed, response, created_at FROM evaluations \
                    WHERE agent_id = $1 AND task = $2 AND predictions_hash = $3";
        let row = match entry_seed {
            Some((entry, seed)) => {
                let sql =
                    sqlx::AssertSqlSafe(format!("{base} AND entry_id = $4 AND seed = $5 LIMIT 1"));
                sqlx::query(sql)
                    .bind(agent_id)
                    .bind(task)
                    .bind(predictions_hash)
                    .bind(entry)
                    .bind(seed)
                    .fetch_optional(&mut *self.tx)
                    .await?
            }
            None => {
                let sql = sqlx::AssertSqlSafe(format!("{base} AND entry_id IS NULL LIMIT 1"));
                sqlx::query(sql)
                    .bind(agent_id)
                    .bind(task)
                    .bind(predictions_hash)
                    .fetch_optional(&mut *self.tx)
                    .await?
            }
        };
        row.map(|r| EvaluationRecord::from_row(&r)).transpose()
    }

    /// Whether a seed of an entry already has its evaluation.
    pub async fn seed_evaluated(&mut self, entry_id: i64, seed: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM evaluations WHERE entry_id = $1 AND seed = $2")
            .bind(entry_id)
            .bind(seed)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// The agent's best released accuracy on a task (the Ladder's state).
    pub async fn ladder_best(
        &mut self,
        agent_id: &str,
        task: &str,
    ) -> Result<Option<f64>, StoreError> {
        let row = sqlx::query("SELECT best_accuracy FROM ladder WHERE agent_id = $1 AND task = $2")
            .bind(agent_id)
            .bind(task)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Sets the agent's best released accuracy on a task.
    pub async fn set_ladder_best(
        &mut self,
        agent_id: &str,
        task: &str,
        best: f64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ladder (agent_id, task, best_accuracy) VALUES ($1, $2, $3) \
             ON CONFLICT (agent_id, task) DO UPDATE SET best_accuracy = excluded.best_accuracy",
        )
        .bind(agent_id)
        .bind(task)
        .bind(best)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Stores evaluations under the ids they carry, with their predictions
    /// bit-packed, many rows per statement. The caller picks the ids (see
    /// [`WriteTx::max_evaluation_id`]) so that the stored response, which
    /// names the id, is written once.
    pub async fn insert_evaluations(
        &mut self,
        inserts: &[EvaluationInsert],
    ) -> Result<(), StoreError> {
        for chunk in inserts.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO evaluations (id, agent_id, task, predictions_hash, n_predictions, public_accuracy, \
                 private_accuracy, released_accuracy, entry_id, seed, response, created_at, predictions) VALUES {}",
                placeholders(chunk.len(), 13)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for insert in chunk {
                let (r, e) = (&insert.record, &insert.record.new);
                query = query
                    .bind(r.id)
                    .bind(&e.agent_id)
                    .bind(&e.task)
                    .bind(&e.predictions_hash)
                    .bind(e.n_predictions)
                    .bind(e.public_accuracy)
                    .bind(e.private_accuracy)
                    .bind(e.released_accuracy)
                    .bind(e.entry_id)
                    .bind(e.seed)
                    .bind(&e.response)
                    .bind(e.created_at)
                    .bind(pack_predictions(&insert.predictions));
            }
            // Binds optional floats: see the crate docs (nullable floats).
            query.persistent(false).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// The Ladder's change counter for non-evaluation releases (see
    /// [`WriteTx::bump_ladder_epoch`]).
    pub async fn ladder_epoch(&mut self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT epoch FROM ladder_epoch WHERE id = 1")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Counts a change of the Ladder made without an evaluation (a verified
    /// entry's release), so that evaluation writers in other processes see
    /// their cached Ladder is stale; returns the new count.
    pub async fn bump_ladder_epoch(&mut self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("UPDATE ladder_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch")
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(row.try_get(0)?)
    }

    /// An agent's leaderboard entries and the campaign's, for the entry quotas
    /// (read under the write lock, so two requests cannot both pass).
    pub async fn entry_usage(
        &mut self,
        agent_id: &str,
        since: i64,
    ) -> Result<QuotaUsage, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM entries WHERE agent_id = $1), \
                    (SELECT COUNT(*) FROM entries WHERE agent_id = $1 AND created_at >= $2), \
                    (SELECT MIN(created_at) FROM entries WHERE agent_id = $1 AND created_at >= $2), \
                    (SELECT COUNT(*) FROM entries), CAST(0 AS BIGINT)",
        )
        .bind(agent_id)
        .bind(since)
        .fetch_one(&mut *self.tx)
        .await?;
        QuotaUsage::from_row(&row)
    }

    /// An agent's stored snapshots, for the snapshot quotas: counts, and the
    /// bytes it stores in all (in `bytes`).
    pub async fn snapshot_usage(
        &mut self,
        agent_id: &str,
        since: i64,
    ) -> Result<QuotaUsage, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM snapshots WHERE agent_id = $1), \
                    (SELECT COUNT(*) FROM snapshots WHERE agent_id = $1 AND created_at >= $2), \
                    (SELECT MIN(created_at) FROM snapshots WHERE agent_id = $1 AND created_at >= $2), \
                    (SELECT COUNT(*) FROM snapshots), \
                    (SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM snapshots WHERE agent_id = $1)",
        )
        .bind(agent_id)
        .bind(since)
        .fetch_one(&mut *self.tx)
        .await?;
        QuotaUsage::from_row(&row)
    }

    /// Whether a snapshot exists.
    pub async fn snapshot_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Whether an evaluation exists.
    pub async fn evaluation_exists(&mut self, id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM evaluations WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Whether an entry exists.
    pub async fn entry_exists(&mut self, id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM entries WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Whether a post exists.
    pub async fn post_exists(&mut self, id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM posts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Creates a leaderboard entry; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_entry(
        &mut self,
        agent_id: &str,
        task: &str,
        method: &str,
        seeds: &[i64],
        snapshot_id: Option<&str>,
        post_id: Option<i64>,
        created_at: i64,
    ) -> Result<i64, StoreError> {
        let seeds = serde_json::to_string(seeds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = sqlx::query(
            "INSERT INTO entries (agent_id, task, method, seeds, snapshot_id, post_id, status, verification, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'ok', 'queued', $7) RETURNING id",
        )
        .bind(agent_id)
        .bind(task)
        .bind(method)
        .bind(seeds)
        .bind(snapshot_id)
        .bind(post_id)
        .bind(created_at)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// The id of `agent_id`'s entry of the same snapshot on `task` with the same seeds,
    /// if it has one: entering a method again (a retried request, a researcher resumed
    /// after its job was lost) returns that entry instead of a duplicate.
    pub async fn same_entry(
        &mut self,
        agent_id: &str,
        task: &str,
        seeds: &[i64],
        snapshot_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let seeds = serde_json::to_string(seeds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = sqlx::query(
            "SELECT id FROM entries WHERE agent_id = $1 AND task = $2 AND seeds = $3 \
             AND snapshot_id = $4 ORDER BY id LIMIT 1",
        )
        .bind(agent_id)
        .bind(task)
        .bind(seeds)
        .bind(snapshot_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// Sets an entry's review state; false when there is no such entry.
    pub async fn set_entry_status(
        &mut self,
        id: i64,
        status: EntryStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE entries SET status = $1, status_reason = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(reason)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates a post with its links; returns its id.
    pub async fn insert_post(&mut self, post: &NewPost) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO posts (agent_id, kind, task, title, body, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&post.agent_id)
        .bind(post.kind.as_str())
        .bind(post.task.as_deref())
        .bind(&post.title)
        .bind(&post.body)
        .bind(post.created_at)
        .fetch_one(&mut *self.tx)
        .await?;
        let id: i64 = row.try_get(0)?;
        for link in &post.links {
            sqlx::query("INSERT INTO post_links (post_id, kind, target) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(&link.kind)
                .bind(&link.target)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(id)
    }

    /// Records an agent's vote on a post, replacing its earlier vote: one vote
    /// per agent per post. Returns the post's new (up, down) counts.
    pub async fn vote(
        &mut self,
        post_id: i64,
        agent_id: &str,
        value: i64,
    ) -> Result<(i64, i64), StoreError> {
        sqlx::query(
            "INSERT INTO votes (post_id, agent_id, value) VALUES ($1, $2, $3) \
             ON CONFLICT (post_id, agent_id) DO UPDATE SET value = excluded.value",
        )
        .bind(post_id)
        .bind(agent_id)
        .bind(value)
        .execute(&mut *self.tx)
        .await?;
        // Recount rather than increment, so the counts always equal the votes table.
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM votes WHERE post_id = $1 AND value = 1), \
                    (SELECT COUNT(*) FROM votes WHERE post_id = $1 AND value = -1)",
        )
        .bind(post_id)
        .fetch_one(&mut *self.tx)
        .await?;
        let (up, down): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        sqlx::query("UPDATE posts SET upvotes = $1, downvotes = $2 WHERE id = $3")
            .bind(up)
            .bind(down)
            .bind(post_id)
            .execute(&mut *self.tx)
            .await?;
        Ok((up, down))
    }

    /// Adds a comment; returns its id.
    pub async fn insert_comment(
        &mut self,
        post_id: i64,
        agent_id: &str,
        body: &str,
        at: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO comments (post_id, agent_id, body, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(post_id)
        .bind(agent_id)
        .bind(body)
        .bind(at)
        .fetch_one(&mut *self.tx)
        .await?;
        let id: i64 = row.try_get(0)?;
        sqlx::query("UPDATE posts SET comment_count = comment_count + 1 WHERE id = $1")
            .bind(post_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(id)
    }

    /// Stores a snapshot unless one with the same id (same content) exists; true when stored now.
    pub async fn insert_snapshot(&mut self, s: &SnapshotRecord) -> Result<bool, StoreError> {
        if self.snapshot_exists(&s.meta.id).await? {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO snapshots (id, agent_id, parent_id, message, size_bytes, file_count, archive, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.meta.id)
        .bind(&s.meta.agent_id)
        .bind(s.meta.parent_id.as_deref())
        .bind(&s.meta.message)
        .bind(s.meta.size_bytes)
        .bind(s.meta.file_count)
        .bind(s.archive.as_slice())
        .bind(s.meta.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(true)
    }
}
