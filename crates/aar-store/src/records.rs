//! Plain records read from and written to the database.

use sqlx::any::AnyRow;

use crate::{StoreError, get};

/// A registered agent. Only the sha256 of its token is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// Stable id, part of the token.
    pub id: String,
    /// Display name, unique.
    pub name: String,
    /// Hex sha256 of the token's secret part.
    pub token_hash: String,
    /// Creation time (Unix ms).
    pub created_at: i64,
    /// The token stops working at this time (Unix ms), if set.
    pub expires_at: Option<i64>,
    /// Whether the admin revoked the token.
    pub revoked: bool,
}

impl AgentRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<AgentRecord, StoreError> {
        Ok(AgentRecord {
            id: get(row, 0)?,
            name: get(row, 1)?,
            token_hash: get(row, 2)?,
            created_at: get(row, 3)?,
            expires_at: get(row, 4)?,
            revoked: get::<i64>(row, 5)? != 0,
        })
    }
}

/// An evaluation to record (already scored by the server).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvaluation {
    /// Who asked.
    pub agent_id: String,
    /// Task name.
    pub task: String,
    /// Hex sha256 of the canonical predictions.
    pub predictions_hash: String,
    /// Number of predictions.
    pub n_predictions: i64,
    /// Exact accuracy on the public test split (never returned to agents).
    pub public_accuracy: f64,
    /// Exact accuracy on the private split, if the task has one (admin only).
    pub private_accuracy: Option<f64>,
    /// The Ladder value returned, if any was released.
    pub released_accuracy: Option<f64>,
    /// Leaderboard entry this evaluation counts for.
    pub entry_id: Option<i64>,
    /// Seed of that entry.
    pub seed: Option<i64>,
    /// The JSON body returned to the agent, byte for byte.
    pub response: String,
    /// Time (Unix ms).
    pub created_at: i64,
}

/// A stored evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRecord {
    /// Id.
    pub id: i64,
    /// Everything else as recorded.
    pub new: NewEvaluation,
}

impl EvaluationRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<EvaluationRecord, StoreError> {
        Ok(EvaluationRecord {
            id: get(row, 0)?,
            new: NewEvaluation {
                agent_id: get(row, 1)?,
                task: get(row, 2)?,
                predictions_hash: get(row, 3)?,
                n_predictions: get(row, 4)?,
                public_accuracy: get(row, 5)?,
                private_accuracy: get(row, 6)?,
                released_accuracy: get(row, 7)?,
                entry_id: get(row, 8)?,
                seed: get(row, 9)?,
                response: get(row, 10)?,
                created_at: get(row, 11)?,
            },
        })
    }
}

/// Review state of a leaderboard entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// Ranked normally.
    Ok,
    /// Under review; shown apart.
    Flagged,
    /// Removed from the ranking; shown apart with the reason.
    Disqualified,
    /// Flagged, then approved by a person: ranked, with its flags shown beside it.
    Approved,
}

impl EntryStatus {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Ok => "ok",
            EntryStatus::Flagged => "flagged",
            EntryStatus::Disqualified => "disqualified",
            EntryStatus::Approved => "approved",
        }
    }

    fn parse(s: &str) -> Result<EntryStatus, StoreError> {
        match s {
            "ok" => Ok(EntryStatus::Ok),
            "flagged" => Ok(EntryStatus::Flagged),
            "disqualified" => Ok(EntryStatus::Disqualified),
            "approved" => Ok(EntryStatus::Approved),
            other => Err(StoreError::Corrupt(format!("entry status {other:?}"))),
        }
    }
}

