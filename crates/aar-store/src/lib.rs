//! Storage for the aar research server: the only crate that contains SQL.
//!
//! One code path serves SQLite (the default: a file, WAL, `synchronous=FULL`,
//! foreign keys on) and PostgreSQL (when given a `postgres://` URL), through
//! sqlx's `Any` driver with runtime-checked queries. The few statements that
//! differ (full-text search: FTS5 against `tsvector`) are picked per backend.
//! Migrations are embedded and run at [`Store::connect`].
//!
//! Writes go through a [`WriteTx`]. Its first statement updates the single
//! `audit_head` row, which takes the database's write lock (SQLite) or the
//! row lock (PostgreSQL) before anything is read: writers are serialized, reads
//! inside a write transaction see a stable state (budgets cannot be raced), and
//! the audit log stays one hash chain even with several server processes.
//!
//! Nullable floats: statements that bind an `Option<f64>` run unprepared
//! (`.persistent(false)`). sqlx 0.9.0's `Any` driver sends a NULL `f64` to
//! PostgreSQL as a `float4` parameter (its `Real` and `Double` arms are swapped); a
//! cached statement first run with such a NULL declares that parameter `float4`, and
//! every later run with a value fails with "incorrect binary data format in bind
//! parameter N" (researchers' evaluations answered 500 on PostgreSQL once the Ladder
//! had withheld a release). Unprepared, each run declares its own values' types.
//!
//! This crate stores what it is given. Policy (who may see what, budgets,
//! the Ladder) lives in `aar-server`.
#![deny(missing_docs)]

mod audit;
mod leases;
mod predictions;
mod records;
mod researchers;
mod verification;
mod write;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use records::ENTRY_SELECT;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row};
use thiserror::Error;

pub use audit::{AuditRecord, ChainCheck, GENESIS_HASH, audit_hash};
pub use leases::{LeasedEntry, NewLease, VerificationLease};
pub use predictions::{EvaluationInsert, StoredPredictions, pack_predictions, unpack_predictions};
pub use records::{
    AgentRecord, CommentRecord, EntryRecord, EntryStatus, EvaluationRecord, NewEvaluation, NewPost,
    PostKind, PostLink, PostRecord, PostSort, PostsQuery, SnapshotMeta, SnapshotRecord,
    VerificationState,
};
pub use researchers::{EvaluationPoint, ResearcherEvent, ResearcherStatus};
pub use verification::{FlagRecord, NewFlag, VerificationResult, VerificationRun};
pub use write::{QuotaUsage, WriteTx};

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database URL names no supported backend.
    #[error("unsupported database URL (expected sqlite:// or postgres://): {0}")]
    UnsupportedUrl(String),
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded (a bug or a tampered database).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (FTS5 search).
    Sqlite,
    /// PostgreSQL server (`tsvector` search).
    Postgres,
}

/// A handle on the server database; cheap to clone.
///
/// On SQLite, writes go through a pool of exactly one connection (SQLite has a
/// single writer: more writer connections only queue on its lock, each behind
/// its own thread) and reads through a few read-only connections, which WAL
/// lets run beside the writer. On PostgreSQL one pool serves both.
#[derive(Debug, Clone)]
pub struct Store {
    writer: AnyPool,
    reader: AnyPool,
    /// SQLite only: the connection that copies the WAL into the database file
    /// (see [`Store::checkpoint`]).
    checkpointer: Option<AnyPool>,
    backend: Backend,
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "campaign",
        include_str!("../migrations/sqlite/0002_campaign.sql"),
    ),
    (
        3,
        "predictions_quotas",
        include_str!("../migrations/sqlite/0003_predictions_quotas.sql"),
    ),
    (
        4,
        "verification",
        include_str!("../migrations/sqlite/0004_verification.sql"),
    ),
    (
        5,
        "researchers",
        include_str!("../migrations/sqlite/0005_researchers.sql"),
    ),
    (
        6,
        "run_predictions",
        include_str!("../migrations/sqlite/0006_run_predictions.sql"),
    ),
    (
        7,
        "verification_leases",
        include_str!("../migrations/sqlite/0007_verification_leases.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "campaign",
        include_str!("../migrations/postgres/0002_campaign.sql"),
    ),
    (
        3,
        "predictions_quotas",
        include_str!("../migrations/postgres/0003_predictions_quotas.sql"),
    ),
    (
        4,
        "verification",
        include_str!("../migrations/postgres/0004_verification.sql"),
    ),
    (
        5,
        "researchers",
        include_str!("../migrations/postgres/0005_researchers.sql"),
    ),
    (
        6,
        "run_predictions",
        include_str!("../migrations/postgres/0006_run_predictions.sql"),
    ),
    (
        7,
        "verification_leases",
        include_str!("../migrations/postgres/0007_verification_leases.sql"),
    ),
];

