//! The cluster path without a scheduler, as a user who schedules by hand runs it:
//! `aar up --executor manual` prints each researcher's command and the verification
//! workers' command; the test runs them as processes of their own (`aar researcher`,
//! `aar verify-worker`), which reach the server over HTTP only. One researcher is
//! killed (SIGKILL) mid-campaign and started again: it resumes from its saved state,
//! its budget continues, and every entry is verified by the worker process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use support::{active_ms, collect, read_json, session_reasons, tiny_home, up_command};

/// Each researcher's budget in this test, minutes.
const MINUTES: f64 = 1.5;

/// The command lines `aar up` printed for `names`, once it has printed them all.
fn printed_commands(output: &Mutex<String>, names: &[&str], up: &mut Child) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    loop {
        assert!(Instant::now() < deadline, "aar up printed no commands");
        assert!(up.try_wait().unwrap().is_none(), "aar up ended early");
        let text = output.lock().unwrap().clone();
        let found: Vec<Vec<String>> = names
            .iter()
            .filter_map(|name| {
                let line = text
                    .lines()
                    .find(|l| l.trim_start().starts_with(&format!("{name}: ")))?;
                let command = line.split_once(": ")?.1;
                Some(command.split_whitespace().map(str::to_owned).collect())
            })
            .collect();
        if found.len() == names.len() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start(command: &[String]) -> Child {
    assert!(
        command[0].ends_with("/aar"),
        "not an aar command: {command:?}"
    );
    Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[test]
fn researchers_and_verification_run_by_hand_as_processes_of_their_own() {
    let home = tiny_home();
    let name = format!("by-hand-{}", std::process::id());
    let campaign = home.join("campaigns").join(&name);
    let port = aar_testkit::free_port();
    let mut up = up_command(&home, &name, "manual", MINUTES, port)
        .spawn()
        .unwrap();
    let output: Arc<Mutex<String>> = collect(&mut up);
    let commands = printed_commands(
        &output,
        &[
            "researcher-1",
            "researcher-2",
            "verifications (one or more, left running)",
        ],
        &mut up,
    );
    for command in &commands {
        assert!(
            !command.iter().any(|a| a.starts_with("aar_")),
            "a token on a command line: {command:?}"
        );
    }
    let mut first = start(&commands[0]);
    let mut second = start(&commands[1]);
    let mut worker = start(&commands[2]);

    // researcher-1 dies without warning once it has used 20 s, and is started again.
    let deadline = Instant::now() + Duration::from_secs(10 * 60);
    while active_ms(&campaign, "researcher-1") < 20_000 {
        assert!(Instant::now() < deadline, "researcher-1 never got going");
        assert!(
            first.try_wait().unwrap().is_none(),
            "researcher-1 ended early"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let used_before = active_ms(&campaign, "researcher-1");
    let mut first = start(&commands[0]);

    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(10 * 60),
            "aar up did not finish"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let first_status = first.wait().unwrap();
    let second_status = second.wait().unwrap();
    worker.kill().unwrap();
    let _ = worker.wait();
    std::thread::sleep(Duration::from_millis(200));
    let output = output.lock().unwrap().clone();
    let report = read_json(&campaign.join("report/report.json"));
    let ledger = read_json(&campaign.join("ledger.json"));
    let sessions = session_reasons(&campaign, "researcher-1");
    let _ = std::fs::remove_dir_all(&campaign);
    assert!(status.success(), "aar up failed");
    // Each researcher's own process ends by itself once its budget is spent.
    assert!(first_status.success() && second_status.success());
    assert!(output.contains("manual executor: run each command below once"));

    // The restarted process resumed its transcript, and its budget continued.
    assert_eq!(sessions.first().map(String::as_str), Some("start"));
    assert!(sessions.iter().any(|r| r == "resume"), "{sessions:?}");
    let used_after = ledger.unwrap()["agents"]["researcher-1"]["active_ms"]
        .as_u64()
        .unwrap();
    let budget_ms = (MINUTES * 60_000.0) as u64;
    assert!(
        used_after >= used_before && used_after <= budget_ms + 20_000,
        "researcher-1 used {used_after} ms in all (budget {budget_ms}, {used_before} before the kill)"
    );

    // Every entry was verified, by the worker process: the server verifies nothing itself.
    let report = report.unwrap();
    let placements = report["placements"].as_array().unwrap();
    assert_eq!(placements.len(), 2);
    assert!(
        placements
            .iter()
            .all(|p| p["executor"] == "manual" && p["state"] == "finished"),
        "{placements:?}"
    );
    let entries = report["tasks"][0]["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "no entry: {report}");
    for entry in entries {
        assert!(
            matches!(entry["section"].as_str(), Some("ranked" | "flagged")),
            "not verified: {entry}"
        );
        assert!(entry["private_pgr"]["mean"].is_f64(), "{entry}");
    }
}
