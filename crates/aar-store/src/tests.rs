use super::*;

async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aar.db").display());
    let store = Store::connect(&url).await.unwrap();
    (dir, store)
}

async fn add_agent(store: &Store, id: &str) {
    let mut tx = store.begin_write().await.unwrap();
    let agent = AgentRecord {
        id: id.to_owned(),
        name: format!("name-{id}"),
        token_hash: "00".repeat(32),
        created_at: now_millis(),
        expires_at: None,
        revoked: false,
    };
    assert!(tx.insert_agent(&agent).await.unwrap());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn audit_chain_detects_an_edited_record() {
    let (_dir, store) = temp_store().await;
    let mut tx = store.begin_write().await.unwrap();
    for i in 0..5 {
        tx.append_audit("admin", "test", &format!("{{\"i\":{i}}}"));
    }
    tx.commit().await.unwrap();
    let ChainCheck::Intact { records, .. } = store.verify_audit_chain().await.unwrap() else {
        panic!("fresh chain must verify")
    };
    assert_eq!(records, 5);

    sqlx::query("UPDATE audit_log SET detail = '{\"i\":99}' WHERE seq = 3")
        .execute(&store.writer)
        .await
        .unwrap();
    match store.verify_audit_chain().await.unwrap() {
        ChainCheck::Broken { seq, .. } => assert_eq!(seq, 3),
        intact => panic!("tampering went unnoticed: {intact:?}"),
    }
}

#[tokio::test]
async fn audit_chain_detects_a_dropped_tail() {
    let (_dir, store) = temp_store().await;
    let mut tx = store.begin_write().await.unwrap();
    for _ in 0..3 {
        tx.append_audit("admin", "test", "{}");
    }
    tx.commit().await.unwrap();
    sqlx::query("DELETE FROM audit_log WHERE seq = 3")
        .execute(&store.writer)
        .await
        .unwrap();
    assert!(matches!(
        store.verify_audit_chain().await.unwrap(),
        ChainCheck::Broken { .. }
    ));
}

#[tokio::test]
async fn second_vote_replaces_the_first() {
    let (_dir, store) = temp_store().await;
    add_agent(&store, "a").await;
    add_agent(&store, "b").await;
    let mut tx = store.begin_write().await.unwrap();
    let post = NewPost {
        agent_id: "a".into(),
        kind: PostKind::Insight,
        task: None,
        title: "t".into(),
        body: "b".into(),
        links: vec![],
        created_at: 1,
    };
    let id = tx.insert_post(&post).await.unwrap();
    assert_eq!(tx.vote(id, "b", 1).await.unwrap(), (1, 0));
    assert_eq!(tx.vote(id, "b", 1).await.unwrap(), (1, 0));
    assert_eq!(tx.vote(id, "b", -1).await.unwrap(), (0, 1));
    assert_eq!(tx.vote(id, "a", 1).await.unwrap(), (1, 1));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn search_matches_every_word_and_ignores_fts_syntax() {
    let (_dir, store) = temp_store().await;
    add_agent(&store, "a").await;
    let mut tx = store.begin_write().await.unwrap();
    for (title, body) in [
        ("Confidence filtering", "drop low confidence weak labels"),
        ("Critic", "a critic model"),
    ] {
        let post = NewPost {
            agent_id: "a".into(),
            kind: PostKind::Result,
            task: Some("math".into()),
            title: title.into(),
            body: body.into(),
            links: vec![],
            created_at: 1,
        };
        tx.insert_post(&post).await.unwrap();
    }
    tx.commit().await.unwrap();
    let find = |text: &str| PostsQuery {
        text: Some(text.into()),
        limit: 10,
        ..PostsQuery::default()
    };
    assert_eq!(store.posts(&find("weak labels")).await.unwrap().len(), 1);
    assert_eq!(store.posts(&find("critic")).await.unwrap().len(), 1);
    assert_eq!(store.posts(&find("critic weak")).await.unwrap().len(), 0);
    // FTS operators and quotes in user text are plain words, not syntax errors.
    assert_eq!(
        store
            .posts(&find("critic\" OR NEAR(* AND"))
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(store.posts(&find("\"\"")).await.unwrap().len(), 0);
}

fn evaluation(id: i64, agent: &str, task: &str, predictions: Vec<u8>) -> EvaluationInsert {
    EvaluationInsert {
        record: EvaluationRecord {
            id,
            new: NewEvaluation {
                agent_id: agent.into(),
                task: task.into(),
                predictions_hash: format!("{id:064x}"),
                n_predictions: predictions.len() as i64,
                public_accuracy: 0.5,
                private_accuracy: None,
                released_accuracy: None,
                entry_id: None,
                seed: None,
                response: "{}".into(),
                created_at: 1000 + id,
            },
        },
        predictions,
    }
}

#[tokio::test]
async fn predictions_are_stored_packed_and_read_back_in_order() {
    let (_dir, store) = temp_store().await;
    add_agent(&store, "a").await;
    add_agent(&store, "b").await;
    let first: Vec<u8> = (0..13).map(|i| u8::from(i % 3 == 0)).collect();
    let second: Vec<u8> = (0..13).map(|i| u8::from(i % 2 == 0)).collect();
    let mut tx = store.begin_write().await.unwrap();
    tx.insert_evaluations(&[
        evaluation(1, "a", "math", first.clone()),
        evaluation(2, "b", "math", vec![1; 13]),
        evaluation(3, "a", "other", vec![0; 5]),
        evaluation(4, "a", "math", second.clone()),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let stored = store.evaluation_predictions("a", "math").await.unwrap();
    assert_eq!(
        stored,
        vec![
            StoredPredictions {
                evaluation_id: 1,
                created_at: 1001,
                predictions: first
            },
            StoredPredictions {
                evaluation_id: 4,
                created_at: 1004,
                predictions: second
            },
        ]
    );
    // Packed: 4 bytes of count and 2 of bits for 13 rows.
    let row = sqlx::query("SELECT LENGTH(predictions) FROM evaluations WHERE id = 1")
        .fetch_one(&store.reader)
        .await
        .unwrap();
    assert_eq!(row.try_get::<i64, _>(0).unwrap(), 6);
    assert!(
        store
            .evaluation_predictions("c", "math")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn quota_usage_counts_the_window_and_the_bytes() {
    let (_dir, store) = temp_store().await;
    add_agent(&store, "a").await;
    add_agent(&store, "b").await;
    let mut tx = store.begin_write().await.unwrap();
    for (agent, at) in [("a", 100), ("a", 5_000), ("a", 6_000), ("b", 7_000)] {
        tx.insert_entry(agent, "math", "m", &[1, 2, 3], None, None, at)
            .await
            .unwrap();
    }
    for (i, (agent, at, size)) in [("a", 100, 10), ("a", 5_000, 20), ("b", 5_000, 40)]
        .into_iter()
        .enumerate()
    {
        let record = SnapshotRecord {
            meta: SnapshotMeta {
                id: format!("{i:064x}"),
                agent_id: agent.into(),
                agent_name: String::new(),
                parent_id: None,
                message: "m".into(),
                size_bytes: size,
                file_count: 1,
                created_at: at,
            },
            archive: vec![0; size as usize],
        };
        assert!(tx.insert_snapshot(&record).await.unwrap());
    }
    let entries = tx.entry_usage("a", 1_000).await.unwrap();
    assert_eq!(
        entries,
        QuotaUsage {
            agent_total: 3,
            agent_recent: 2,
            oldest_recent: Some(5_000),
            campaign_total: 4,
            bytes: 0
        }
    );
    let snapshots = tx.snapshot_usage("a", 1_000).await.unwrap();
    assert_eq!(
        snapshots,
        QuotaUsage {
            agent_total: 2,
            agent_recent: 1,
            oldest_recent: Some(5_000),
            campaign_total: 3,
            bytes: 30
        }
    );
    let none = tx.entry_usage("c", 0).await.unwrap();
    assert_eq!((none.agent_total, none.oldest_recent), (0, None));
    assert_eq!(tx.ladder_epoch().await.unwrap(), 0);
    assert_eq!(tx.bump_ladder_epoch().await.unwrap(), 1);
    tx.commit().await.unwrap();
}

fn lease(id: &str, now: i64, expires_at: i64) -> NewLease {
    NewLease {
        lease_id: id.to_owned(),
        worker: format!("node-{id}"),
        now,
        expires_at,
        entry_id: None,
    }
}

async fn queued_entries(store: &Store, n: usize) -> Vec<i64> {
    add_agent(store, "a").await;
    let mut tx = store.begin_write().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = tx
            .insert_entry("a", "math", "m", &[1, 2, 3], None, None, i as i64)
            .await
            .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

#[tokio::test]
async fn a_claim_takes_the_oldest_queued_entry_once() {
    let (_dir, store) = temp_store().await;
    let ids = queued_entries(&store, 2).await;
    let mut tx = store.begin_write().await.unwrap();
    let first = tx.claim_verification(&lease("l1", 100, 200)).await.unwrap();
    let second = tx.claim_verification(&lease("l2", 100, 200)).await.unwrap();
    let none = tx.claim_verification(&lease("l3", 100, 200)).await.unwrap();
    tx.commit().await.unwrap();
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!((first.entry.id, second.entry.id), (ids[0], ids[1]));
    assert!(none.is_none(), "{none:?}");
    assert_eq!(first.entry.verification, VerificationState::Running);
    assert_eq!(
        first.lease,
        VerificationLease {
            lease_id: "l1".into(),
            worker: "node-l1".into(),
            expires_at: 200,
            started_at: 100,
            attempts: 1
        }
    );
    // The server's own verifier does not take a leased entry before its lease runs out.
    let mut tx = store.begin_write().await.unwrap();
    assert!(!tx.claim_local(ids[0], 150).await.unwrap());
    assert!(tx.claim_local(ids[1], 250).await.unwrap());
    tx.commit().await.unwrap();
    assert!(store.current_lease("l2", 150).await.unwrap().is_none());
}

#[tokio::test]
async fn leases_renew_run_out_and_requeue() {
    let (_dir, store) = temp_store().await;
    let ids = queued_entries(&store, 1).await;
    let mut tx = store.begin_write().await.unwrap();
    tx.claim_verification(&lease("l1", 100, 200)).await.unwrap();
    assert!(tx.extend_lease("l1", 150, 300).await.unwrap());
    assert!(!tx.extend_lease("nope", 150, 300).await.unwrap());
    assert!(tx.expired_leases(299).await.unwrap().is_empty());
    // Run out: never revived, listed as expired, then re-queued with its attempt counted.
    assert!(!tx.extend_lease("l1", 300, 400).await.unwrap());
    let expired = tx.expired_leases(300).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].entry.id, ids[0]);
    assert!(tx.requeue_lease("l1").await.unwrap());
    assert!(!tx.requeue_lease("l1").await.unwrap());
    let again = tx.claim_verification(&lease("l2", 400, 500)).await.unwrap();
    assert_eq!(again.unwrap().lease.attempts, 2);
    // Given back: queued again, the attempt not counted.
    assert_eq!(tx.release_lease("l2", 450).await.unwrap(), Some(ids[0]));
    assert_eq!(tx.release_lease("l2", 450).await.unwrap(), None);
    let third = tx.claim_verification(&lease("l3", 500, 600)).await.unwrap();
    assert_eq!(third.unwrap().lease.attempts, 2);
    // A finished verification ends the lease.
    tx.record_verification(&VerificationResult {
        entry_id: ids[0],
        state: VerificationState::Failed,
        error: Some("x".into()),
        runs: Vec::new(),
        flags: Vec::new(),
        released_accuracy: None,
        at: 550,
        seconds: 1.0,
    })
    .await
    .unwrap();
    assert!(tx.current_lease("l3", 550).await.unwrap().is_none());
    assert!(tx.expired_leases(10_000).await.unwrap().is_empty());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn unleased_running_entries_are_requeued_for_workers() {
    let (_dir, store) = temp_store().await;
    let ids = queued_entries(&store, 2).await;
    let mut tx = store.begin_write().await.unwrap();
    assert!(tx.claim_local(ids[0], 10).await.unwrap());
    tx.claim_verification(&lease("l1", 10, 1_000))
        .await
        .unwrap();
    assert_eq!(tx.requeue_unleased_runs().await.unwrap(), 1);
    tx.commit().await.unwrap();
    let entry = store.entry(ids[0]).await.unwrap().unwrap();
    assert_eq!(entry.verification, VerificationState::Queued);
    let leased = store.current_lease("l1", 20).await.unwrap().unwrap();
    assert_eq!(leased.entry.id, ids[1]);
}