/// Pragmas every SQLite connection gets. `synchronous=FULL` makes each commit
/// durable before it is acknowledged (the audit log must survive `kill -9`
/// and power loss; see ARCHITECTURE.md for why FULL and not NORMAL); the busy
/// timeout lets writers of other processes queue instead of failing.
/// Automatic checkpoints run inside the commit that crosses the threshold,
/// adding a burst of writes and fsyncs to one unlucky request; the server
/// checkpoints in the background instead ([`Store::checkpoint`]), and this
/// high threshold is only the backstop that bounds the WAL if it stops.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA wal_autocheckpoint = 16384;";

/// Read connections of a SQLite store. Reads are short (indexed look-ups), and
/// on a small machine more connections only mean more threads to wake.
const SQLITE_READERS: u32 = 3;

/// Connections of a PostgreSQL store.
const POSTGRES_CONNECTIONS: u32 = 16;

async fn sqlite_pool(
    options: AnyConnectOptions,
    max_connections: u32,
    read_only: bool,
) -> Result<AnyPool, StoreError> {
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                if read_only {
                    conn.execute("PRAGMA query_only = ON;").await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let files = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    let migrations = files
        .iter()
        .map(|&(version, name, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(name),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(sql),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations).run(pool).await?;
    Ok(())
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    ///
    /// `sqlite://path/to/file.db` or `postgres://user@host/db` (also `postgresql://`).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let store = if let Some(rest) = url.strip_prefix("sqlite://") {
            // `mode=rwc` creates the file on first start.
            let sep = if rest.contains('?') { '&' } else { '?' };
            let options = AnyConnectOptions::from_str(&format!("sqlite://{rest}{sep}mode=rwc"))?;
            // The writer first: it creates the file, switches it to WAL and
            // migrates it; the read-only connections open after that.
            let writer = sqlite_pool(options.clone(), 1, false).await?;
            migrate(&writer, Backend::Sqlite).await?;
            let reader = sqlite_pool(options.clone(), SQLITE_READERS, true).await?;
            let checkpointer = sqlite_pool(options, 1, false).await?;
            Store {
                writer,
                reader,
                checkpointer: Some(checkpointer),
                backend: Backend::Sqlite,
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(POSTGRES_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(AnyConnectOptions::from_str(url)?)
                .await?;
            migrate(&pool, Backend::Postgres).await?;
            Store {
                writer: pool.clone(),
                reader: pool,
                checkpointer: None,
                backend: Backend::Postgres,
            }
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        tracing::info!(backend = ?store.backend, "database ready");
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQLite: copies committed WAL frames into the database file
    /// (`wal_checkpoint(PASSIVE)`), beside the writer rather than inside one
    /// of its commits. Durability does not depend on it: a commit is durable
    /// once it is in the WAL. A no-op on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Some(pool) = &self.checkpointer {
            pool.execute("PRAGMA wal_checkpoint(PASSIVE);").await?;
        }
        Ok(())
    }

    /// Closes every connection (waits for running statements).
    pub async fn close(&self) {
        if let Some(pool) = &self.checkpointer {
            pool.close().await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction, taking the write lock first (see the crate docs).
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        WriteTx::begin(&self.writer).await
    }

    /// When the admin closed the campaign, if it is closed.
    pub async fn campaign_closed_at(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT closed_at FROM campaign WHERE id = 1")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// One agent by id.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query("SELECT id, name, token_hash, created_at, expires_at, revoked FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| AgentRecord::from_row(&r)).transpose()
    }

    /// Every agent, oldest first.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, name, token_hash, created_at, expires_at, revoked FROM agents ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(AgentRecord::from_row).collect()
    }

    /// One evaluation by id.
    pub async fn evaluation(&self, id: i64) -> Result<Option<EvaluationRecord>, StoreError> {
        let sql = "SELECT id, agent_id, task, predictions_hash, n_predictions, public_accuracy, private_accuracy, \
                   released_accuracy, entry_id, seed, response, created_at FROM evaluations WHERE id = $1";
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| EvaluationRecord::from_row(&r)).transpose()
    }

    /// The most recent evaluations, newest first (admin view).
    pub async fn recent_evaluations(
        &self,
        limit: i64,
    ) -> Result<Vec<EvaluationRecord>, StoreError> {
        let sql = "SELECT id, agent_id, task, predictions_hash, n_predictions, public_accuracy, private_accuracy, \
                   released_accuracy, entry_id, seed, response, created_at FROM evaluations ORDER BY id DESC LIMIT $1";
        let rows = sqlx::query(sql).bind(limit).fetch_all(&self.reader).await?;
        rows.iter().map(EvaluationRecord::from_row).collect()
    }

    /// The evaluations recorded for a leaderboard entry, by seed.
    pub async fn entry_evaluations(
        &self,
        entry_id: i64,
    ) -> Result<Vec<EvaluationRecord>, StoreError> {
        let sql = "SELECT id, agent_id, task, predictions_hash, n_predictions, public_accuracy, private_accuracy, \
                   released_accuracy, entry_id, seed, response, created_at FROM evaluations WHERE entry_id = $1 ORDER BY seed";
        let rows = sqlx::query(sql)
            .bind(entry_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(EvaluationRecord::from_row).collect()
    }

    /// The public predictions of every evaluation `agent_id` made of `task`,
    /// unpacked, oldest first. Evaluations stored before predictions were
    /// kept (migration 3) are left out.
    pub async fn evaluation_predictions(
        &self,
        agent_id: &str,
        task: &str,
    ) -> Result<Vec<StoredPredictions>, StoreError> {
        let sql = "SELECT id, created_at, predictions FROM evaluations \
                   WHERE agent_id = $1 AND task = $2 AND predictions IS NOT NULL ORDER BY id";
        let rows = sqlx::query(sql)
            .bind(agent_id)
            .bind(task)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                let packed: Vec<u8> = r.try_get(2)?;
                Ok(StoredPredictions {
                    evaluation_id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    predictions: unpack_predictions(&packed)?,
                })
            })
            .collect()
    }

    /// Number of evaluations stored in all.
    pub async fn evaluation_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM evaluations")
            .fetch_one(&self.reader)
            .await?
            .try_get(0)?)
    }

    /// One leaderboard entry by id.
    pub async fn entry(&self, id: i64) -> Result<Option<EntryRecord>, StoreError> {
        let sql = format!("{ENTRY_SELECT} WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| EntryRecord::from_row(&r)).transpose()
    }

    /// Every entry of a task, oldest first.
    pub async fn entries_for_task(&self, task: &str) -> Result<Vec<EntryRecord>, StoreError> {
        let sql = format!("{ENTRY_SELECT} WHERE task = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(EntryRecord::from_row).collect()
    }

    /// One post with its author's name.
    pub async fn post(&self, id: i64) -> Result<Option<PostRecord>, StoreError> {
        let sql = format!("{POST_SELECT} WHERE p.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| PostRecord::from_row(&r)).transpose()
    }

    /// Links of a post to evaluations, snapshots and entries.
    pub async fn post_links(&self, post_id: i64) -> Result<Vec<PostLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, target FROM post_links WHERE post_id = $1 ORDER BY kind, target",
        )
        .bind(post_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PostLink {
                    kind: r.try_get(0)?,
                    target: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Comments of a post, oldest first.
    pub async fn comments(&self, post_id: i64) -> Result<Vec<CommentRecord>, StoreError> {
        let sql = "SELECT c.id, c.post_id, c.agent_id, a.name, c.body, c.created_at FROM comments c \
                   JOIN agents a ON a.id = c.agent_id WHERE c.post_id = $1 ORDER BY c.id";
        let rows = sqlx::query(sql)
            .bind(post_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(CommentRecord::from_row).collect()
    }

    /// Posts matching a query: full-text search (every word must match), filters, sort, paging.
    pub async fn posts(&self, query: &PostsQuery) -> Result<Vec<PostRecord>, StoreError> {
        let mut sql = format!("{POST_SELECT} WHERE 1 = 1");
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        let search = query
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let fts_query = search.map(|text| match self.backend {
            Backend::Sqlite => sqlite_fts_query(text),
            Backend::Postgres => text.to_owned(),
        });
        if fts_query.as_deref() == Some("") {
            return Ok(Vec::new());
        }
        if fts_query.is_some() {
            match self.backend {
                Backend::Sqlite => {
                    sql += &format!(
                        " AND p.id IN (SELECT rowid FROM posts_fts WHERE posts_fts MATCH {})",
                        param()
                    )
                }
                Backend::Postgres => {
                    sql += &format!(" AND p.search @@ plainto_tsquery('english', {})", param())
                }
            }
        }
        if query.kind.is_some() {
            sql += &format!(" AND p.kind = {}", param());
        }
        if query.task.is_some() {
            sql += &format!(" AND p.task = {}", param());
        }
        if query.agent_id.is_some() {
            sql += &format!(" AND p.agent_id = {}", param());
        }
        sql += match query.sort {
            PostSort::New => " ORDER BY p.created_at DESC, p.id DESC",
            PostSort::Top => " ORDER BY (p.upvotes - p.downvotes) DESC, p.id DESC",
            PostSort::Discussed => " ORDER BY p.comment_count DESC, p.id DESC",
        };
        sql += &format!(" LIMIT {} OFFSET {}", param(), param());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(fts) = fts_query {
            q = q.bind(fts);
        }
        if let Some(kind) = query.kind {
            q = q.bind(kind.as_str());
        }
        if let Some(task) = &query.task {
            q = q.bind(task.clone());
        }
        if let Some(agent) = &query.agent_id {
            q = q.bind(agent.clone());
        }
        let rows = q
            .bind(query.limit)
            .bind(query.offset)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(PostRecord::from_row).collect()
    }

    /// Snapshot metadata by id.
    pub async fn snapshot_meta(&self, id: &str) -> Result<Option<SnapshotMeta>, StoreError> {
        let sql = "SELECT s.id, s.agent_id, a.name, s.parent_id, s.message, s.size_bytes, s.file_count, s.created_at \
                   FROM snapshots s JOIN agents a ON a.id = s.agent_id WHERE s.id = $1";
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| SnapshotMeta::from_row(&r)).transpose()
    }

    /// Snapshot archive bytes by id.
    pub async fn snapshot_archive(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT archive FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Audit records from `after_seq` (exclusive), oldest first.
    pub async fn audit_records(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, detail, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(AuditRecord::from_row).collect()
    }

    /// The sequence number of the last audit record (0 when there is none).
    pub async fn audit_head_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&self.reader)
            .await?;
        get(&row, 0)
    }

    /// Recomputes the whole audit hash chain and compares it with the stored head.
    pub async fn verify_audit_chain(&self) -> Result<ChainCheck, StoreError> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.reader)
            .await?;
        let (head_seq, head_hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
        let mut check = audit::ChainWalker::new();
        let mut after = 0;
        // Records appended after the head was read are not part of this check.
        while after < head_seq {
            let page = self
                .audit_records(after, (head_seq - after).min(1000))
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for record in &page {
                if let Some(broken) = check.push(record) {
                    return Ok(broken);
                }
            }
        }
        Ok(check.finish(head_seq, &head_hash))
    }
}

const POST_SELECT: &str = "SELECT p.id, p.agent_id, a.name, p.kind, p.task, p.title, p.body, p.upvotes, p.downvotes, \
                           p.comment_count, p.created_at FROM posts p JOIN agents a ON a.id = p.agent_id";

/// Turns free text into an FTS5 query that matches every word, with no FTS
/// syntax left: each word is quoted, so operators in user text are just words.
fn sqlite_fts_query(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn get<'r, T>(row: &'r AnyRow, index: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    Ok(row.try_get(index)?)
}

#[cfg(test)]
mod tests;
