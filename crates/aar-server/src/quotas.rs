//! Quotas on what is costly to accept: leaderboard entries (each one is
//! verified by several sandboxed training runs) and snapshots (stored bytes).
//!
//! Counted from the database inside the write transaction that stores the new
//! row: every write transaction first takes the write lock (see `aar-store`),
//! so two requests cannot both see room for one more. A refusal is HTTP 429
//! with a stable code (`entry_quota`, `snapshot_quota`) and a message naming
//! the limit and when it frees.

use aar_store::{QuotaUsage, WriteTx};
use axum::http::StatusCode;

use crate::{AppError, Policy};

const HOUR_MS: i64 = 3_600_000;

/// Limits on entries and snapshots (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Entries per agent over the last hour.
    pub entries_per_agent_hour: i64,
    /// Entries per agent in all.
    pub entries_per_agent: i64,
    /// Entries of the whole campaign in all.
    pub entries_per_campaign: i64,
    /// Snapshots an agent stores over the last hour.
    pub snapshots_per_agent_hour: i64,
    /// Bytes of snapshot archives an agent stores in all.
    pub snapshot_bytes_per_agent: i64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            entries_per_agent_hour: 6,
            entries_per_agent: 40,
            entries_per_campaign: 300,
            snapshots_per_agent_hour: 30,
            snapshot_bytes_per_agent: 256 << 20,
        }
    }
}

/// One quota that is used up: what, its limit, and when it frees (`None`: never).
struct Exceeded {
    what: String,
    limit: i64,
    frees_at: Option<i64>,
}

impl Exceeded {
    fn refusal(&self, code: &'static str, now: i64) -> AppError {
        let when = match self.frees_at {
            Some(at) => format!(
                "it frees in {} s (at {at} ms since the epoch)",
                (at - now).max(0).saturating_add(999) / 1000
            ),
            None => "it does not free (a total, not a rate)".to_owned(),
        };
        AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            code,
            format!(
                "refused: {} (limit {}) is used up; {when}; nothing was stored",
                self.what, self.limit
            ),
        )
    }
}

/// The first hourly quota `usage` has used up, if any.
fn hourly(usage: QuotaUsage, what: &'static str, limit: i64) -> Option<Exceeded> {
    (usage.agent_recent >= limit).then(|| Exceeded {
        what: what.to_owned(),
        limit,
        // The oldest entry of the window leaves it an hour after it was stored.
        frees_at: usage.oldest_recent.map(|t| t + HOUR_MS),
    })
}

fn total(count: i64, what: &'static str, limit: i64) -> Option<Exceeded> {
    (count >= limit).then(|| Exceeded {
        what: what.to_owned(),
        limit,
        frees_at: None,
    })
}

/// Refuses (429, code `entry_quota`) a new entry by `agent_id` at `now` when
/// one of the entry quotas is used up. Call it inside the transaction that
/// inserts the entry, right after `begin_write`.
pub(crate) async fn check_entry_quota(
    tx: &mut WriteTx,
    policy: &Policy,
    agent_id: &str,
    now: i64,
) -> Result<(), AppError> {
    let q = policy.quotas;
    let usage = tx.entry_usage(agent_id, now - HOUR_MS).await?;
    let exceeded = hourly(usage, "your hourly entry quota", q.entries_per_agent_hour)
        .or_else(|| {
            total(
                usage.agent_total,
                "your total entry quota",
                q.entries_per_agent,
            )
        })
        .or_else(|| {
            total(
                usage.campaign_total,
                "the campaign's entry quota",
                q.entries_per_campaign,
            )
        });
    match exceeded {
        Some(e) => Err(e.refusal("entry_quota", now)),
        None => Ok(()),
    }
}