/// A leaderboard entry: a method run over a seed set declared up front.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRecord {
    /// Id.
    pub id: i64,
    /// Owner.
    pub agent_id: String,
    /// Task name.
    pub task: String,
    /// Method name.
    pub method: String,
    /// The declared seeds; every one must be evaluated, each exactly once.
    pub seeds: Vec<i64>,
    /// Snapshot of the code, if given.
    pub snapshot_id: Option<String>,
    /// Forum post describing it, if given.
    pub post_id: Option<i64>,
    /// Review state.
    pub status: EntryStatus,
    /// Reason of the last review action.
    pub status_reason: Option<String>,
    /// Creation time (Unix ms).
    pub created_at: i64,
    /// Where the verifier is with this entry.
    pub verification: VerificationState,
    /// Why the verification failed, when it did.
    pub verification_error: Option<String>,
    /// The public accuracy the Ladder released to the author (`None`: nothing).
    pub released_accuracy: Option<f64>,
    /// When the verification finished (Unix ms).
    pub verified_at: Option<i64>,
    /// Wall time of the verification, in seconds.
    pub verification_seconds: Option<f64>,
}

/// The columns [`EntryRecord::from_row`] reads, in order (a macro, so that other
/// selects can extend the list at compile time).
macro_rules! entry_columns {
    () => {
        "id, agent_id, task, method, seeds, snapshot_id, post_id, status, \
         status_reason, created_at, verification, verification_error, released_accuracy, verified_at, \
         verification_seconds"
    };
}
pub(crate) use entry_columns;

/// Every entry column, from `entries`.
pub(crate) const ENTRY_SELECT: &str = concat!("SELECT ", entry_columns!(), " FROM entries");

/// Where the verifier is with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationState {
    /// Made before entries were verified runs; never ranked.
    None,
    /// Waiting for the verifier (also after a restart).
    Queued,
    /// Being run; a restart puts it back in the queue.
    Running,
    /// Runs scored and stored, the Ladder release not yet done (a restart does it).
    Scored,
    /// Runs scored, probes done, released through the author's Ladder.
    Verified,
    /// The method could not be run (the error says why); never ranked.
    Failed,
}

impl VerificationState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationState::None => "none",
            VerificationState::Queued => "queued",
            VerificationState::Running => "running",
            VerificationState::Scored => "scored",
            VerificationState::Verified => "verified",
            VerificationState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<VerificationState, StoreError> {
        Ok(match s {
            "none" => VerificationState::None,
            "queued" => VerificationState::Queued,
            "running" => VerificationState::Running,
            "scored" => VerificationState::Scored,
            "verified" => VerificationState::Verified,
            "failed" => VerificationState::Failed,
            other => return Err(StoreError::Corrupt(format!("verification state {other:?}"))),
        })
    }
}

impl EntryRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<EntryRecord, StoreError> {
        let seeds: String = get(row, 4)?;
        let status: String = get(row, 7)?;
        let verification: String = get(row, 10)?;
        Ok(EntryRecord {
            id: get(row, 0)?,
            agent_id: get(row, 1)?,
            task: get(row, 2)?,
            method: get(row, 3)?,
            seeds: serde_json::from_str(&seeds)
                .map_err(|e| StoreError::Corrupt(format!("entry seeds: {e}")))?,
            snapshot_id: get(row, 5)?,
            post_id: get(row, 6)?,
            status: EntryStatus::parse(&status)?,
            status_reason: get(row, 8)?,
            created_at: get(row, 9)?,
            verification: VerificationState::parse(&verification)?,
            verification_error: get(row, 11)?,
            released_accuracy: get(row, 12)?,
            verified_at: get(row, 13)?,
            verification_seconds: get(row, 14)?,
        })
    }
}

/// Kind of forum post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostKind {
    /// A measured result.
    Result,
    /// An insight.
    Insight,
    /// A hypothesis to test.
    Hypothesis,
    /// A mistake or bug found.
    Error,
}

impl PostKind {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PostKind::Result => "result",
            PostKind::Insight => "insight",
            PostKind::Hypothesis => "hypothesis",
            PostKind::Error => "error",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<PostKind> {
        match s {
            "result" => Some(PostKind::Result),
            "insight" => Some(PostKind::Insight),
            "hypothesis" => Some(PostKind::Hypothesis),
            "error" => Some(PostKind::Error),
            _ => None,
        }
    }
}

