//! What the orchestrator relays about each researcher for the overseer's dashboard:
//! transcript lines and the latest status. Stored as given (JSON text); the
//! server validates it and decides who may read it (the admin only).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, WriteTx, get};

/// One transcript line of a researcher.
#[derive(Debug, Clone, PartialEq)]
pub struct ResearcherEvent {
    /// The researcher's agent id.
    pub agent_id: String,
    /// Line number in the researcher's transcript (0-based).
    pub seq: i64,
    /// When it happened (Unix ms).
    pub ts_ms: i64,
    /// The transcript event's kind (`message`, `tool_call`, ...).
    pub kind: String,
    /// The whole line, JSON text.
    pub body: String,
}

impl ResearcherEvent {
    fn from_row(row: &AnyRow) -> Result<ResearcherEvent, StoreError> {
        Ok(ResearcherEvent {
            agent_id: get(row, 0)?,
            seq: get(row, 1)?,
            ts_ms: get(row, 2)?,
            kind: get(row, 3)?,
            body: get(row, 4)?,
        })
    }
}

/// A researcher's latest relayed status.
#[derive(Debug, Clone, PartialEq)]
pub struct ResearcherStatus {
    /// The researcher's agent id.
    pub agent_id: String,
    /// JSON text: notebook, spend, budgets, resource use.
    pub body: String,
    /// When it was relayed (Unix ms).
    pub updated_at: i64,
}

const EVENT_SELECT: &str =
    "SELECT e.agent_id, e.seq, e.ts_ms, e.kind, e.body FROM researcher_events e";

/// One evaluation reduced to what a progress chart needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationPoint {
    /// Who evaluated.
    pub agent_id: String,
    /// Task.
    pub task: String,
    /// When (Unix ms).
    pub created_at: i64,
    /// Exact public-test accuracy (admin only).
    pub public_accuracy: f64,
    /// Exact private-test accuracy (admin only).
    pub private_accuracy: Option<f64>,
}

impl Store {
    /// Every evaluation's time and accuracies, oldest first: one narrow query for charts.
    pub async fn evaluation_points(&self) -> Result<Vec<EvaluationPoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, task, created_at, public_accuracy, private_accuracy FROM evaluations ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EvaluationPoint {
                    agent_id: get(row, 0)?,
                    task: get(row, 1)?,
                    created_at: get(row, 2)?,
                    public_accuracy: get(row, 3)?,
                    private_accuracy: get(row, 4)?,
                })
            })
            .collect()
    }

    /// How many evaluations each agent has made (agents with none are absent).
    pub async fn evaluation_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT agent_id, COUNT(*) FROM evaluations GROUP BY agent_id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
            .collect()
    }

    /// A researcher's transcript lines with `seq > after`, oldest first, at most `limit`.
    pub async fn researcher_events(
        &self,
        agent_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ResearcherEvent>, StoreError> {
        let sql =
            format!("{EVENT_SELECT} WHERE e.agent_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(agent_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(ResearcherEvent::from_row).collect()
    }

    /// The last transcript line of every researcher that has one (one query).
    pub async fn latest_researcher_events(&self) -> Result<Vec<ResearcherEvent>, StoreError> {
        let sql = format!(
            "{EVENT_SELECT} JOIN (SELECT agent_id, MAX(seq) AS last FROM researcher_events GROUP BY agent_id) l \
             ON e.agent_id = l.agent_id AND e.seq = l.last ORDER BY e.agent_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(ResearcherEvent::from_row).collect()
    }

    /// How many transcript lines are stored per researcher: where a relay resumes.
    pub async fn researcher_event_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, MAX(seq) + 1 FROM researcher_events GROUP BY agent_id ORDER BY agent_id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
            .collect()
    }

    /// Every researcher's latest status.
    pub async fn researcher_statuses(&self) -> Result<Vec<ResearcherStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, body, updated_at FROM researcher_status ORDER BY agent_id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row: &AnyRow| {
                Ok(ResearcherStatus {
                    agent_id: row.try_get(0)?,
                    body: row.try_get(1)?,
                    updated_at: row.try_get(2)?,
                })
            })
            .collect()
    }
}

impl WriteTx {
    /// Appends transcript lines; a line already stored (same agent, same `seq`) is kept
    /// as it was, so a relay may re-send after a crash.
    pub async fn append_researcher_events(
        &mut self,
        events: &[ResearcherEvent],
    ) -> Result<u64, StoreError> {
        let mut added = 0;
        for event in events {
            let done = sqlx::query(
                "INSERT INTO researcher_events (agent_id, seq, ts_ms, kind, body) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&event.agent_id)
            .bind(event.seq)
            .bind(event.ts_ms)
            .bind(&event.kind)
            .bind(&event.body)
            .execute(&mut *self.tx)
            .await?;
            added += done.rows_affected();
        }
        Ok(added)
    }

    /// Replaces a researcher's status.
    pub async fn set_researcher_status(
        &mut self,
        status: &ResearcherStatus,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO researcher_status (agent_id, body, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (agent_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(&status.agent_id)
        .bind(&status.body)
        .bind(status.updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