/// Refuses (429, code `snapshot_quota`) storing a new snapshot of `size_bytes`
/// for `agent_id` at `now` when the hourly count or the agent's stored bytes
/// would go over. Call it inside the transaction that inserts the snapshot,
/// only when the snapshot is new (an identical upload stores nothing).
pub(crate) async fn check_snapshot_quota(
    tx: &mut WriteTx,
    policy: &Policy,
    agent_id: &str,
    size_bytes: i64,
    now: i64,
) -> Result<(), AppError> {
    let q = policy.quotas;
    let usage = tx.snapshot_usage(agent_id, now - HOUR_MS).await?;
    let exceeded = hourly(
        usage,
        "your hourly snapshot quota",
        q.snapshots_per_agent_hour,
    )
    .or_else(|| {
        (usage.bytes.saturating_add(size_bytes) > q.snapshot_bytes_per_agent).then(|| Exceeded {
            what: format!(
                "your snapshot storage quota in bytes (you store {}, this archive has {size_bytes})",
                usage.bytes
            ),
            limit: q.snapshot_bytes_per_agent,
            frees_at: None,
        })
    });
    match exceeded {
        Some(e) => Err(e.refusal("snapshot_quota", now)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use aar_store::{AgentRecord, Store};

    use super::*;

    const T0: i64 = 1_700_000_000_000;

    async fn store_with_agents(agents: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("aar.db").display());
        let store = Store::connect(&url).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        for id in agents {
            let agent = AgentRecord {
                id: (*id).into(),
                name: format!("name-{id}"),
                token_hash: "00".repeat(32),
                created_at: 0,
                expires_at: None,
                revoked: false,
            };
            assert!(tx.insert_agent(&agent).await.unwrap());
        }
        tx.commit().await.unwrap();
        (dir, store)
    }

    async fn add_entries(store: &Store, agent: &str, times: impl IntoIterator<Item = i64>) {
        let mut tx = store.begin_write().await.unwrap();
        for at in times {
            tx.insert_entry(agent, "math", "m", &[1, 2, 3], None, None, at)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    async fn entry_check(
        store: &Store,
        policy: &Policy,
        agent: &str,
        now: i64,
    ) -> Result<(), AppError> {
        let mut tx = store.begin_write().await.unwrap();
        check_entry_quota(&mut tx, policy, agent, now).await
    }

    #[tokio::test]
    async fn the_seventh_entry_in_an_hour_is_refused_until_the_first_is_an_hour_old() {
        let (_dir, store) = store_with_agents(&["a", "b"]).await;
        let policy = Policy::default();
        // Six entries, one every five minutes from T0.
        let times: Vec<i64> = (0..6).map(|i| T0 + i * 300_000).collect();
        add_entries(&store, "a", times.clone()).await;
        let now = T0 + 30 * 60_000;
        let refusal = entry_check(&store, &policy, "a", now).await.unwrap_err();
        assert_eq!(refusal.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refusal.code, "entry_quota");
        // The limit and when it frees: the first entry leaves the window at T0 + 1 h.
        assert!(
            refusal.message.contains("hourly entry quota (limit 6)"),
            "{}",
            refusal.message
        );
        assert!(
            refusal
                .message
                .contains(&format!("frees in 1800 s (at {}", T0 + HOUR_MS)),
            "{}",
            refusal.message
        );
        // Another agent is not held back.
        assert_eq!(entry_check(&store, &policy, "b", now).await, Ok(()));
        // One millisecond before the first entry is an hour old it still counts; then it does not.
        assert!(
            entry_check(&store, &policy, "a", T0 + HOUR_MS)
                .await
                .is_err()
        );
        assert_eq!(
            entry_check(&store, &policy, "a", T0 + HOUR_MS + 1).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn total_entry_quotas_never_free() {
        let (_dir, store) = store_with_agents(&["a", "b"]).await;
        let policy = Policy {
            quotas: Quotas {
                entries_per_agent: 3,
                entries_per_campaign: 5,
                ..Quotas::default()
            },
            ..Policy::default()
        };
        add_entries(&store, "a", [T0, T0 + 1, T0 + 2]).await;
        let later = T0 + 100 * HOUR_MS;
        let refusal = entry_check(&store, &policy, "a", later).await.unwrap_err();
        assert_eq!(refusal.code, "entry_quota");
        assert!(
            refusal.message.contains("total entry quota (limit 3)"),
            "{}",
            refusal.message
        );
        assert!(
            refusal.message.contains("does not free"),
            "{}",
            refusal.message
        );
        add_entries(&store, "b", [T0, T0 + 1]).await;
        let refusal = entry_check(&store, &policy, "b", later).await.unwrap_err();
        assert!(
            refusal.message.contains("campaign's entry quota (limit 5)"),
            "{}",
            refusal.message
        );
    }

    #[tokio::test]
    async fn snapshot_quotas_count_the_hour_and_the_bytes() {
        let (_dir, store) = store_with_agents(&["a"]).await;
        let policy = Policy {
            quotas: Quotas {
                snapshots_per_agent_hour: 2,
                snapshot_bytes_per_agent: 100,
                ..Quotas::default()
            },
            ..Policy::default()
        };
        let mut tx = store.begin_write().await.unwrap();
        for (i, size) in [30_i64, 40].into_iter().enumerate() {
            let record = aar_store::SnapshotRecord {
                meta: aar_store::SnapshotMeta {
                    id: format!("{i:064x}"),
                    agent_id: "a".into(),
                    agent_name: String::new(),
                    parent_id: None,
                    message: "m".into(),
                    size_bytes: size,
                    file_count: 1,
                    created_at: T0,
                },
                archive: vec![0; size as usize],
            };
            assert!(tx.insert_snapshot(&record).await.unwrap());
        }
        let hourly = check_snapshot_quota(&mut tx, &policy, "a", 1, T0 + 1)
            .await
            .unwrap_err();
        assert_eq!(
            (hourly.status, hourly.code),
            (StatusCode::TOO_MANY_REQUESTS, "snapshot_quota")
        );
        assert!(
            hourly.message.contains("hourly snapshot quota (limit 2)"),
            "{}",
            hourly.message
        );
        let later = T0 + HOUR_MS + 1;
        // 70 bytes stored: 30 more fit, 31 do not.
        assert_eq!(
            check_snapshot_quota(&mut tx, &policy, "a", 30, later).await,
            Ok(())
        );
        let bytes = check_snapshot_quota(&mut tx, &policy, "a", 31, later)
            .await
            .unwrap_err();
        assert_eq!(bytes.code, "snapshot_quota");
        assert!(
            bytes.message.contains("you store 70, this archive has 31"),
            "{}",
            bytes.message
        );
        assert!(bytes.message.contains("(limit 100)"), "{}", bytes.message);
    }
}