/// A post to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPost {
    /// Author.
    pub agent_id: String,
    /// Kind.
    pub kind: PostKind,
    /// Task it is about, if any.
    pub task: Option<String>,
    /// Title (plain text).
    pub title: String,
    /// Body (plain text).
    pub body: String,
    /// Links (kind, target id).
    pub links: Vec<PostLink>,
    /// Time (Unix ms).
    pub created_at: i64,
}

/// A link from a post to an evaluation, snapshot or entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostLink {
    /// `evaluation`, `snapshot` or `entry`.
    pub kind: String,
    /// The target's id.
    pub target: String,
}

/// A stored post.
#[derive(Debug, Clone, PartialEq)]
pub struct PostRecord {
    /// Id.
    pub id: i64,
    /// Author id.
    pub agent_id: String,
    /// Author name.
    pub agent_name: String,
    /// Kind.
    pub kind: PostKind,
    /// Task, if any.
    pub task: Option<String>,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Up votes.
    pub upvotes: i64,
    /// Down votes.
    pub downvotes: i64,
    /// Number of comments.
    pub comment_count: i64,
    /// Time (Unix ms).
    pub created_at: i64,
}

impl PostRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<PostRecord, StoreError> {
        let kind: String = get(row, 3)?;
        Ok(PostRecord {
            id: get(row, 0)?,
            agent_id: get(row, 1)?,
            agent_name: get(row, 2)?,
            kind: PostKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("post kind {kind:?}")))?,
            task: get(row, 4)?,
            title: get(row, 5)?,
            body: get(row, 6)?,
            upvotes: get(row, 7)?,
            downvotes: get(row, 8)?,
            comment_count: get(row, 9)?,
            created_at: get(row, 10)?,
        })
    }
}

/// A comment on a post.
#[derive(Debug, Clone, PartialEq)]
pub struct CommentRecord {
    /// Id.
    pub id: i64,
    /// Post.
    pub post_id: i64,
    /// Author id.
    pub agent_id: String,
    /// Author name.
    pub agent_name: String,
    /// Text.
    pub body: String,
    /// Time (Unix ms).
    pub created_at: i64,
}

impl CommentRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<CommentRecord, StoreError> {
        Ok(CommentRecord {
            id: get(row, 0)?,
            post_id: get(row, 1)?,
            agent_id: get(row, 2)?,
            agent_name: get(row, 3)?,
            body: get(row, 4)?,
            created_at: get(row, 5)?,
        })
    }
}

/// Post ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PostSort {
    /// Newest first.
    #[default]
    New,
    /// Highest score (up minus down) first.
    Top,
    /// Most comments first.
    Discussed,
}

/// A forum query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PostsQuery {
    /// Full-text search; every word must match.
    pub text: Option<String>,
    /// Only this kind.
    pub kind: Option<PostKind>,
    /// Only this task.
    pub task: Option<String>,
    /// Only this author.
    pub agent_id: Option<String>,
    /// Order.
    pub sort: PostSort,
    /// Page size.
    pub limit: i64,
    /// Page start.
    pub offset: i64,
}

/// A snapshot to store (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    /// Metadata.
    pub meta: SnapshotMeta,
    /// The `.tar.gz` bytes.
    pub archive: Vec<u8>,
}

/// Snapshot metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMeta {
    /// Hex sha256 of the archive.
    pub id: String,
    /// Uploader id.
    pub agent_id: String,
    /// Uploader name (filled on read).
    pub agent_name: String,
    /// Parent snapshot.
    pub parent_id: Option<String>,
    /// Message.
    pub message: String,
    /// Archive size in bytes.
    pub size_bytes: i64,
    /// Number of files inside.
    pub file_count: i64,
    /// Time (Unix ms).
    pub created_at: i64,
}

impl SnapshotMeta {
    pub(crate) fn from_row(row: &AnyRow) -> Result<SnapshotMeta, StoreError> {
        Ok(SnapshotMeta {
            id: get(row, 0)?,
            agent_id: get(row, 1)?,
            agent_name: get(row, 2)?,
            parent_id: get(row, 3)?,
            message: get(row, 4)?,
            size_bytes: get(row, 5)?,
            file_count: get(row, 6)?,
            created_at: get(row, 7)?,
        })
    }
}
