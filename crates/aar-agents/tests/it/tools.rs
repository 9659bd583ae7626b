//! The file tools stay in the workspace; the server tools reach the server.

use std::os::unix::fs::symlink;

use aar_agents::server_client::ServerClient;
use aar_agents::tools::{Notebook, ToolLimits, Toolbox, parse_predictions};
use serde_json::{Value, json};

use crate::agent::{admin, research_server};
use crate::support::{limits, mkdir, sandbox, tempdir};

fn toolbox(root: &std::path::Path, index: u32, server: Option<ServerClient>) -> Toolbox {
    Toolbox::new(
        sandbox(root, index, limits()),
        server,
        Notebook::new(root.join(format!("state-{index}/notebook.md")), 1000),
        ToolLimits::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn file_tools_refuse_every_way_out_of_the_workspace() {
    let root = tempdir();
    let outside = mkdir(root.path(), "outside");
    std::fs::write(outside.join("secret.txt"), "HOST-SECRET").unwrap();
    let tools = toolbox(root.path(), 0, None);
    let ws = tools.workspace().root().to_path_buf();
    symlink(&outside, ws.join("link-out")).unwrap();
    symlink(outside.join("secret.txt"), ws.join("file-out")).unwrap();
    symlink(outside.join("missing.txt"), ws.join("dangling-out")).unwrap();
    std::fs::create_dir(ws.join("sub")).unwrap();
    // Relative: the kernel's RESOLVE_BENEATH follows no absolute link, even one that
    // points inside (inside the sandbox the workspace is at /workspace, not this path).
    symlink("sub", ws.join("link-in")).unwrap();
    symlink(ws.join("sub"), ws.join("absolute-in")).unwrap();

    for path in [
        "/etc/passwd",
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        "link-out/secret.txt",
        "file-out",
        "/workspace/../outside/secret.txt",
        "absolute-in/deep/a.txt",
        "",
    ] {
        let out = tools.call("read_file", &json!({"path": path})).await;
        assert!(out.is_error, "read {path:?}: {out:?}");
        assert!(!out.content.contains("HOST-SECRET"));
    }
    for path in [
        "link-out/new.txt",
        "file-out",
        "dangling-out",
        "/tmp/x.txt",
        "../x.txt",
    ] {
        let out = tools
            .call("write_file", &json!({"path": path, "content": "x"}))
            .await;
        assert!(out.is_error, "write {path:?}: {out:?}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "something was written outside"
    );
    assert!(!root.path().join("x.txt").exists());

    // Inside, the tools work, through symlinks that stay inside too, and
    // agree with the shell about what is where.
    let out = tools
        .call(
            "write_file",
            &json!({"path": "link-in/deep/a.txt", "content": "alpha beta\n"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let out = tools
        .call(
            "edit_file",
            &json!({"path": "/workspace/sub/deep/a.txt", "old": "beta", "new": "gamma"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let out = tools
        .call(
            "shell",
            &json!({"command": "cat sub/deep/a.txt && echo more >> sub/deep/a.txt"}),
        )
        .await;
    assert!(out.content.contains("alpha gamma"), "{out:?}");
    let out = tools
        .call("read_file", &json!({"path": "sub/deep/a.txt"}))
        .await;
    assert_eq!(out.content, "alpha gamma\nmore\n");
    let out = tools
        .call(
            "edit_file",
            &json!({"path": "sub/deep/a.txt", "old": "absent", "new": "x"}),
        )
        .await;
    assert!(out.is_error && out.content.contains("0 times"), "{out:?}");
}

/// A FIFO the agent makes in its workspace (or swaps in for a file) would block a plain
/// `open` on the host forever: the file tools refuse it at once, and a snapshot skips it.
#[tokio::test]
async fn file_tools_refuse_fifos_without_blocking() {
    let root = tempdir();
    let tools = toolbox(root.path(), 0, None);
    let out = tools
        .call(
            "shell",
            &json!({"command": "mkfifo pipe && echo ok > a.txt && ln -s a.txt alias.txt"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let calls = [
        ("read_file", json!({"path": "pipe"}), "not a regular file"),
        ("write_file", json!({"path": "pipe", "content": "x"}), ""),
        (
            "edit_file",
            json!({"path": "pipe", "old": "a", "new": "b"}),
            "not a regular file",
        ),
    ];
    for (tool, input, says) in calls {
        let started = std::time::Instant::now();
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(10), tools.call(tool, &input))
                .await
                .unwrap_or_else(|_| panic!("{tool} {input} blocked"));
        assert!(
            out.is_error && out.content.contains(says),
            "{tool} {input}: {out:?}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{tool} {input}"
        );
    }
    for path in ["a.txt", "alias.txt"] {
        let out = tools.call("read_file", &json!({"path": path})).await;
        assert_eq!(out.content, "ok\n", "{path}");
    }
}

#[tokio::test]
async fn notebook_persists_and_is_capped() {
    let root = tempdir();
    let tools = toolbox(root.path(), 0, None);
    let out = tools.call("notebook_read", &json!({})).await;
    assert!(out.content.contains("empty"));
    assert!(
        !tools
            .call("notebook_update", &json!({"content": "one"}))
            .await
            .is_error
    );
    assert!(
        !tools
            .call(
                "notebook_update",
                &json!({"content": "two", "mode": "append"})
            )
            .await
            .is_error
    );
    assert_eq!(
        tools.call("notebook_read", &json!({})).await.content,
        "one\ntwo"
    );
    let big = "x".repeat(2000);
    let out = tools
        .call("notebook_update", &json!({"content": big}))
        .await;
    assert!(out.is_error, "{out:?}");
    // A new toolbox over the same state directory sees the same notebook.
    let again = toolbox(root.path(), 0, None);
    assert_eq!(again.notebook().read().unwrap(), "one\ntwo");
}

#[test]
fn predictions_parse_as_json_or_lines() {
    assert_eq!(parse_predictions("[1,0,1]").unwrap(), vec![1, 0, 1]);
    assert_eq!(parse_predictions("1\n0\n1\n").unwrap(), vec![1, 0, 1]);
    assert!(parse_predictions("[1,2]").is_err());
    assert!(parse_predictions("1 x").is_err());
}

#[tokio::test]
async fn forum_and_snapshot_tools_go_through_the_server() {
    let root = tempdir();
    let server = research_server(root.path(), &[1, 0, 1, 1]).await;
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let issued = admin(
            &server.base,
            reqwest::Method::POST,
            "/api/admin/agents",
            Some(json!({"name": name})),
        )
        .await;
        tokens.push(issued["token"].as_str().unwrap().to_owned());
    }
    let alice = toolbox(
        root.path(),
        0,
        Some(ServerClient::new(&server.base, &tokens[0]).unwrap()),
    );
    let bob = toolbox(
        root.path(),
        1,
        Some(ServerClient::new(&server.base, &tokens[1]).unwrap()),
    );

    let out = alice
        .call(
            "share_finding",
            &json!({"kind": "insight", "title": "Thresholds", "body": "confidence 0.8 filters noise", "task": "math"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let post: Value = serde_json::from_str(&out.content).unwrap();
    let id = post["id"]
        .as_i64()
        .unwrap_or_else(|| post["post_id"].as_i64().unwrap());
    let out = bob
        .call("search_findings", &json!({"query": "confidence"}))
        .await;
    assert!(out.content.contains("Thresholds"), "{out:?}");
    let out = bob.call("read_finding", &json!({"id": id})).await;
    assert!(out.content.contains("filters noise"), "{out:?}");
    let out = bob.call("leaderboard", &json!({"task": "math"})).await;
    assert!(!out.is_error, "{out:?}");
    let out = bob.call("list_tasks", &json!({})).await;
    assert!(out.content.contains("math"), "{out:?}");

    // Alice's snapshot: regular files only; a symlink to a host file is left out.
    let secret = mkdir(root.path(), "host").join("secret.txt");
    std::fs::write(&secret, "HOST-SECRET").unwrap();
    let ws = alice.workspace().root().to_path_buf();
    assert!(
        !alice
            .call(
                "write_file",
                &json!({"path": "method/train.py", "content": "print('hi')"})
            )
            .await
            .is_error
    );
    symlink(&secret, ws.join("method/leak.txt")).unwrap();
    let out = alice
        .call(
            "upload_snapshot",
            &json!({"path": "method", "message": "first method"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let meta: Value = serde_json::from_str(&out.content).unwrap();
    let snapshot = meta["snapshot_id"].as_str().unwrap();
    assert_eq!(meta["file_count"], json!(1), "{meta}");

    let out = bob
        .call(
            "download_snapshot",
            &json!({"id": snapshot, "dest": "from-alice"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let got = bob
        .call("read_file", &json!({"path": "from-alice/train.py"}))
        .await;
    assert_eq!(got.content, "print('hi')");
    let out = bob
        .call("shell", &json!({"command": "python3 from-alice/train.py"}))
        .await;
    assert!(out.content.contains("hi"), "{out:?}");
    assert!(!bob.workspace().root().join("from-alice/leak.txt").exists());
}
