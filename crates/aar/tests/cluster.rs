//! Cluster mode on a real single-node Slurm cluster (Debian's `slurm-wlm` and `munge`,
//! started by `scripts/slurm-local` in a temporary directory) and a real PostgreSQL:
//! `aar up --executor slurm` runs each researcher and each verification as a batch job;
//! one researcher's job is cancelled mid-campaign with `scancel`, and the campaign must
//! submit it again, resume it, lose no evaluation or entry, and not reset its budget.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{active_ms, collect, read_json, session_reasons, tiny_home, up_command};

/// Each researcher's budget in this test, minutes.
const MINUTES: f64 = 2.0;

/// Rows of one SQL query on the campaign's PostgreSQL, one string per row, or psql's
/// error (the tables exist only once the server has started).
fn try_sql(url: &str, query: &str) -> Result<Vec<String>, String> {
    let out = Command::new("psql")
        .args([url, "-At", "-c", query])
        .output()
        .expect("psql runs (Debian's postgresql-client)");
    if !out.status.success() {
        return Err(format!(
            "psql {query}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn sql(url: &str, query: &str) -> Vec<String> {
    try_sql(url, query).unwrap_or_else(|e| panic!("{e}"))
}

/// researcher-1's current job id once it has run for `wanted_ms` of its budget.
fn wait_for_progress(campaign: &Path, wanted_ms: u64, child: &mut Child) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    loop {
        assert!(Instant::now() < deadline, "researcher-1 never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "aar up ended before the fault was injected"
        );
        let used = active_ms(campaign, "researcher-1");
        let job = read_json(&campaign.join("slurm.json")).and_then(|jobs| {
            let last = jobs["researchers"]["researcher-1"]["jobs"]
                .as_array()?
                .last()?
                .clone();
            (last["state"] == "RUNNING").then(|| last["id"].as_str().map(str::to_owned))?
        });
        if let Some(job) = job
            && used >= wanted_ms
        {
            return (job, used);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Watches for an entry whose verification job holds it, kills that job's worker
/// with SIGKILL (as a crash or a lost node leaves it: it cannot give the entry back, so
/// only its lease running out can) and returns the entry's id; `None` if the campaign
/// ended (`over`) before one was seen. (`scancel`, even with `--signal=KILL`, sends
/// SIGTERM first, and the worker then gives the entry back at once.)
fn kill_a_running_verification(
    url: String,
    over: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<i64>> {
    std::thread::spawn(move || {
        while !over.load(Ordering::SeqCst) {
            let running = try_sql(
                &url,
                "SELECT id FROM entries WHERE verification = 'running' \
                 AND lease_worker LIKE '% slurm job %' ORDER BY id LIMIT 1",
            )
            .unwrap_or_default();
            if let Some(entry) = running.first() {
                let entry: i64 = entry.parse().unwrap();
                let pid = worker_pid(entry).expect("the worker holding the lease runs here");
                let kill = Command::new("kill").args(["-9", &pid]).output().unwrap();
                assert!(kill.status.success(), "kill -9 {pid}: {kill:?}");
                eprintln!("killed the verification worker of entry {entry} (pid {pid})");
                return Some(entry);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    })
}

/// The pid of `aar verify-worker ... --entry ENTRY`.
fn worker_pid(entry: i64) -> Option<String> {
    let wanted = [
        "verify-worker".to_owned(),
        "--entry".to_owned(),
        entry.to_string(),
    ];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|dir| {
        let pid = dir.file_name().to_string_lossy().into_owned();
        let cmdline = std::fs::read(dir.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let has = |w: &String| args.contains(w);
        (pid.chars().all(|c| c.is_ascii_digit()) && wanted.iter().all(has)).then_some(pid)
    })
}

#[test]
#[ignore = "needs root, a Slurm cluster (scripts/slurm-local installs Debian's slurm-wlm and munge) and PostgreSQL; run: cargo test -p aar --test cluster -- --ignored"]
fn a_slurm_campaign_survives_a_cancelled_researcher_job() {
    let pg = aar_testkit::Postgres::start();
    let slurm = aar_testkit::SlurmCluster::start();
    let home = tiny_home();
    let name = format!("cluster-{}", std::process::id());
    let campaign = home.join("campaigns").join(&name);
    let port = aar_testkit::free_port();
    let started = Instant::now();
    let mut child = up_command(&home, &name, "slurm", MINUTES, port)
        .args(["--database-url", &pg.url])
        .env("SLURM_CONF", &slurm.conf)
        .spawn()
        .unwrap();
    let output = collect(&mut child);
    // A verification job, once its entry is running under its lease: the entry must go
    // back to the queue and be verified by another job.
    let over = Arc::new(AtomicBool::new(false));
    let verification_fault = kill_a_running_verification(pg.url.clone(), over.clone());

    // Mid-campaign: cancel researcher-1's job once it has used 45 s of its budget.
    let (job, used_before) = wait_for_progress(&campaign, 45_000, &mut child);
    let evaluations_before = sql(&pg.url, "SELECT id FROM evaluations ORDER BY id");
    let entries_before = sql(&pg.url, "SELECT id FROM entries ORDER BY id");
    let cancel = slurm.command("scancel").arg(&job).output().unwrap();
    assert!(cancel.status.success(), "scancel {job}: {cancel:?}");
    eprintln!(
        "cancelled job {job} at {:.0} s: researcher-1 had used {used_before} ms, {} evaluations and {} entries in the store",
        started.elapsed().as_secs_f64(),
        evaluations_before.len(),
        entries_before.len()
    );

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30 * 60) {
            let _ = child.kill();
            panic!("aar up did not finish in 30 min\n{}", slurm.logs());
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    over.store(true, Ordering::SeqCst);
    let lost_entry = verification_fault
        .join()
        .unwrap()
        .expect("no verification worker was seen running");
    std::thread::sleep(Duration::from_millis(200));
    let after = Outcome::read(&campaign, &pg.url, &output, lost_entry);
    let _ = std::fs::remove_dir_all(&campaign);
    eprintln!("campaign took {:.0} s", started.elapsed().as_secs_f64());
    assert!(status.success(), "aar up failed\n{}", slurm.logs());
    let before = Before {
        job,
        used_ms: used_before,
        evaluations: evaluations_before,
        entries: entries_before,
    };
    the_cancelled_researcher_resumed(&before, &after);
    nothing_acknowledged_was_lost(&before, &after, lost_entry);
    the_report_says_where_researchers_ran(&after);
}

/// The store and researcher-1 when its job was cancelled.
struct Before {
    job: String,
    used_ms: u64,
    evaluations: Vec<String>,
    entries: Vec<String>,
}

/// What the campaign left.
struct Outcome {
    output: String,
    report: Value,
    report_md: String,
    jobs: Value,
    ledger: Value,
    verification_logs: usize,
    evaluations: Vec<String>,
    /// `id state` per entry.
    entries: Vec<String>,
    lost_entry_attempts: Vec<String>,
    sessions: Vec<String>,
}

impl Outcome {
    fn read(campaign: &Path, url: &str, output: &Mutex<String>, lost_entry: i64) -> Outcome {
        let verification_logs = std::fs::read_dir(campaign.join("oversight"))
            .map(|dir| {
                dir.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("slurm-"))
                    .count()
            })
            .unwrap_or(0);
        Outcome {
            output: output.lock().unwrap().clone(),
            report: read_json(&campaign.join("report/report.json")).unwrap_or_default(),
            report_md: std::fs::read_to_string(campaign.join("report/report.md"))
                .unwrap_or_default(),
            jobs: read_json(&campaign.join("slurm.json")).unwrap_or_default(),
            ledger: read_json(&campaign.join("ledger.json")).unwrap_or_default(),
            verification_logs,
            evaluations: sql(url, "SELECT id FROM evaluations ORDER BY id"),
            entries: sql(
                url,
                "SELECT id || ' ' || verification FROM entries ORDER BY id",
            ),
            lost_entry_attempts: sql(
                url,
                &format!("SELECT verification_attempts FROM entries WHERE id = {lost_entry}"),
            ),
            sessions: session_reasons(campaign, "researcher-1"),
        }
    }

    fn researcher_jobs(&self, name: &str) -> Vec<Value> {
        self.jobs["researchers"][name]["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The cancelled job was submitted again and resumed the researcher's own transcript
/// and budget; the other researcher's job ran through.
fn the_cancelled_researcher_resumed(before: &Before, after: &Outcome) {
    let first = after.researcher_jobs("researcher-1");
    assert!(
        first.len() >= 2,
        "researcher-1 was not submitted again: {first:?}"
    );
    assert_eq!(
        first[first.len() - 2]["id"],
        Value::from(before.job.clone())
    );
    assert_eq!(first.last().unwrap()["state"], "COMPLETED", "{first:?}");
    assert_eq!(after.researcher_jobs("researcher-2").len(), 1);
    let ended = format!("job {} ended CANCELLED", before.job);
    assert!(after.output.contains(&ended), "{}", after.output);
    assert!(
        after.output.contains("[slurm job "),
        "no placement in progress lines"
    );
    let sessions = &after.sessions;
    assert_eq!(
        sessions.first().map(String::as_str),
        Some("start"),
        "{sessions:?}"
    );
    assert!(sessions.iter().any(|r| r == "resume"), "{sessions:?}");
    let used_after = after.ledger["agents"]["researcher-1"]["active_ms"]
        .as_u64()
        .unwrap();
    let budget_ms = (MINUTES * 60_000.0) as u64;
    assert!(
        used_after >= before.used_ms && used_after <= budget_ms + 20_000,
        "researcher-1 used {used_after} ms in all (budget {budget_ms}, {} before the cancel)",
        before.used_ms
    );
}

/// Every evaluation and entry stored before the cancel is still there, every entry was
/// verified by a job, and the entry whose worker was killed was run again by a new job
/// once its lease ran out (a second claim).
fn nothing_acknowledged_was_lost(before: &Before, after: &Outcome, lost_entry: i64) {
    let ids: Vec<&str> = after
        .entries
        .iter()
        .map(|row| row.split(' ').next().unwrap())
        .collect();
    for id in &before.evaluations {
        assert!(after.evaluations.contains(id), "evaluation {id} lost");
    }
    for id in &before.entries {
        assert!(ids.contains(&id.as_str()), "entry {id} lost");
    }
    assert!(!after.entries.is_empty(), "no entry in the campaign");
    for row in &after.entries {
        assert!(row.ends_with(" verified"), "entry not verified: {row}");
    }
    assert!(
        after.verification_logs >= 2,
        "verifications did not run as slurm jobs"
    );
    assert_eq!(
        after.lost_entry_attempts,
        vec!["2".to_owned()],
        "entry {lost_entry}: attempts"
    );
}

/// The report: where each researcher ran, and the verified entries.
fn the_report_says_where_researchers_ran(after: &Outcome) {
    let report = &after.report;
    let placements = report["placements"].as_array().unwrap();
    assert_eq!(placements.len(), 2);
    let placed = placements
        .iter()
        .find(|p| p["researcher"] == "researcher-1")
        .unwrap();
    assert_eq!(placed["executor"], "slurm");
    let jobs = after.researcher_jobs("researcher-1").len();
    assert_eq!(placed["jobs"].as_array().unwrap().len(), jobs);
    assert!(placed["node"].is_string(), "{placed}");
    assert!(after.report_md.contains("## Where researchers ran"));
    let entries = report["tasks"][0]["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{report}");
    for entry in entries {
        assert!(
            matches!(entry["section"].as_str(), Some("ranked" | "flagged")),
            "not verified: {entry}"
        );
        assert!(entry["private_pgr"]["mean"].is_f64(), "{entry}");
    }
}
