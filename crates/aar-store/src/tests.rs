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
