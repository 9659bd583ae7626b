//! What the tests that run `aar up` as a user would share.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// The `aar` binary under test.
pub fn aar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aar"))
}

/// `aar up` on the tiny preset with two researchers under `executor`, its server on
/// `127.0.0.1:port`, output piped (read it with [`collect`]).
pub fn up_command(home: &Path, name: &str, executor: &str, minutes: f64, port: u16) -> Command {
    let mut command = aar();
    command
        .args(["up", "--preset", "tiny", "--researchers", "2"])
        .args(["--executor", executor, "--minutes", &minutes.to_string()])
        .args(["--progress-seconds", "15", "--name", name])
        .arg(format!("--bind=127.0.0.1:{port}"))
        .arg("--home")
        .arg(home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The repository's `.aar` with the tiny preset's assets (as `tests/cli.rs` uses it).
pub fn tiny_home() -> PathBuf {
    let home = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.aar");
    let out = aar()
        .args([
            "assets",
            "fetch",
            "--only",
            "rotten-tomatoes",
            "minilm-l6-v2",
        ])
        .arg("--home")
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fetching the tiny preset's assets: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::absolute(home).unwrap()
}

/// A JSON file, or `None` while it does not exist (or is being written).
pub fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Collects a child's output lines while it runs.
pub fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for pipe in pipes {
        let text = text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
    }
    text
}

/// The researcher's active time so far, as its own ledger saved it (milliseconds).
pub fn active_ms(campaign: &Path, researcher: &str) -> u64 {
    let ledger = campaign.join(format!("agents/{researcher}/state/ledger.json"));
    read_json(&ledger)
        .and_then(|l| l["agents"][researcher]["active_ms"].as_u64())
        .unwrap_or(0)
}

/// The reasons of the researcher's sessions, in order (`start`, `resume`, ...).
pub fn session_reasons(campaign: &Path, researcher: &str) -> Vec<String> {
    let path = campaign.join(format!("agents/{researcher}/state/transcript.jsonl"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["kind"] == "session_start")
        .map(|event| event["reason"].as_str().unwrap_or("").to_owned())
        .collect()
}
