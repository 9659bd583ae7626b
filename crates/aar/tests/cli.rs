//! Runs the real `aar` binary, as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

fn aar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aar"))
        .args(args)
        .output()
        .expect("the aar binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn reference_report_from_the_embedded_cache_prints_published_baselines() {
    let out = aar(&["reference", "report"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "chat: W 0.5280",
        "S 0.7325",
        "math: W 0.5360",
        "S 0.7176",
        "code: W 0.5768",
        "S 0.6936",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let vanilla_chat = text
        .lines()
        .skip_while(|l| !l.starts_with("chat:"))
        .find(|l| l.trim_start().starts_with("vanilla_w2s"))
        .unwrap_or_default();
    assert!(vanilla_chat.contains(" 0.204 "), "{vanilla_chat}");
}

#[test]
fn reference_report_json_matches_the_table() {
    let out = aar(&["reference", "report", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let math = report["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == "math")
        .unwrap();
    let w = math["baselines"]["weak"]["mean"].as_f64().unwrap();
    assert!((w - 0.5360).abs() < 5e-5, "{w}");
}

#[test]
fn bad_arguments_and_missing_files_exit_2_with_a_named_cause() {
    let out = aar(&["reference", "report", "/nonexistent/cache.tar.gz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/cache.tar.gz"),
        "{}",
        stderr(&out)
    );

    let out = aar(&["reference", "report", "--seeds", "9-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid seed set"),
        "{}",
        stderr(&out)
    );
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

#[test]
fn tasks_check_names_the_bad_line_and_strip_drops_labels() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task");
    std::fs::create_dir(&task).unwrap();
    let row = r#"{"prompt":"p","first":"a","second":"b","label":"A","subset":"s"}"#;
    write(&task, "train_label.jsonl", &format!("{row}\n"));
    write(&task, "train_unlabel.jsonl", &format!("{row}\n{row}\n"));
    write(
        &task,
        "test.jsonl",
        &format!("{row}\n{}\n", row.replace("\"A\"", "\"Z\"")),
    );

    let out = aar(&["tasks", "check", task.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("test.jsonl:2: field `label` must be \"A\" or \"B\""),
        "{err}"
    );

    write(&task, "test.jsonl", &format!("{row}\n"));
    let out = aar(&["tasks", "check", task.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("comparison task"));

    let agent = dir.path().join("agent");
    let out = aar(&[
        "tasks",
        "strip",
        task.to_str().unwrap(),
        agent.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let copied = std::fs::read_to_string(agent.join("test.jsonl")).unwrap();
    assert!(
        !copied.contains("label") && !copied.contains("subset"),
        "{copied}"
    );
    assert!(!agent.join("train_label.jsonl").exists());
}

#[test]
fn run_method_rejects_an_unknown_method_before_reading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, r#"{"method": "read_the_labels"}"#).unwrap();
    let out = aar(&[
        "run-method",
        "--task",
        dir.path().to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        dir.path().join("p.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a method description"), "{stderr}");
}

#[test]
fn baselines_rejects_an_unknown_preset() {
    let out = aar(&["baselines", "--preset", "huge"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown preset"), "{stderr}");
}
