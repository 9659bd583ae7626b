//! Which entries the gate takes, from a store as the server leaves it.

use aar_core::metrics::{FixedBaselines, MeanSe};
use aar_store::{
    AgentRecord, SnapshotMeta, SnapshotRecord, Store, VerificationResult, VerificationRun,
    VerificationState,
};

use super::{SCORED_SPLIT, entries_by_id, top_entries};

/// W 0.5 and S 0.7 on every task's private test.
fn baselines(_: &str) -> Option<FixedBaselines> {
    let at = |mean| MeanSe {
        mean,
        se: None,
        n: 1,
    };
    Some(FixedBaselines {
        weak: at(0.5),
        ceiling: at(0.7),
    })
}

/// Stores an agent, and per `(private accuracies, flagged)` one verified entry on
/// sentiment with a snapshot of its own.
async fn store_with(entries: &[(&[f64], bool)]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aar.db").display());
    let store = Store::connect(&url).await.unwrap();
    let mut tx = store.begin_write().await.unwrap();
    tx.insert_agent(&AgentRecord {
        id: "a1".into(),
        name: "researcher-1".into(),
        token_hash: "0".repeat(64),
        created_at: 0,
        expires_at: None,
        revoked: false,
    })
    .await
    .unwrap();
    for (i, (accuracies, flagged)) in entries.iter().enumerate() {
        let snapshot = format!("{i:064x}");
        let archive = vec![i as u8; 4];
        let meta = SnapshotMeta {
            id: snapshot.clone(),
            agent_id: "a1".into(),
            agent_name: String::new(),
            parent_id: None,
            message: "m".into(),
            size_bytes: 4,
            file_count: 1,
            created_at: 0,
        };
        tx.insert_snapshot(&SnapshotRecord { meta, archive })
            .await
            .unwrap();
        let seeds: Vec<i64> = (0..accuracies.len() as i64).collect();
        let method = format!("method {i}");
        let id = tx
            .insert_entry("a1", "sentiment", &method, &seeds, Some(&snapshot), None, 0)
            .await
            .unwrap();
        let runs = accuracies
            .iter()
            .zip(&seeds)
            .map(|(accuracy, seed)| VerificationRun {
                entry_id: id,
                seed: *seed,
                variant: "main".into(),
                split: SCORED_SPLIT.into(),
                accuracy: Some(*accuracy),
                error: None,
                seconds: 1.0,
                predictions: None,
            })
            .collect();
        let flags = if *flagged {
            vec![aar_store::NewFlag {
                entry_id: Some(id),
                agent_id: "a1".into(),
                probe: "teacher_ablation".into(),
                summary: "s".into(),
                evidence: "{}".into(),
            }]
        } else {
            Vec::new()
        };
        let result = VerificationResult {
            entry_id: id,
            state: VerificationState::Verified,
            error: None,
            runs,
            flags,
            released_accuracy: None,
            at: 1,
            seconds: 1.0,
        };
        tx.record_verification(&result).await.unwrap();
    }
    tx.commit().await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn the_gate_takes_the_best_unflagged_entries_by_private_pgr() {
    // Private PGRs by hand against W 0.5, S 0.7: 0.25, 1.0 (flagged), 0.75, 0.5.
    let (_dir, store) = store_with(&[
        (&[0.55, 0.55], false),
        (&[0.70, 0.70], true),
        (&[0.60, 0.70], false),
        (&[0.60], false),
    ])
    .await;
    let top = top_entries(&store, &baselines, 2).await.unwrap();
    let picked: Vec<(i64, Option<f64>)> = top.iter().map(|e| (e.entry_id, e.private_pgr)).collect();
    assert_eq!(picked.len(), 2);
    assert_eq!(picked[0].0, 3);
    assert!((picked[0].1.unwrap() - 0.75).abs() < 1e-12, "{picked:?}");
    assert_eq!(picked[1].0, 4);
    assert_eq!(top[0].researcher, "researcher-1");
    assert_eq!(top[0].seeds, [0, 1]);
    assert_eq!(top[0].archive, vec![2u8; 4], "entry 3's own snapshot");
    let all = top_entries(&store, &baselines, 10).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|e| e.entry_id).collect();
    assert_eq!(ids, [3, 4, 1], "the flagged entry 2 is left out");
    // Named entries are taken as asked, flagged or not; an unknown one is an error.
    let named = entries_by_id(&store, &baselines, &[2]).await.unwrap();
    assert_eq!(named[0].entry_id, 2);
    let err = entries_by_id(&store, &baselines, &[99]).await.unwrap_err();
    assert!(err.to_string().contains("entry 99"), "{err}");
}
