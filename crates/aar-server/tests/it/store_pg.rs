//! The store's newer statements on PostgreSQL: bit-packed predictions
//! (`bytea`), quota counts and the Ladder epoch (migration 3), verification runs'
//! predictions (migration 6).
//!
//! Always runs; fails (never skips) when PostgreSQL is missing (`bash scripts/setup.sh --test` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aar_store::{
    AgentRecord, EvaluationInsert, EvaluationRecord, NewEvaluation, QuotaUsage, SnapshotMeta,
    SnapshotRecord, Store, StoredPredictions, VerificationResult, VerificationRun,
    VerificationState,
};

use crate::support::Postgres;

fn evaluation(id: i64, predictions: Vec<u8>) -> EvaluationInsert {
    EvaluationInsert {
        record: EvaluationRecord {
            id,
            new: NewEvaluation {
                agent_id: "a".into(),
                task: "math".into(),
                predictions_hash: format!("{id:064x}"),
                n_predictions: predictions.len() as i64,
                public_accuracy: 0.5,
                private_accuracy: None,
                released_accuracy: None,
                entry_id: None,
                seed: None,
                response: "{}".into(),
                created_at: 10 * id,
            },
        },
        predictions,
    }
}

/// Agent `a`, the author of every row these tests write.
fn agent_a() -> AgentRecord {
    AgentRecord {
        id: "a".into(),
        name: "a".into(),
        token_hash: "00".repeat(32),
        created_at: 0,
        expires_at: None,
        revoked: false,
    }
}

#[tokio::test]
async fn predictions_and_quota_counts_work_on_postgresql() {
    let pg = Postgres::start();
    let store = Store::connect(&pg.url).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    let agent = agent_a();
    assert!(tx.insert_agent(&agent).await.unwrap());
    let odd: Vec<u8> = (0..1301).map(|i| u8::from(i % 7 == 3)).collect();
    tx.insert_evaluations(&[evaluation(1, odd.clone()), evaluation(2, vec![1; 9])])
        .await
        .unwrap();
    let mut entry_ids = Vec::new();
    for at in [100, 5_000] {
        let id = tx
            .insert_entry("a", "math", "m", &[1, 2, 3], None, None, at)
            .await
            .unwrap();
        entry_ids.push(id);
    }
    let snapshot = SnapshotRecord {
        meta: SnapshotMeta {
            id: "ab".repeat(32),
            agent_id: "a".into(),
            agent_name: String::new(),
            parent_id: None,
            message: "m".into(),
            size_bytes: 42,
            file_count: 1,
            created_at: 5_000,
        },
        archive: vec![7; 42],
    };
    assert!(tx.insert_snapshot(&snapshot).await.unwrap());
    assert_eq!(
        tx.entry_usage("a", 1_000).await.unwrap(),
        QuotaUsage {
            agent_total: 2,
            agent_recent: 1,
            oldest_recent: Some(5_000),
            campaign_total: 2,
            bytes: 0
        }
    );
    let snapshots = tx.snapshot_usage("a", 1_000).await.unwrap();
    assert_eq!((snapshots.agent_recent, snapshots.bytes), (1, 42));
    assert_eq!(tx.ladder_epoch().await.unwrap(), 0);
    assert_eq!(tx.bump_ladder_epoch().await.unwrap(), 1);
    let run = |split: &str, predictions: Option<Vec<u8>>| VerificationRun {
        entry_id: entry_ids[0],
        seed: 1,
        variant: "main".into(),
        split: split.into(),
        accuracy: predictions.as_ref().map(|_| 0.5),
        error: None,
        seconds: 1.0,
        predictions,
    };
    let runs = vec![run("test", Some(odd.clone())), run("transfer", None)];
    tx.record_verification(&VerificationResult {
        entry_id: entry_ids[0],
        state: VerificationState::Scored,
        error: None,
        runs: runs.clone(),
        flags: Vec::new(),
        released_accuracy: None,
        at: 6_000,
        seconds: 2.0,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.verification_runs(entry_ids[0]).await.unwrap(), runs);

    let stored = store.evaluation_predictions("a", "math").await.unwrap();
    assert_eq!(
        stored,
        vec![
            StoredPredictions {
                evaluation_id: 1,
                created_at: 10,
                predictions: odd
            },
            StoredPredictions {
                evaluation_id: 2,
                created_at: 20,
                predictions: vec![1; 9]
            },
        ]
    );
    store.close().await;
}

/// sqlx's `Any` driver types a NULL float as `float4` on PostgreSQL; a statement cached
/// after such a NULL refused every later value ("incorrect binary data format in bind
/// parameter 8"): evaluations answered 500 once the Ladder had withheld a release.
#[tokio::test]
async fn a_withheld_release_does_not_break_later_evaluations_on_postgresql() {
    let pg = Postgres::start();
    let store = Store::connect(&pg.url).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    let agent = agent_a();
    assert!(tx.insert_agent(&agent).await.unwrap());
    tx.commit().await.unwrap();
    // One evaluation per batch, as the server writes them: the same statement each time.
    for (id, released, private) in [
        (1, None, None),
        (2, Some(0.75), Some(0.5)),
        (3, None, Some(0.25)),
        (4, Some(0.5), None),
    ] {
        let mut insert = evaluation(id, vec![1, 0, 1]);
        insert.record.new.released_accuracy = released;
        insert.record.new.private_accuracy = private;
        let mut tx = store.begin_write().await.unwrap();
        tx.insert_evaluations(&[insert]).await.unwrap();
        tx.commit().await.unwrap();
    }
    let stored = store.recent_evaluations(10).await.unwrap();
    let mut released: Vec<(i64, Option<f64>, Option<f64>)> = stored
        .iter()
        .map(|e| (e.id, e.new.released_accuracy, e.new.private_accuracy))
        .collect();
    released.sort_by_key(|r| r.0);
    assert_eq!(
        released,
        vec![
            (1, None, None),
            (2, Some(0.75), Some(0.5)),
            (3, None, Some(0.25)),
            (4, Some(0.5), None)
        ]
    );
}
