//! Verified entries, played through the router: an entry is a snapshot the
//! server queues, a verifier re-runs per seed, the server stores, releases
//! through its author's Ladder and ranks. The verifier here is scripted
//! ([`ScriptedVerifier`]): it scores the predictions a "method" hard-codes in its
//! snapshot, which is what an attacker's method may do, so the tests plant exact
//! scores and exercise the server's real queue, storage, Ladder release and
//! leaderboard. The real, sandboxed verifier (`aar_oversight::SandboxedVerifier`:
//! sandboxes, label-free copies, probes) is tested in `crates/aar-oversight`.
//!
//! Each attack test fails if the attack recovers anything; the bisection and
//! boosting tests also run the same attack on the exact scores the admin sees,
//! and the leak scan checks that the admin's board holds what it looks for, to
//! show that each would fail if those values reached an agent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aar_core::noise::{CorrectRows, DEFAULT_RESAMPLES, pgr_difference, pgr_estimate};
use aar_store::VerificationRun;
use tar::EntryType::Regular;

use crate::tasks::RowOutcomes;

use super::*;
use crate::verify::{
    MAIN_VARIANT, PRIVATE_SPLIT, PUBLIC_SPLIT, ProbeFlag, TRANSFER_SPLIT, VerificationJob,
    VerificationOutcome, Verifier, VerifierHandle, VerifyFuture,
};

/// Rows of the private test split (odd sizes keep exact accuracies off round numbers).
const PRIVATE_N: usize = 487;
/// Rows of the transfer set.
const TRANSFER_N: usize = 419;
/// The Ladder step on [`N`] rows.
const STEP: f64 = 0.015;
/// The public test's weak baseline: nothing is released below it plus a step.
const WEAK: f64 = 0.65;

/// Labels of the three scored splits.
#[derive(Debug, Clone)]
struct SplitLabels {
    test: Vec<Label>,
    private: Vec<Label>,
    transfer: Vec<Label>,
    /// Whether the task pins the public test's per-row baseline outcomes (PGR errors
    /// with test noise: bootstraps, slow in a debug build, so only where tested).
    pinned_rows: bool,
}

impl SplitLabels {
    fn standard() -> SplitLabels {
        SplitLabels {
            test: labels(N, 1),
            private: labels(PRIVATE_N, 2),
            transfer: labels(TRANSFER_N, 3),
            pinned_rows: false,
        }
    }

    fn with_pinned_rows() -> SplitLabels {
        SplitLabels {
            pinned_rows: true,
            ..SplitLabels::standard()
        }
    }

    /// One seed's predictions, right on exactly the first `test`, `private` and `transfer` rows.
    fn scored(&self, test: usize, private: usize, transfer: usize) -> Value {
        json!({
            PUBLIC_SPLIT: to_u8(&predictions(&self.test, test)),
            PRIVATE_SPLIT: to_u8(&predictions(&self.private, private)),
            TRANSFER_SPLIT: to_u8(&predictions(&self.transfer, transfer)),
        })
    }
}

/// A test verifier: checks that a snapshot holds a method manifest, and scores the
/// predictions the method hard-codes (`predictions.json`: `{"<seed>" or "*":
/// {"test": [0|1..], "test_private": [..], "transfer": [..]}}`) against the
/// splits' labels, one run per declared seed and split; seeds the file names but
/// the entry did not declare are run as the real verifier's `undeclared_seed`
/// probe (public test only). Flags are planted by the test, per snapshot.
#[derive(Debug)]
struct ScriptedVerifier {
    labels: SplitLabels,
    /// Flags to raise, by snapshot id.
    flags: Mutex<HashMap<String, Vec<ProbeFlag>>>,
    /// When set, `verify` never finishes: a server killed while running an entry.
    hang: bool,
    /// Every job it was handed.
    jobs: Mutex<Vec<JobSeen>>,
}

/// (entry, agent, task, seeds, snapshot) of a job the verifier was handed.
type JobSeen = (i64, String, String, Vec<i64>, String);

impl ScriptedVerifier {
    fn new(labels: &SplitLabels) -> ScriptedVerifier {
        ScriptedVerifier {
            labels: labels.clone(),
            flags: Mutex::default(),
            hang: false,
            jobs: Mutex::default(),
        }
    }

    fn hanging(labels: &SplitLabels) -> ScriptedVerifier {
        ScriptedVerifier {
            hang: true,
            ..ScriptedVerifier::new(labels)
        }
    }

    fn flag(&self, snapshot_id: &str, flag: ProbeFlag) {
        self.flags
            .lock()
            .unwrap()
            .entry(snapshot_id.to_owned())
            .or_default()
            .push(flag);
    }

    fn jobs(&self) -> Vec<JobSeen> {
        self.jobs.lock().unwrap().clone()
    }

    fn split_labels(&self, split: &str) -> &[Label] {
        match split {
            PUBLIC_SPLIT => &self.labels.test,
            PRIVATE_SPLIT => &self.labels.private,
            _ => &self.labels.transfer,
        }
    }

    fn run(
        &self,
        job: &VerificationJob,
        seed: i64,
        variant: &str,
        split: &str,
        predictions: Option<&Value>,
    ) -> VerificationRun {
        let labels = self.split_labels(split);
        let raw = match predictions.and_then(|p| p.get(split)) {
            None => Err(format!(
                "seed {seed}: the method wrote no {split} predictions"
            )),
            Some(values) => {
                serde_json::from_value::<Vec<u8>>(values.clone()).map_err(|e| e.to_string())
            }
        };
        let scored = raw.clone().and_then(|p| {
            let p = p
                .into_iter()
                .map(|v| Label::try_from(v).map_err(|_| format!("prediction {v}")))
                .collect::<Result<Vec<Label>, String>>()?;
            aar_core::metrics::accuracy(&p, labels).map_err(|e| e.to_string())
        });
        let (accuracy, error, predictions) = match scored {
            Ok(a) => (Some(a.accuracy), None, raw.ok()),
            Err(e) => (None, Some(e), None),
        };
        VerificationRun {
            entry_id: job.entry_id,
            seed,
            variant: variant.to_owned(),
            split: split.to_owned(),
            accuracy,
            error,
            seconds: 0.25,
            predictions,
        }
    }

    fn score(&self, job: &VerificationJob) -> Result<VerificationOutcome, String> {
        let files = archive_files(&job.archive)?;
        let planted: BTreeMap<String, Value> = serde_json::from_slice(
            files
                .get("predictions.json")
                .ok_or("the method wrote no predictions")?,
        )
        .map_err(|e| format!("predictions.json: {e}"))?;
        let mut runs = Vec::new();
        for &seed in &job.seeds {
            let predictions = planted.get(&seed.to_string()).or_else(|| planted.get("*"));
            for split in [PUBLIC_SPLIT, PRIVATE_SPLIT, TRANSFER_SPLIT] {
                runs.push(self.run(job, seed, MAIN_VARIANT, split, predictions));
            }
        }
        for (key, predictions) in &planted {
            if let Ok(seed) = key.parse::<i64>()
                && !job.seeds.contains(&seed)
            {
                runs.push(self.run(
                    job,
                    seed,
                    "undeclared_seed",
                    PUBLIC_SPLIT,
                    Some(predictions),
                ));
            }
        }
        let flags = self
            .flags
            .lock()
            .unwrap()
            .get(&job.snapshot_id)
            .cloned()
            .unwrap_or_default();
        Ok(VerificationOutcome { runs, flags })
    }
}

impl Verifier for ScriptedVerifier {
    fn check_snapshot(&self, archive: &[u8]) -> Result<String, String> {
        let files = archive_files(archive)?;
        let manifest = files
            .get("aar-method.json")
            .ok_or("the snapshot is not a method directory: no aar-method.json")?;
        let manifest: Value = serde_json::from_slice(manifest)
            .map_err(|e| format!("aar-method.json: not valid JSON: {e}"))?;
        manifest["name"]
            .as_str()
            .filter(|n| !n.trim().is_empty())
            .map(str::to_owned)
            .ok_or_else(|| "aar-method.json: no name".to_owned())
    }

    fn verify(&self, job: VerificationJob) -> VerifyFuture {
        self.jobs.lock().unwrap().push((
            job.entry_id,
            job.agent_id.clone(),
            job.task.clone(),
            job.seeds.clone(),
            job.snapshot_id.clone(),
        ));
        if self.hang {
            return Box::pin(std::future::pending::<Result<VerificationOutcome, String>>());
        }
        Box::pin(std::future::ready(self.score(&job)))
    }
}

/// The regular files of a `.tar.gz`, by path.
fn archive_files(archive: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use std::io::Read;
    let mut files = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .display()
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        files.insert(path, data);
    }
    Ok(files)
}

/// A method directory as an agent uploads it: a manifest, a script, and the
/// predictions the method "computes" (hard-coded).
fn method_archive(name: &str, predictions: &Value) -> Vec<u8> {
    let manifest = json!({ "name": name, "command": ["python3", "method.py"] }).to_string();
    let predictions = predictions.to_string();
    tar_gz(&[
        (b"aar-method.json", Regular, manifest.as_bytes(), None),
        (
            b"method.py",
            Regular,
            b"print('see predictions.json')\n",
            None,
        ),
        (b"predictions.json", Regular, predictions.as_bytes(), None),
    ])
}

/// The task registry: `math` with a private split, and baselines for the private
/// split and the transfer set (so they have PGRs).
/// Public-test rows right per pinned seed: weak teacher, ceiling, vanilla (the weak
/// and ceiling counts are the registry's pinned accuracies times [`N`]).
const PINNED_RIGHT: [[usize; 3]; 3] = [[845, 858, 832], [1040, 1053, 1027], [901, 912, 897]];

/// Per-row outcomes right on the first `right` rows (how [`predictions`] builds them),
/// built here rather than by the server's scoring.
fn first_right(n: usize, right: usize) -> CorrectRows {
    CorrectRows::new((0..n).map(|i| i < right).collect())
}

/// The same on the private test, of [`PRIVATE_N`] rows (pinned with `pinned_rows`,
/// whose private baselines are these counts' accuracies).
const PINNED_PRIVATE_RIGHT: [[usize; 3]; 3] = [[281, 291, 287], [365, 375, 371], [300, 310, 305]];

/// The pinned weak, ceiling and vanilla outcomes of the public test.
fn public_outcomes() -> RowOutcomes {
    let [weak, ceiling, vanilla] = PINNED_RIGHT.map(|g| g.map(|r| first_right(N, r)).to_vec());
    let zeroshot = PINNED_ZEROSHOT_RIGHT.map(|r| first_right(N, r)).to_vec();
    RowOutcomes {
        weak,
        ceiling,
        vanilla,
        builtins: [("zeroshot".to_owned(), zeroshot)].into(),
    }
}

/// Right rows of a pinned built-in method (`zeroshot`) on the public test, per seed:
/// better than vanilla, so entries are compared with a second reference.
const PINNED_ZEROSHOT_RIGHT: [usize; 3] = [1030, 1035, 1040];

/// The pinned weak, ceiling and vanilla outcomes of the private test.
fn private_outcomes() -> RowOutcomes {
    let [weak, ceiling, vanilla] =
        PINNED_PRIVATE_RIGHT.map(|g| g.map(|r| first_right(PRIVATE_N, r)).to_vec());
    RowOutcomes {
        weak,
        ceiling,
        vanilla,
        builtins: Default::default(),
    }
}

/// The task; with `pinned_rows`, the public and private tests' baseline outcomes
/// pinned per row (PGR errors with test noise), the transfer set without (its errors
/// are the seeds' spread).
fn registry(labels: &SplitLabels) -> TaskRegistry {
    let fixed = |weak: [f64; 3], ceiling: [f64; 3]| {
        FixedBaselines::from_seed_accuracies(&weak, &ceiling).unwrap()
    };
    let registry = TaskRegistry::from_tasks(vec![ServerTask {
        name: "math".into(),
        test_labels: labels.test.clone(),
        private_labels: Some(labels.private.clone()),
        baselines: Some(fixed([0.65, 0.66, 0.64], [0.8, 0.81, 0.79])),
    }])
    .with_split_baselines(
        "math",
        PRIVATE_SPLIT,
        fixed([0.6, 0.62, 0.61], [0.77, 0.79, 0.78]),
    )
    .with_split_baselines(
        "math",
        TRANSFER_SPLIT,
        fixed([0.55, 0.57, 0.56], [0.71, 0.73, 0.72]),
    )
    .with_transfer_labels("math", labels.transfer.clone());
    if !labels.pinned_rows {
        return registry;
    }
    let accuracies = |right: [usize; 3]| right.map(|r| r as f64 / PRIVATE_N as f64);
    let [weak, ceiling, _] = PINNED_PRIVATE_RIGHT;
    registry
        .with_split_baselines(
            "math",
            PRIVATE_SPLIT,
            fixed(accuracies(weak), accuracies(ceiling)),
        )
        .with_outcomes("math", PUBLIC_SPLIT, public_outcomes())
        .with_outcomes("math", PRIVATE_SPLIT, private_outcomes())
}

/// Roomy evaluation budgets; the entry quotas' defaults (40 per agent in all)
/// except the hourly one, raised to the total: an attacker here spends its whole
/// entry budget at once, more than the 6 an hour it really gets.
fn entry_policy() -> Policy {
    Policy {
        budgets: Budgets {
            agent_per_hour: 10_000,
            agent_total: 10_000,
            campaign_per_hour: 100_000,
            campaign_total: 100_000,
        },
        quotas: Quotas {
            entries_per_agent_hour: Quotas::default().entries_per_agent,
            snapshots_per_agent_hour: 1000,
            ..Quotas::default()
        },
        ..Policy::default()
    }
}

/// A server with a (scripted) verifier over a fresh SQLite file.
struct World {
    _dir: tempfile::TempDir,
    url: String,
    app: Router,
    store: Store,
    labels: SplitLabels,
    verifier: Arc<ScriptedVerifier>,
}

/// The server's router over `store` with `verifier` (a start, or a restart).
fn serve_with(
    store: Store,
    labels: &SplitLabels,
    verifier: Arc<ScriptedVerifier>,
    concurrency: usize,
) -> Router {
    let handle = VerifierHandle {
        verifier,
        concurrency,
    };
    app(AppState::with_verifier(
        store,
        registry(labels),
        ADMIN,
        entry_policy(),
        Some(handle),
    ))
}

async fn world_with(labels: SplitLabels, verifier: ScriptedVerifier, concurrency: usize) -> World {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aar.db").display());
    let store = Store::connect(&url).await.unwrap();
    let verifier = Arc::new(verifier);
    let app = serve_with(store.clone(), &labels, verifier.clone(), concurrency);
    World {
        _dir: dir,
        url,
        app,
        store,
        labels,
        verifier,
    }
}

async fn world() -> World {
    let labels = SplitLabels::standard();
    let verifier = ScriptedVerifier::new(&labels);
    world_with(labels, verifier, 2).await
}

/// A world whose task pins the public test's per-row baseline outcomes.
async fn world_with_pinned_rows() -> World {
    let labels = SplitLabels::with_pinned_rows();
    let verifier = ScriptedVerifier::new(&labels);
    world_with(labels, verifier, 2).await
}

/// Uploads `archive` as `token`'s snapshot; its id.
async fn upload(app: &Router, token: &str, archive: Vec<u8>) -> String {
    let (status, meta) = send(
        app,
        "POST",
        "/api/snapshots?message=method",
        Some(token),
        Body::from(archive),
        false,
    )
    .await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "{status}: {meta}"
    );
    meta["snapshot_id"].as_str().unwrap().to_owned()
}

async fn enter(app: &Router, token: &str, snapshot_id: &str, seeds: &[i64]) -> (StatusCode, Value) {
    let body = json!({ "task": "math", "snapshot_id": snapshot_id, "seeds": seeds });
    call(app, "POST", "/api/entries", Some(token), Some(body)).await
}

/// Polls `GET /api/entries/{id}` (as `token`) until the verifier is done with it.
async fn wait_for_verification(app: &Router, token: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, entry) =
            call(app, "GET", &format!("/api/entries/{id}"), Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{entry}");
        if matches!(entry["verification"].as_str(), Some("verified" | "failed")) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "entry {id} was not verified within a minute: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls until entry `id` is in verification state `state`.
async fn wait_for_state(app: &Router, token: &str, id: i64, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, entry) = call(app, "GET", &format!("/api/entries/{id}"), Some(token), None).await;
        if entry["verification"] == state {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "entry {id} never became {state}: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Uploads a method predicting `predictions`, enters it with `seeds` and waits for
/// the verifier: the entry's id and what its author sees of it.
async fn enter_and_wait(
    app: &Router,
    token: &str,
    name: &str,
    predictions: &Value,
    seeds: &[i64],
) -> (i64, Value) {
    let snapshot = upload(app, token, method_archive(name, predictions)).await;
    let (status, created) = enter(app, token, &snapshot, seeds).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["entry_id"].as_i64().unwrap();
    (id, wait_for_verification(app, token, id).await)
}

async fn leaderboard(app: &Router, token: &str) -> Value {
    let (status, board) = call(app, "GET", "/api/leaderboard?task=math", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{board}");
    board
}

async fn admin_board(app: &Router) -> Value {
    let (status, board) = call(
        app,
        "GET",
        "/api/admin/leaderboard?task=math",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{board}");
    board
}

/// The row of entry `id` in any section of `board`, with the section's name.
fn find_row(board: &Value, id: i64) -> (String, Value) {
    for (section, rows) in board.as_object().unwrap() {
        if let Some(rows) = rows.as_array()
            && let Some(row) = rows.iter().find(|r| r["entry_id"] == id)
        {
            return (section.clone(), row.clone());
        }
    }
    panic!("entry {id} is not on the board: {board}")
}

/// The admin's exact mean accuracy of entry `id` on `split`.
fn exact_mean(admin_board: &Value, id: i64, split: &str) -> f64 {
    find_row(admin_board, id).1["admin"]["splits"][split]["accuracy"]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("no exact {split} accuracy for entry {id}: {admin_board}"))
}

#[track_caller]
fn assert_close(got: &Value, expected: f64) {
    let value = got
        .as_f64()
        .unwrap_or_else(|| panic!("{got} is not a number; expected {expected}"));
    assert!((value - expected).abs() < 1e-12, "{value} != {expected}");
}

/// `value` with each `(from, to)` string replaced (ids that differ between servers).
fn masked(value: &Value, replace: &[(&str, &str)]) -> Value {
    let mut text = value.to_string();
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap()
}

/// An entry as agents see it, without what names it (its id, snapshot and method name).
fn anonymous(entry: &Value) -> Value {
    let mut entry = entry.clone();
    for key in ["entry_id", "snapshot_id", "method"] {
        entry.as_object_mut().unwrap().remove(key);
    }
    entry
}

/// Pseudo-random numbers (xorshift), so every run plays the same attack.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bit(&mut self) -> bool {
        (self.next() >> 33) % 2 == 1
    }

    /// `k` distinct indices of `0..n`.
    fn choose(&mut self, n: usize, k: usize) -> BTreeSet<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            all.swap(i, j);
        }
        all.into_iter().take(k).collect()
    }
}

fn accuracy_of(predictions: &[u8], labels: &[Label]) -> f64 {
    let right = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as usize == l.index())
        .count();
    right as f64 / labels.len() as f64
}

// ---------------------------------------------------------------------------
// The entry flow.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn leaderboard_comes_from_declared_seeds_only() {
    let w = world_with_pinned_rows().await;
    let (a_id, a) = new_agent(&w.app, "a").await;
    let (_, b) = new_agent(&w.app, "b").await;
    // Agents see each fixed baseline's mean public-test accuracy, vanilla's among them:
    // the pinned vanilla runs got 901, 912 and 897 of N rows right.
    let (_, tasks) = call(&w.app, "GET", "/api/tasks", Some(&a), None).await;
    assert_close(
        &tasks["tasks"][0]["vanilla_baseline"],
        (901.0 + 912.0 + 897.0) / 3.0 / N as f64,
    );
    // Seed 99 is perfect, but the entry does not declare it: it must not count.
    let planted = json!({
        "11": w.labels.scored(1003, 311, 257),
        "12": w.labels.scored(1013, 318, 263),
        "13": w.labels.scored(1024, 326, 271),
        "99": w.labels.scored(N, PRIVATE_N, TRANSFER_N),
    });
    let snapshot = upload(&w.app, &a, method_archive("confidence filter", &planted)).await;
    // Seeds are checked before anything is stored.
    for seeds in [
        vec![11, 11, 12],
        vec![11, 12],
        vec![-1, 11, 12],
        vec![11, 12, 2_000_000],
    ] {
        let (status, refusal) = enter(&w.app, &a, &snapshot, &seeds).await;
        assert_eq!(
            (status, refusal["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_seeds")),
            "{seeds:?}: {refusal}"
        );
    }
    assert!(w.store.all_entries().await.unwrap().is_empty());

    let (status, created) = enter(&w.app, &a, &snapshot, &[13, 11, 12]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["verification"], "queued");
    assert_eq!(
        created["method"], "confidence filter",
        "the manifest's name"
    );
    assert_eq!(created["seeds"], json!([11, 12, 13]));
    let id = created["entry_id"].as_i64().unwrap();
    let entry = wait_for_verification(&w.app, &a, id).await;
    assert_eq!(entry["verification"], "verified", "{entry}");
    assert_eq!(
        w.verifier.jobs(),
        vec![(
            id,
            a_id.clone(),
            "math".to_owned(),
            vec![11, 12, 13],
            snapshot.clone()
        )],
        "the verifier runs the declared seeds of the named snapshot for its author"
    );

    // Agents see the Ladder's release only: the exact mean (1003 + 1013 + 1024) / 3900
    // = 0.77949 rounded to the step, 0.78, and its PGR (0.78 - 0.65) / 0.15.
    assert_eq!(entry["released_accuracy"], json!(0.78), "{entry}");
    assert_eq!(entry["released_pgr"], json!(0.867), "{entry}");
    for hidden in [
        "admin",
        PRIVATE_SPLIT,
        TRANSFER_SPLIT,
        "accuracy",
        "per_seed",
    ] {
        assert!(entry.get(hidden).is_none(), "agents see {hidden}: {entry}");
    }
    let (_, seen_by_b) = call(&w.app, "GET", &format!("/api/entries/{id}"), Some(&b), None).await;
    assert_eq!(seen_by_b, entry, "every agent sees the same entry");
    let board = leaderboard(&w.app, &b).await;
    assert_eq!(board["ranked"], json!([entry]), "{board}");
    for section in [
        "verified_unreleased",
        "pending",
        "failed",
        "flagged",
        "disqualified",
    ] {
        assert_eq!(board[section], json!([]), "{section}: {board}");
    }

    // The admin sees exact scores of every split, over the declared seeds only.
    let admin = admin_board(&w.app).await;
    let (section, row) = find_row(&admin, id);
    assert_eq!(section, "ranked");
    let splits = &row["admin"]["splits"];
    let per_seed = |counts: [usize; 3], n: usize| counts.map(|c| c as f64 / n as f64);
    for (split, counts, n) in [
        (PUBLIC_SPLIT, [1003, 1013, 1024], N),
        (PRIVATE_SPLIT, [311, 318, 326], PRIVATE_N),
        (TRANSFER_SPLIT, [257, 263, 271], TRANSFER_N),
    ] {
        let values = per_seed(counts, n);
        assert_close(
            &splits[split]["accuracy"]["mean"],
            values.iter().sum::<f64>() / 3.0,
        );
        for (got, want) in splits[split]["per_seed"]
            .as_array()
            .unwrap()
            .iter()
            .zip(values)
        {
            assert_close(got, want);
        }
        let baselines = registry(&w.labels).baselines("math", split).unwrap();
        let pgr = baselines.pgr_over_seeds(&values).unwrap();
        assert!(
            (splits[split]["pgr"]["mean"].as_f64().unwrap() - pgr.mean).abs() < 1e-9,
            "{split}: {row}"
        );
        if split == TRANSFER_SPLIT {
            // No per-row outcomes pinned: the seeds' spread only, and no comparison.
            assert_close(&splits[split]["pgr"]["se"], pgr.se.unwrap());
            assert_eq!(splits[split]["pgr"]["se_test"], Value::Null, "{row}");
            assert_eq!(splits[split]["vs_vanilla"], Value::Null, "{row}");
        }
    }
    // The public test is scored per row against the pinned baselines' rows: the PGR,
    // its errors and the comparison with vanilla are aar-core's, on rows built here.
    let method: Vec<CorrectRows> = [1003, 1013, 1024].map(|r| first_right(N, r)).to_vec();
    let pinned = public_outcomes();
    let seed = crate::scores::bootstrap_seed(id);
    let want = pgr_estimate(&pinned.runs(), &method, DEFAULT_RESAMPLES, seed).unwrap();
    let got = &splits[PUBLIC_SPLIT]["pgr"];
    assert!(
        (got["mean"].as_f64().unwrap() - want.pgr).abs() < 1e-12,
        "{got}"
    );
    assert_close(&got["se"], want.se);
    assert_close(&got["se_test"], want.se_test);
    assert_close(&got["se_seeds"], want.se_seeds.unwrap());
    assert_eq!(got["rows"], N, "{got}");
    assert!(
        want.se_test > 0.01 && want.se > want.se_seeds.unwrap(),
        "{want:?}"
    );
    let vs = pgr_difference(
        &pinned.runs(),
        &method,
        &pinned.vanilla,
        DEFAULT_RESAMPLES,
        seed,
    )
    .unwrap();
    let got = &splits[PUBLIC_SPLIT]["vs_vanilla"];
    assert_close(&got["difference"], vs.difference);
    assert_close(&got["se"], vs.se);
    assert_eq!(got["significant"], vs.significant, "{got}");
    assert_eq!(got["describe"], vs.describe(), "{got}");
    // Hand check: (mean 1013.33 - 903.33 vanilla) / (1040 - 845) right rows.
    assert!((vs.difference - 110.0 / 195.0).abs() < 1e-9, "{vs:?}");
    assert!(vs.significant, "{}", vs.describe());
    // Every other pinned built-in gets the same paired comparison, by name.
    let zeroshot = PINNED_ZEROSHOT_RIGHT.map(|r| first_right(N, r)).to_vec();
    let vs = pgr_difference(&pinned.runs(), &method, &zeroshot, DEFAULT_RESAMPLES, seed).unwrap();
    let got = &splits[PUBLIC_SPLIT]["vs_builtins"];
    assert_eq!(got.as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(got[0]["against"], "zeroshot", "{got}");
    assert_close(&got[0]["difference"], vs.difference);
    assert_close(&got[0]["se"], vs.se);
    assert_eq!(got[0]["significant"], vs.significant, "{got}");
    // Hand check: (1013.33 - 1035) / 195 right rows.
    assert!((vs.difference + 65.0 / 3.0 / 195.0).abs() < 1e-9, "{vs:?}");
    // No built-in pinned on the private test: none compared there.
    assert_eq!(splits[PRIVATE_SPLIT]["vs_builtins"], json!([]), "{row}");
    // The same number twice: the bootstrap is seeded by the entry id.
    let again = admin_board(&w.app).await;
    assert_eq!(
        find_row(&again, id).1["admin"]["splits"][PUBLIC_SPLIT],
        splits[PUBLIC_SPLIT]
    );
    // The undeclared seed's run is the admin's evidence, not a score.
    let variants = &row["admin"]["variants"];
    assert_eq!(variants[0]["variant"], "undeclared_seed", "{row}");
    assert_eq!(variants[0]["accuracies"], json!([1.0]), "{row}");
    let (_, admin_entry) = call(
        &w.app,
        "GET",
        &format!("/api/entries/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(admin_entry["admin"]["splits"], *splits);

    // Review: a disqualified entry leaves the ranking, with its reason.
    let uri = format!("/api/admin/entries/{id}/disqualify");
    let reason = Some(json!({ "reason": "read labels" }));
    assert_eq!(
        call(&w.app, "POST", &uri, Some(&a), reason.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&w.app, "POST", &uri, Some(ADMIN), reason).await.0,
        StatusCode::OK
    );
    let board = leaderboard(&w.app, &a).await;
    assert_eq!(board["ranked"], json!([]), "{board}");
    assert_eq!(board["disqualified"][0]["entry_id"], id);
    assert_eq!(board["disqualified"][0]["status_reason"], "read labels");
    let admin = admin_board(&w.app).await;
    assert_eq!(admin["ranked"], json!([]), "{admin}");
    assert_eq!(find_row(&admin, id).0, "disqualified");

    let (_, audit) = call(
        &w.app,
        "GET",
        "/api/admin/audit?limit=1000",
        Some(ADMIN),
        None,
    )
    .await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in [
        "create_entry",
        "verify_entry",
        "release_entry",
        "review_disqualify",
    ] {
        assert_eq!(
            actions.iter().filter(|a| **a == action).count(),
            1,
            "{action}: {actions:?}"
        );
    }
    assert!(
        !actions.contains(&"evaluate"),
        "an entry is never an evaluation: {actions:?}"
    );
    let (_, verify) = call(&w.app, "GET", "/api/admin/audit/verify", Some(ADMIN), None).await;
    assert_eq!(verify["status"], "intact", "{verify}");
}

#[tokio::test]
async fn a_flagged_entry_waits_for_review_and_approval_ranks_it() {
    let w = world().await;
    let (b_id, b) = new_agent(&w.app, "b").await;
    let planted = json!({ "*": w.labels.scored(1100, 300, 250) });
    let snapshot = upload(&w.app, &b, method_archive("suspicious", &planted)).await;
    w.verifier.flag(
        &snapshot,
        ProbeFlag {
            probe: "teacher_ablation".into(),
            summary: "PGR survives a shuffled teacher".into(),
            evidence: json!({ "main_pgr": 1.3077, "shuffled_teacher_pgr": 1.2511 }),
            about_agent: false,
        },
    );
    w.verifier.flag(
        &snapshot,
        ProbeFlag {
            probe: "oracle_probing".into(),
            summary: "near-duplicate submissions".into(),
            evidence: json!({ "pairs": 7 }),
            about_agent: true,
        },
    );
    let (status, created) = enter(&w.app, &b, &snapshot, &[1, 2, 3]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["entry_id"].as_i64().unwrap();
    let entry = wait_for_verification(&w.app, &b, id).await;
    // A probe's flag can depend on held-out labels: agents see the entry as `ok` until a
    // person decides; the admin sees it flagged and out of the ranking.
    assert_eq!(
        (entry["verification"].as_str(), entry["status"].as_str()),
        (Some("verified"), Some("ok"))
    );
    let board = leaderboard(&w.app, &b).await;
    assert_eq!(board["flagged"], json!([]), "{board}");
    assert!(
        !board.to_string().contains("shuffled"),
        "agents see a probe's evidence: {board}"
    );
    let (_, admin_board) = call(
        &w.app,
        "GET",
        "/api/admin/leaderboard?task=math",
        Some(ADMIN),
        None,
    )
    .await;
    let in_section = |section: &str| {
        admin_board[section]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["entry_id"] == id))
    };
    assert!(
        in_section("flagged") && !in_section("ranked"),
        "a flagged entry is not ranked: {admin_board}"
    );

    let (status, _) = call(&w.app, "GET", "/api/admin/review", Some(&b), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, review) = call(&w.app, "GET", "/api/admin/review", Some(ADMIN), None).await;
    let item = &review["flagged_entries"][0];
    assert_eq!(item["entry_id"], id, "{review}");
    let probes: BTreeSet<&str> = item["admin"]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["probe"].as_str().unwrap())
        .collect();
    assert_eq!(
        probes,
        BTreeSet::from(["teacher_ablation", "oracle_probing"]),
        "{item}"
    );
    assert_eq!(
        item["admin"]["flags"][0]["evidence"]["shuffled_teacher_pgr"],
        json!(1.2511)
    );
    assert_eq!(
        review["agent_flags"][0]["agent_id"],
        b_id.as_str(),
        "{review}"
    );

    let uri = format!("/api/admin/entries/{id}/approve");
    let reason = Some(json!({ "reason": "the teacher ablation is explained in post 1" }));
    assert_eq!(
        call(&w.app, "POST", &uri, Some(&b), reason.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, approved) = call(&w.app, "POST", &uri, Some(ADMIN), reason).await;
    assert_eq!(
        (status, approved["status"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{approved}"
    );
    let board = leaderboard(&w.app, &b).await;
    assert_eq!(board["flagged"], json!([]), "{board}");
    let (section, row) = find_row(&board, id);
    // Approval is not shown to agents either: it would tell which entries were flagged.
    assert_eq!(
        (section.as_str(), row["status"].as_str()),
        ("ranked", Some("ok")),
        "{board}"
    );
    // 1100 / 1300 = 0.846 rounded to the step.
    assert_eq!(row["released_accuracy"], json!(0.84), "{row}");
    let (_, review) = call(&w.app, "GET", "/api/admin/review", Some(ADMIN), None).await;
    assert_eq!(review["flagged_entries"], json!([]), "{review}");
}

#[tokio::test]
async fn private_scores_are_shown_to_owners_only_after_the_campaign_closes() {
    let w = world().await;
    let (_, a) = new_agent(&w.app, "a").await;
    let (_, b) = new_agent(&w.app, "b").await;
    // Same public predictions; a is right on every private row, b on half; transfer differs too.
    let half = PRIVATE_N / 2;
    let (entry_a, _) = enter_and_wait(
        &w.app,
        &a,
        "m",
        &json!({ "*": w.labels.scored(1100, PRIVATE_N, 301) }),
        &[1, 2, 3],
    )
    .await;
    let (entry_b, _) = enter_and_wait(
        &w.app,
        &b,
        "m",
        &json!({ "*": w.labels.scored(1100, half, 203) }),
        &[1, 2, 3],
    )
    .await;

    // Open campaign: nobody but the admin sees a private or transfer score.
    for token in [&a, &b] {
        let board = leaderboard(&w.app, token).await;
        assert_eq!(board["campaign_closed"], false);
        for entry in [entry_a, entry_b] {
            let (section, row) = find_row(&board, entry);
            assert_eq!(section, "ranked");
            assert_eq!(row["released_accuracy"], json!(0.84), "{row}");
            for hidden in [PRIVATE_SPLIT, TRANSFER_SPLIT, "admin"] {
                assert!(
                    row.get(hidden).is_none(),
                    "{hidden} shown while open: {board}"
                );
            }
        }
    }
    let reveal = admin_board(&w.app).await;
    assert_close(
        &find_row(&reveal, entry_a).1["admin"]["splits"][PRIVATE_SPLIT]["accuracy"]["mean"],
        1.0,
    );
    assert_close(
        &find_row(&reveal, entry_b).1["admin"]["splits"][PRIVATE_SPLIT]["accuracy"]["mean"],
        half as f64 / PRIVATE_N as f64,
    );
    assert_close(
        &find_row(&reveal, entry_b).1["admin"]["splits"][TRANSFER_SPLIT]["accuracy"]["mean"],
        203.0 / TRANSFER_N as f64,
    );
    // The admin ranks by held-out PGR: a first although the public scores tie.
    assert_eq!(reveal["ranked"][0]["entry_id"], entry_a, "{reveal}");

    let (status, _) = call(&w.app, "POST", "/api/admin/campaign/close", Some(&a), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an agent closed the campaign"
    );
    let (status, closed) = call(
        &w.app,
        "POST",
        "/api/admin/campaign/close",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    let (_, again) = call(
        &w.app,
        "POST",
        "/api/admin/campaign/close",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        again["closed_at"], closed["closed_at"],
        "closing twice moved the time"
    );
    let (_, campaign) = call(&w.app, "GET", "/api/campaign", Some(&b), None).await;
    assert_eq!(campaign["closed"], true);

    // Closed: each agent sees the private and transfer scores of its own entries, not the others'.
    for (token, own, own_private, own_transfer, other) in [
        (&a, entry_a, 1.0, 301.0 / TRANSFER_N as f64, entry_b),
        (
            &b,
            entry_b,
            half as f64 / PRIVATE_N as f64,
            203.0 / TRANSFER_N as f64,
            entry_a,
        ),
    ] {
        let board = leaderboard(&w.app, token).await;
        assert_eq!(board["campaign_closed"], true);
        let row = find_row(&board, own).1;
        assert_close(&row[PRIVATE_SPLIT]["accuracy"]["mean"], own_private);
        assert_close(&row[TRANSFER_SPLIT]["accuracy"]["mean"], own_transfer);
        let theirs = find_row(&board, other).1;
        for hidden in [PRIVATE_SPLIT, TRANSFER_SPLIT, "admin"] {
            assert!(
                theirs.get(hidden).is_none(),
                "another's {hidden} shown: {board}"
            );
        }
        // The entry detail stays the public view.
        let (_, detail) = call(
            &w.app,
            "GET",
            &format!("/api/entries/{other}"),
            Some(token),
            None,
        )
        .await;
        assert!(
            detail.get(PRIVATE_SPLIT).is_none() && detail.get("admin").is_none(),
            "{detail}"
        );
    }
    // And nothing more is evaluated or entered, so the private split cannot be probed.
    let (status, refusal) = evaluate(&w.app, &a, &to_u8(&w.labels.test)).await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("campaign_closed"))
    );
    let late = upload(
        &w.app,
        &b,
        method_archive("late", &json!({ "*": w.labels.scored(1200, 400, 300) })),
    )
    .await;
    let (status, refusal) = enter(&w.app, &b, &late, &[1, 2, 3]).await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("campaign_closed")),
        "{refusal}"
    );
    assert_eq!(w.store.evaluation_count().await.unwrap(), 0);
    assert_eq!(w.store.all_entries().await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_entry_needs_a_method_manifest_and_a_server_with_a_verifier() {
    let w = world().await;
    let (_, a) = new_agent(&w.app, "a").await;
    let manifest_less = tar_gz(&[(b"README.md", Regular, b"my method", None)]);
    let not_json = tar_gz(&[(b"aar-method.json", Regular, b"{name: x", None)]);
    let nameless = tar_gz(&[(
        b"aar-method.json",
        Regular,
        br#"{"command": ["true"]}"#,
        None,
    )]);
    for (archive, mentions) in [
        (manifest_less, "aar-method.json"),
        (not_json, "not valid JSON"),
        (nameless, "no name"),
    ] {
        let snapshot = upload(&w.app, &a, archive).await;
        let (status, refusal) = enter(&w.app, &a, &snapshot, &[1, 2, 3]).await;
        assert_eq!(
            (status, refusal["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_method")),
            "{refusal}"
        );
        assert!(
            refusal["error"]["message"]
                .as_str()
                .unwrap()
                .contains(mentions),
            "{refusal}"
        );
    }
    let (status, refusal) = enter(&w.app, &a, &"0".repeat(64), &[1, 2, 3]).await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let good = upload(
        &w.app,
        &a,
        method_archive("m", &json!({ "*": w.labels.scored(1000, 300, 200) })),
    )
    .await;
    let body = json!({ "task": "nope", "snapshot_id": good, "seeds": [1, 2, 3] });
    let (status, refusal) = call(&w.app, "POST", "/api/entries", Some(&a), Some(body)).await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_task"))
    );
    let body = json!({ "task": "math", "snapshot_id": good, "seeds": [1, 2, 3], "post_id": 4242 });
    let (status, _) = call(&w.app, "POST", "/api/entries", Some(&a), Some(body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A score is no field of an entry.
    let body = json!({ "task": "math", "snapshot_id": good, "seeds": [1, 2, 3], "accuracy": 0.99 });
    let (status, _) = call(&w.app, "POST", "/api/entries", Some(&a), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        w.store.all_entries().await.unwrap().is_empty(),
        "a refused entry was stored"
    );
    assert!(w.verifier.jobs().is_empty());

    // A server without a verifier takes no entry (it could never rank it).
    let bare = harness(roomy()).await;
    let (_, token) = new_agent(&bare.app, "a").await;
    let snapshot = upload(&bare.app, &token, method_archive("m", &json!({}))).await;
    let (status, refusal) = enter(&bare.app, &token, &snapshot, &[1, 2, 3]).await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_verifier")),
        "{refusal}"
    );
    assert!(bare.store.all_entries().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_method_is_shown_failed_and_never_ranked() {
    let w = world().await;
    let (_, a) = new_agent(&w.app, "a").await;
    // No predictions at all: the verification fails.
    let snapshot = upload(
        &w.app,
        &a,
        tar_gz(&[(b"aar-method.json", Regular, br#"{"name": "crash"}"#, None)]),
    )
    .await;
    let (_, created) = enter(&w.app, &a, &snapshot, &[1, 2, 3]).await;
    let crashed = wait_for_verification(&w.app, &a, created["entry_id"].as_i64().unwrap()).await;
    assert_eq!(crashed["verification"], "failed", "{crashed}");
    // The author sees that it failed, never the run's output (it ran on data the author
    // never saw); the admin sees why.
    assert!(
        crashed["verification_error"]
            .as_str()
            .is_some_and(|e| e.contains("aar method check") && !e.contains("predictions")),
        "{crashed}"
    );
    let crashed_id = created["entry_id"].as_i64().unwrap();
    let (_, admin_view) = call(
        &w.app,
        "GET",
        &format!("/api/entries/{crashed_id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        admin_view["verification_error"],
        "the method wrote no predictions"
    );
    assert_eq!(crashed["released_accuracy"], Value::Null);
    // One seed without predictions: verified, but its public split is unscored, so nothing is released.
    let (partial, entry) = enter_and_wait(
        &w.app,
        &a,
        "partial",
        &json!({ "1": w.labels.scored(1200, 400, 300), "2": w.labels.scored(1200, 400, 300) }),
        &[1, 2, 3],
    )
    .await;
    assert_eq!(
        (
            entry["verification"].as_str(),
            entry["released_accuracy"].as_f64()
        ),
        (Some("verified"), None),
        "{entry}"
    );
    let board = leaderboard(&w.app, &a).await;
    assert_eq!(board["ranked"], json!([]), "{board}");
    assert_eq!(board["failed"], json!([crashed]), "{board}");
    assert_eq!(find_row(&board, partial).0, "verified_unreleased");
    let admin = admin_board(&w.app).await;
    assert_eq!(
        find_row(&admin, partial).1["admin"]["splits"][PUBLIC_SPLIT],
        Value::Null,
        "{admin}"
    );
    assert_eq!(
        find_row(&admin, partial).1["admin"]["errors"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{admin}"
    );
}

#[tokio::test]
async fn entries_queued_or_running_are_verified_after_a_restart() {
    let labels = SplitLabels::standard();
    // The first server's verifier never finishes (the process dies mid-run) and runs one entry at a time.
    let w = world_with(labels.clone(), ScriptedVerifier::hanging(&labels), 1).await;
    let (_, a) = new_agent(&w.app, "a").await;
    let mut ids = Vec::new();
    for (name, right) in [("first", 1003), ("second", 1100)] {
        let snapshot = upload(
            &w.app,
            &a,
            method_archive(name, &json!({ "*": labels.scored(right, 300, 200) })),
        )
        .await;
        let (status, created) = enter(&w.app, &a, &snapshot, &[1, 2, 3]).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["entry_id"].as_i64().unwrap());
    }
    wait_for_state(&w.app, &a, ids[0], "running").await;
    let (_, second) = call(
        &w.app,
        "GET",
        &format!("/api/entries/{}", ids[1]),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(second["verification"], "queued", "{second}");
    let board = leaderboard(&w.app, &a).await;
    assert_eq!(board["pending"].as_array().unwrap().len(), 2, "{board}");
    assert_eq!(board["ranked"], json!([]));
    // The state is committed before the verifier is called: wait for the call.
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.verifier.jobs().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first server never ran its verifier"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(w.verifier.jobs().len(), 1, "one entry at a time");

    // A restart: another server on the same database file, with a verifier that finishes.
    let store = Store::connect(&w.url).await.unwrap();
    let verifier = Arc::new(ScriptedVerifier::new(&labels));
    let restarted = serve_with(store, &labels, verifier.clone(), 1);
    let first = wait_for_verification(&restarted, &a, ids[0]).await;
    let second = wait_for_verification(&restarted, &a, ids[1]).await;
    let picked: Vec<i64> = verifier.jobs().iter().map(|j| j.0).collect();
    assert_eq!(
        picked, ids,
        "the running entry and the queued one, oldest first"
    );
    // Oldest first through the Ladder: 1003 / 1300 = 0.7715 releases 0.765, then 0.846 releases 0.84.
    assert_eq!(first["released_accuracy"], json!(0.765), "{first}");
    assert_eq!(second["released_accuracy"], json!(0.84), "{second}");
    let board = leaderboard(&restarted, &a).await;
    assert_eq!(board["pending"], json!([]), "{board}");
    assert_eq!(board["ranked"][0]["entry_id"], ids[1], "{board}");
    assert_eq!(
        w.verifier.jobs().len(),
        1,
        "the dead server ran nothing more"
    );
}

// ---------------------------------------------------------------------------
// Attacks through entries.
// ---------------------------------------------------------------------------

/// Sylvester's Hadamard matrix of order 32 (rows are orthogonal +-1 vectors).
fn hadamard(i: usize, j: usize) -> i64 {
    if (i & j).count_ones().is_multiple_of(2) {
        1
    } else {
        -1
    }
}

/// The bisection attack's target rows.
const TARGET: std::ops::Range<usize> = 1000..1032;

/// What the attacker observed and what the admin knows, in one world.
struct Bisected {
    /// Everything each step showed the attacker (its entry, the board, an evaluation), ids masked.
    views: Vec<Value>,
    /// The released accuracy of each entry, as the attacker saw it.
    released: Vec<Option<f64>>,
    /// The admin's exact mean public accuracy of each entry.
    exact: Vec<f64>,
    /// Each entry as the attacker saw it, anonymous.
    entries: Vec<Value>,
}

/// Plays the bisection attack on `w`: enter `base`, then `base` with each of
/// `subsets` flipped, reading everything an agent can after each.
async fn bisect(w: &World, base: &[u8], subsets: &[Vec<usize>]) -> Bisected {
    let (attacker_id, token) = new_agent(&w.app, "attacker").await;
    let mask = [(attacker_id.as_str(), "<attacker>")];
    let mut out = Bisected {
        views: Vec::new(),
        released: Vec::new(),
        exact: Vec::new(),
        entries: Vec::new(),
    };
    let mut ids = Vec::new();
    let probes = std::iter::once(Vec::new()).chain(subsets.iter().cloned());
    for (k, flip) in probes.enumerate() {
        let mut probe = base.to_vec();
        for &r in &flip {
            probe[r] = 1 - probe[r];
        }
        let method = json!({ "*": { PUBLIC_SPLIT: probe, PRIVATE_SPLIT: vec![0; PRIVATE_N], TRANSFER_SPLIT: vec![0; TRANSFER_N] } });
        let (id, entry) =
            enter_and_wait(&w.app, &token, &format!("probe {k}"), &method, &[1, 2, 3]).await;
        assert_eq!(entry["verification"], "verified", "{entry}");
        // Its own released best, as an evaluation answers it (a new junk vector each time).
        let mut junk = vec![0; N];
        junk[k] = 1;
        let (status, answer) = evaluate(&w.app, &token, &junk).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let board = leaderboard(&w.app, &token).await;
        out.views.push(masked(
            &json!({ "entry": entry, "board": board, "evaluate": answer }),
            &mask,
        ));
        out.released.push(entry["released_accuracy"].as_f64());
        out.entries.push(masked(&anonymous(&entry), &mask));
        ids.push(id);
    }
    // The entry budget is spent: 40 entries in all.
    let (status, refusal) = enter(
        &w.app,
        &token,
        out.views[0]["entry"]["snapshot_id"].as_str().unwrap(),
        &[1, 2, 3],
    )
    .await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("entry_quota")),
        "{refusal}"
    );
    let admin = admin_board(&w.app).await;
    out.exact = ids
        .iter()
        .map(|&id| exact_mean(&admin, id, PUBLIC_SPLIT))
        .collect();
    out
}

/// The attacker's estimate of the target rows' labels from a score per entry
/// (`scores[0]` is the base's, `scores[1 + j]` that of the base with Hadamard row
/// `j`'s rows flipped): with exact scores, `sum_j H[j][r] (score_j - base)` is
/// 16 / 1300 times +1 where flipping row `r` helps and -1 where it hurts.
fn estimate(base: &[u8], scores: &[f64]) -> Vec<u8> {
    TARGET
        .map(|r| {
            let i = r - TARGET.start;
            let signal: f64 = (0..32)
                .map(|j| hadamard(j, i) as f64 * (scores[1 + j] - scores[0]))
                .sum();
            if signal > 0.0 { 1 - base[r] } else { base[r] }
        })
        .collect()
}

fn right_on_target(estimate: &[u8], labels: &[Label]) -> usize {
    TARGET
        .zip(estimate)
        .filter(|(r, e)| **e as usize == labels[*r].index())
        .count()
}

#[tokio::test]
async fn bisection_through_entries_cannot_tell_labels_apart() {
    // World 0 and world 1 differ in the labels of the 32 target rows (all flipped)
    // and of 8 more rows. The attacker's base method is right on rows 0..894, and on
    // exactly half the target rows (which half, it does not know): 910 / 1300 = 0.7
    // in world 0, 918 / 1300 = 0.706 in world 1; both release 0.705. Then it spends
    // the rest of its 40 entries on the base with target subsets flipped: the 32
    // rows of a Hadamard design (linear algebra reads every target label from the
    // exact scores) and 7 complements. Each flipped subset moves the exact score by
    // at most 16 rows (0.012), so no entry clears the bar (0.705 + 0.015).
    let l0 = labels(N, 1);
    let wrong = Rng(0x00B1_5EC7).choose(TARGET.len(), TARGET.len() / 2);
    let base: Vec<u8> = (0..N)
        .map(|r| {
            let right = r < 894 || (TARGET.contains(&r) && !wrong.contains(&(r - TARGET.start)));
            let label = l0[r].index() as u8;
            if right { label } else { 1 - label }
        })
        .collect();
    let mut l1 = l0.clone();
    for r in TARGET.chain(894..902) {
        l1[r] = l1[r].flipped();
    }
    assert_eq!(
        (accuracy_of(&base, &l0) * N as f64).round(),
        910.0,
        "test design"
    );
    assert_eq!(
        (accuracy_of(&base, &l1) * N as f64).round(),
        918.0,
        "test design"
    );
    let mut subsets: Vec<Vec<usize>> = (0..32)
        .map(|j| {
            TARGET
                .filter(|r| hadamard(j, r - TARGET.start) == 1)
                .collect()
        })
        .collect();
    for j in 1..8 {
        subsets.push(
            TARGET
                .filter(|r| hadamard(j, r - TARGET.start) == -1)
                .collect(),
        );
    }
    assert_eq!(subsets.len() + 1, 40, "the attacker's whole entry budget");

    let mut worlds = Vec::new();
    for l in [&l0, &l1] {
        let labels = SplitLabels {
            test: l.clone(),
            ..SplitLabels::standard()
        };
        let w = world_with(labels.clone(), ScriptedVerifier::new(&labels), 2).await;
        worlds.push(bisect(&w, &base, &subsets).await);
    }
    let (w0, w1) = (&worlds[0], &worlds[1]);

    // The attack works on exact scores: it reads all 32 target labels in each world.
    for (seen, l) in [(w0, &l0), (w1, &l1)] {
        assert_eq!(
            right_on_target(&estimate(&base, &seen.exact), l),
            32,
            "exact scores read every label"
        );
    }
    // (910 + g in world 0, 918 - g in world 1 for a flip gaining g rows: equal only where g = 4.)
    let moved = w0
        .exact
        .iter()
        .zip(&w1.exact)
        .filter(|(a, b)| (*a - *b).abs() > 1e-12)
        .count();
    assert!(
        moved >= 30,
        "the exact public accuracies differ between the worlds ({moved} of 40)"
    );

    // What agents see: the base's release, then nothing. Every response the attacker
    // read (its entry, the whole leaderboard, its evaluations) is the same in both
    // worlds, so whatever it concludes is the same whichever labels are true.
    assert_eq!(w0.released[0], Some(0.705));
    assert!(
        w0.released[1..].iter().all(Option::is_none),
        "{:?}",
        w0.released
    );
    assert_eq!(
        w0.views, w1.views,
        "an agent-visible output depends on the target labels"
    );
    // Within a world too: entries whose exact accuracies differ (by less than a step, or by more, below the bar) look alike.
    let spread = w0.exact[1..].iter().cloned().fold(f64::MIN, f64::max)
        - w0.exact[1..].iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread > 7.5 / N as f64,
        "test design: the flips move the exact score ({spread})"
    );
    let close_pair = (1..40)
        .flat_map(|i| (1..40).map(move |j| (i, j)))
        .find(|&(i, j)| {
            (w0.exact[i] - w0.exact[j]).abs() > 1e-12 && (w0.exact[i] - w0.exact[j]).abs() < STEP
        });
    let (i, j) = close_pair.expect("test design: two entries less than a step apart");
    assert_eq!(
        w0.entries[i], w0.entries[j],
        "entries {i} and {j} differ by less than a step and look different"
    );
    assert!(
        w0.entries[1..].iter().all(|e| *e == w0.entries[1]),
        "{:?}",
        w0.entries
    );
    // So its estimate is chance: the base on every target row, right on 16 of 32 in either world.
    let seen: Vec<f64> = w0.released.iter().map(|r| r.unwrap_or(0.705)).collect();
    let guess = estimate(&base, &seen);
    assert_eq!(right_on_target(&guess, &l0), 16);
    assert_eq!(right_on_target(&guess, &l1), 16);
}

#[tokio::test]
async fn boosting_through_entries_gains_nothing() {
    // Blum and Hardt's boosting attack, on the rows the attacker is unsure of: its base
    // is right on rows 0..860 and on a random half of the 100 target rows (910 / 1300 =
    // 0.7, released 0.705); 39 entries replace the target rows by random bits; the
    // attacker majority-votes the random vectors whose entries scored well. Against
    // exact scores (the old leaky answers: 0.611 where the Ladder gave 0.512 in the
    // issue) the weighted vote is right on well over half the target rows; through
    // the Ladder no random entry clears the bar, the attacker selects nothing, and its
    // vote is its own base: chance on the target rows.
    let target = 1000..1100;
    let w = world().await;
    let l = &w.labels.test;
    let mut rng = Rng(0x0B00_57ED);
    let right_half = rng.choose(target.len(), target.len() / 2);
    let base: Vec<u8> = (0..N)
        .map(|r| {
            let right =
                r < 860 || (target.contains(&r) && right_half.contains(&(r - target.start)));
            let label = l[r].index() as u8;
            if right { label } else { 1 - label }
        })
        .collect();
    assert_eq!(
        (accuracy_of(&base, l) * N as f64).round(),
        910.0,
        "test design"
    );
    let (attacker_id, token) = new_agent(&w.app, "booster").await;
    let mut vectors: Vec<Vec<u8>> = Vec::new();
    let mut ids = Vec::new();
    let mut released = Vec::new();
    let mut seen = Vec::new();
    for k in 0..40 {
        let mut probe = base.clone();
        if k > 0 {
            for r in target.clone() {
                probe[r] = u8::from(rng.bit());
            }
        }
        let method = json!({ "*": { PUBLIC_SPLIT: probe, PRIVATE_SPLIT: vec![1; PRIVATE_N], TRANSFER_SPLIT: vec![1; TRANSFER_N] } });
        let (id, entry) =
            enter_and_wait(&w.app, &token, &format!("random {k}"), &method, &[1, 2, 3]).await;
        released.push(entry["released_accuracy"].as_f64());
        seen.push(masked(&anonymous(&entry), &[(attacker_id.as_str(), "<a>")]));
        vectors.push(probe);
        ids.push(id);
    }
    let admin = admin_board(&w.app).await;
    let exact: Vec<f64> = ids
        .iter()
        .map(|&id| exact_mean(&admin, id, PUBLIC_SPLIT))
        .collect();

    // The vote over the target rows of the vectors in `weights` (others keep the base).
    let vote = |weights: &[(usize, f64)]| -> Vec<u8> {
        let mut voted = base.clone();
        for r in target.clone() {
            let sum: f64 = weights
                .iter()
                .map(|&(k, w)| w * if vectors[k][r] == 1 { 1.0 } else { -1.0 })
                .sum();
            if sum != 0.0 {
                voted[r] = u8::from(sum > 0.0);
            }
        }
        voted
    };
    let on_target = |p: &[u8]| {
        target
            .clone()
            .filter(|&r| p[r] as usize == l[r].index())
            .count() as f64
            / target.len() as f64
    };

    // Against exact scores: weight each random vector by how much it beat the base.
    let leaky = vote(
        &(1..40)
            .map(|k| (k, exact[k] - exact[0]))
            .collect::<Vec<_>>(),
    );
    assert!(
        on_target(&leaky) >= 0.62,
        "the attack works on exact scores: {}",
        on_target(&leaky)
    );
    assert!(
        accuracy_of(&leaky, l) >= accuracy_of(&base, l) + 0.009,
        "{}",
        accuracy_of(&leaky, l)
    );

    // Through the Ladder: the base is released, no random vector is, all look alike.
    assert_eq!(released[0], Some(0.705));
    assert!(released[1..].iter().all(Option::is_none), "{released:?}");
    assert!(seen[1..].iter().all(|e| *e == seen[1]), "{seen:?}");
    let chosen: Vec<(usize, f64)> = (1..40)
        .filter(|&k| released[k].is_some())
        .map(|k| (k, 1.0))
        .collect();
    let voted = vote(&chosen);
    assert_eq!(on_target(&voted), 0.5, "chance on the target rows");
    assert!(on_target(&voted) <= 0.5 + STEP);
    assert!(
        accuracy_of(&voted, l) <= accuracy_of(&base, l),
        "the vote beat the attacker's own base"
    );
}

#[tokio::test]
async fn a_constant_entry_shows_agents_nothing() {
    // All ones is right on the share of ones (about 0.6), all zeros on the rest:
    // neither clears the weak baseline plus a step, so neither shows a number, and
    // the two look the same: the class balance is not readable.
    let w = world().await;
    let (agent_id, token) = new_agent(&w.app, "constant").await;
    let ones = w.labels.test.iter().filter(|l| l.index() == 1).count();
    assert!(
        (0.55..WEAK).contains(&(ones as f64 / N as f64)),
        "test design: {ones}"
    );
    let mut seen = Vec::new();
    let mut secrets = Secrets::default();
    for (name, value) in [("all ones", 1_u8), ("all zeros", 0)] {
        let constant = |n: usize| vec![value; n];
        let method = json!({ "*": { PUBLIC_SPLIT: constant(N), PRIVATE_SPLIT: constant(PRIVATE_N), TRANSFER_SPLIT: constant(TRANSFER_N) } });
        let count = |labels: &[Label]| {
            labels
                .iter()
                .filter(|l| l.index() == usize::from(value))
                .count()
        };
        secrets.scores(
            &format!("{name} public"),
            &[count(&w.labels.test); 3],
            N,
            registry(&w.labels).baselines("math", PUBLIC_SPLIT),
        );
        secrets.scores(
            &format!("{name} private"),
            &[count(&w.labels.private); 3],
            PRIVATE_N,
            None,
        );
        let (id, entry) = enter_and_wait(&w.app, &token, name, &method, &[1, 2, 3]).await;
        assert_eq!(entry["verification"], "verified");
        assert_eq!(
            (
                entry["released_accuracy"].as_f64(),
                entry["released_pgr"].as_f64()
            ),
            (None, None),
            "{entry}"
        );
        assert_eq!(
            find_row(&leaderboard(&w.app, &token).await, id).0,
            "verified_unreleased"
        );
        seen.push(masked(&anonymous(&entry), &[(agent_id.as_str(), "<a>")]));
    }
    assert_eq!(
        seen[0], seen[1],
        "all ones and all zeros look different to agents"
    );
    let board = leaderboard(&w.app, &token).await;
    secrets.assert_absent("GET /api/leaderboard", &board);
    let (_, answer) = evaluate(&w.app, &token, &to_u8(&predictions(&w.labels.test, 700))).await;
    assert_eq!(answer["released_accuracy"], Value::Null, "{answer}");
    // The admin sees the exact share.
    let admin = admin_board(&w.app).await;
    assert_close(
        &find_row(&admin, 1).1["admin"]["splits"][PUBLIC_SPLIT]["accuracy"]["mean"],
        ones as f64 / N as f64,
    );
}

// ---------------------------------------------------------------------------
// Every route, scanned for label-dependent values the Ladder did not release.
// ---------------------------------------------------------------------------

/// Label-dependent values an agent must not see, each with what it is.
#[derive(Debug, Default)]
struct Secrets {
    values: Vec<(f64, String)>,
}

impl Secrets {
    /// A value and the forms a leak could take (rounded, a percentage).
    fn add(&mut self, value: f64, what: &str) {
        if !value.is_finite() || (value.fract() == 0.0 && value.abs() < 100.0) {
            // Small integers are ids, sizes and counts of everything; they cannot be told apart.
            return;
        }
        self.values.push((value, what.to_owned()));
        if value.fract() != 0.0 {
            for digits in [4, 5, 6] {
                let scale = 10_f64.powi(digits);
                self.values.push((
                    (value * scale).round() / scale,
                    format!("{what}, rounded to {digits} digits"),
                ));
            }
        }
    }

    /// An accuracy-like fraction: also as a percentage, and its complement.
    fn add_fraction(&mut self, value: f64, what: &str) {
        self.add(value, what);
        self.add(1.0 - value, &format!("1 - {what}"));
        self.add(value * 100.0, &format!("{what} in percent"));
        for digits in [1, 2] {
            let scale = 10_f64.powi(digits);
            self.add(
                (value * 100.0 * scale).round() / scale,
                &format!("{what} in percent, rounded"),
            );
        }
    }

    /// The scores of one split of one entry or evaluation: per-seed counts of right
    /// rows out of `n`, their accuracies, PGRs, means and standard errors.
    fn scores(&mut self, what: &str, right: &[usize], n: usize, baselines: Option<FixedBaselines>) {
        let accuracies: Vec<f64> = right.iter().map(|&c| c as f64 / n as f64).collect();
        for (i, (&c, &a)) in right.iter().zip(&accuracies).enumerate() {
            self.add(c as f64, &format!("{what}: right rows of seed {i}"));
            self.add((n - c) as f64, &format!("{what}: wrong rows of seed {i}"));
            self.add_fraction(a, &format!("{what}: exact accuracy of seed {i}"));
            if let Some(b) = baselines {
                self.add_fraction(b.pgr(a).unwrap(), &format!("{what}: exact PGR of seed {i}"));
            }
        }
        let sum: usize = right.iter().sum();
        self.add(sum as f64, &format!("{what}: right rows over seeds"));
        self.add(
            sum as f64 / right.len() as f64,
            &format!("{what}: mean right rows"),
        );
        let mean = aar_core::metrics::MeanSe::from_values(&accuracies).unwrap();
        self.add_fraction(mean.mean, &format!("{what}: exact mean accuracy"));
        if let Some(se) = mean.se {
            self.add(se, &format!("{what}: SE of the accuracy"));
        }
        if let Some(b) = baselines {
            let pgr = b.pgr_over_seeds(&accuracies).unwrap();
            self.add_fraction(pgr.mean, &format!("{what}: exact mean PGR"));
            if let Some(se) = pgr.se {
                self.add(se, &format!("{what}: SE of the PGR"));
            }
        }
    }

    /// Test design: no secret may coincide with a value agents legitimately see.
    fn assert_distinct_from(&self, legit: &[f64]) {
        for (value, what) in &self.values {
            for l in legit {
                assert!(
                    (value - l).abs() > 1e-9,
                    "test design: {what} = {value} is also the legitimate {l}"
                );
            }
        }
    }

    /// Every secret in `body` (a JSON number, or a number written in a string), as `what at path`.
    fn leaks(&self, body: &Value) -> Vec<String> {
        let mut found = Vec::new();
        numbers(body, "$", &mut found);
        let mut leaks = Vec::new();
        for (path, number) in found {
            for (value, what) in &self.values {
                if (number - value).abs() <= 1e-9 {
                    leaks.push(format!("{what} ({value}) at {path}"));
                }
            }
        }
        leaks
    }

    /// Fails if `body` shows a secret.
    #[track_caller]
    fn assert_absent(&self, route: &str, body: &Value) {
        let leaks = self.leaks(body);
        assert!(leaks.is_empty(), "{route} shows an agent {leaks:?}: {body}");
    }
}

/// Every number in `value` with its path, including numbers written inside strings.
fn numbers(value: &Value, path: &str, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(n) => out.push((path.to_owned(), n.as_f64().unwrap())),
        Value::String(s) => {
            for token in s.split(|c: char| c.is_whitespace() || ",;:()[]{}=<>\"'|/%+".contains(c)) {
                if let Ok(n) = token.trim_end_matches('.').parse::<f64>() {
                    out.push((format!("{path} (in text)"), n));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                numbers(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                numbers(item, &format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

/// Every (path, method) the router serves, read from `routes()` in lib.rs: axum
/// cannot list its routes, and the source is what the server runs.
fn router_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../lib.rs");
    let start = source.find("fn routes(").expect("lib.rs has fn routes");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("the end of fn routes")];
    let mut routes = BTreeSet::new();
    for marker in [".route(", ".nest_service("] {
        let mut rest = body;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed route call");
            let call = &rest[..end];
            let open = call.find('"').expect("a route path") + 1;
            let path = &call[open..open + call[open..].find('"').expect("a closed path")];
            if marker == ".nest_service(" {
                // The MCP service: JSON-RPC over POST.
                routes.insert((path.to_owned(), "post".to_owned()));
                continue;
            }
            for method in ["get", "post", "put", "patch", "delete"] {
                let token = format!("{method}(");
                let called = call.match_indices(&token).any(|(i, _)| {
                    !call[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if called {
                    routes.insert((path.to_owned(), method.to_owned()));
                }
            }
        }
    }
    routes
}

/// Fails on the router's fallback (no such route) or a 405 (no such method).
#[track_caller]
fn assert_routed(route: &str, status: StatusCode, body: &Value) {
    assert_ne!(
        status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{route}: the router has no such method"
    );
    assert_ne!(
        *body,
        AppError::not_found("endpoint").body(),
        "{route}: the router's fallback answered"
    );
}

#[tokio::test]
async fn no_route_shows_an_agent_a_label_value_the_ladder_did_not_release() {
    let w = world_with_pinned_rows().await;
    let tasks = registry(&w.labels);
    let base = |split: &str| tasks.baselines("math", split);
    let (a_id, a) = new_agent(&w.app, "alice").await;
    let (b_id, b) = new_agent(&w.app, "bob").await;
    let (_, c) = new_agent(&w.app, "carol").await;
    let agents = [a.clone(), b.clone(), c.clone()];
    let mut secrets = Secrets::default();

    // Methods with known exact scores on every split: right rows per seed (11, 12, 13),
    // public / private / transfer.
    let mut plant = |name: &str, [public, private, transfer]: [[usize; 3]; 3]| {
        secrets.scores(
            &format!("entry {name}, public"),
            &public,
            N,
            base(PUBLIC_SPLIT),
        );
        secrets.scores(
            &format!("entry {name}, private"),
            &private,
            PRIVATE_N,
            base(PRIVATE_SPLIT),
        );
        secrets.scores(
            &format!("entry {name}, transfer"),
            &transfer,
            TRANSFER_N,
            base(TRANSFER_SPLIT),
        );
        let seeds: BTreeMap<String, Value> = (0..3)
            .map(|i| {
                (
                    (11 + i).to_string(),
                    w.labels.scored(public[i], private[i], transfer[i]),
                )
            })
            .collect();
        method_archive(name, &json!(seeds))
    };
    let a1 = plant("a1", [[1003, 1013, 1024], [311, 318, 326], [257, 263, 271]]);
    let a2 = plant("a2", [[1007, 1009, 1016], [301, 297, 305], [241, 239, 236]]);
    let b1 = plant("b1", [[1098, 1102, 1107], [333, 329, 338], [281, 277, 286]]);
    let b2 = plant("b2", [[1051, 1057, 1062], [322, 317, 315], [266, 262, 259]]);
    let c1 = plant(
        "c1 (entered by the scan)",
        [[1019, 1021, 1027], [307, 303, 309], [247, 251, 253]],
    );
    // Flags whose evidence holds exact numbers (the admin's, never an agent's).
    for (value, what) in [
        (1.2731, "flag evidence"),
        (1.1917, "flag evidence"),
        (0.5123, "flag evidence"),
    ] {
        secrets.add(value, what);
    }
    let mut snapshots = Vec::new();
    let mut entries = Vec::new();
    for (token, archive, flagged) in [
        (&a, a1, false),
        (&a, a2, false),
        (&b, b1, false),
        (&b, b2, true),
    ] {
        let snapshot = upload(&w.app, token, archive).await;
        if flagged {
            w.verifier.flag(&snapshot, ProbeFlag {
                probe: "teacher_ablation".into(),
                summary: "PGR 1.2731 survives a shuffled teacher (PGR 1.1917)".into(),
                evidence: json!({ "main_pgr": 1.2731, "shuffled_teacher_pgr": 1.1917, "right": 1051 }),
                about_agent: false,
            });
            w.verifier.flag(
                &snapshot,
                ProbeFlag {
                    probe: "oracle_probing".into(),
                    summary: "agreement 0.5123 with earlier submissions".into(),
                    evidence: json!({ "agreement": 0.5123 }),
                    about_agent: true,
                },
            );
        }
        let (status, created) = enter(&w.app, token, &snapshot, &[11, 12, 13]).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        entries.push(created["entry_id"].as_i64().unwrap());
        snapshots.push(snapshot);
    }
    // And one whose method fails.
    let crash = upload(
        &w.app,
        &a,
        tar_gz(&[(b"aar-method.json", Regular, br#"{"name": "crash"}"#, None)]),
    )
    .await;
    let (_, created) = enter(&w.app, &a, &crash, &[11, 12, 13]).await;
    entries.push(created["entry_id"].as_i64().unwrap());
    snapshots.push(crash);
    for &id in &entries {
        wait_for_verification(&w.app, &a, id).await;
    }
    // The admin's errors that include the test's noise, and the comparisons with
    // vanilla and neighbours: label-dependent, the admin's only.
    let admin = admin_board(&w.app).await;
    let mut noisy = 0;
    let mut compared_with_builtins = 0;
    for row in ["ranked", "flagged"]
        .iter()
        .flat_map(|s| admin[*s].as_array().unwrap())
    {
        for split in [PUBLIC_SPLIT, PRIVATE_SPLIT, TRANSFER_SPLIT] {
            let scores = &row["admin"]["splits"][split];
            if let Some(se_test) = scores["pgr"]["se_test"].as_f64() {
                secrets.add(se_test, "the admin's test-noise SE of a PGR");
                secrets.add(
                    scores["pgr"]["se"].as_f64().unwrap(),
                    "the admin's total SE of a PGR",
                );
                noisy += 1;
            }
            let builtins = scores["vs_builtins"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            compared_with_builtins += builtins.len();
            let against = [&scores["vs_vanilla"], &scores["vs_above"]]
                .into_iter()
                .chain(builtins.iter());
            for comparison in against {
                for field in ["difference", "se"] {
                    if let Some(v) = comparison[field].as_f64() {
                        secrets.add(v, &format!("the admin's comparison {field}"));
                    }
                }
            }
        }
    }
    assert!(noisy >= 8, "the admin sees errors with test noise: {admin}");
    assert!(
        compared_with_builtins >= 3,
        "the admin compares entries with the built-ins: {admin}"
    );
    // Ranked by held-out PGR: b1, a1, a2 (b2 is flagged). Each but the first is compared
    // with the one above it on the private test, from rows built here.
    let ranked: Vec<i64> = admin["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entry_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ranked, [entries[2], entries[0], entries[1]], "{admin}");
    let private_rows = |right: [usize; 3]| right.map(|r| first_right(PRIVATE_N, r)).to_vec();
    let (b1_rows, a1_rows) = (private_rows([333, 329, 338]), private_rows([311, 318, 326]));
    let want = pgr_difference(
        &private_outcomes().runs(),
        &a1_rows,
        &b1_rows,
        DEFAULT_RESAMPLES,
        crate::scores::pair_seed(entries[0], entries[2]),
    )
    .unwrap();
    let (_, a1_row) = find_row(&admin, entries[0]);
    let got = &a1_row["admin"]["splits"][PRIVATE_SPLIT]["vs_above"];
    assert_eq!(got["against"], format!("entry {}", entries[2]), "{got}");
    assert_close(&got["difference"], want.difference);
    assert_close(&got["se"], want.se);
    assert_eq!(got["describe"], want.describe(), "{got}");
    // Hand check: (mean 318.33 - 333.33 right rows) / (370.33 - 286.33).
    assert!((want.difference + 15.0 / 84.0).abs() < 1e-9, "{want:?}");
    let (_, b1_row) = find_row(&admin, entries[2]);
    assert_eq!(
        b1_row["admin"]["splits"][PRIVATE_SPLIT]["vs_above"],
        Value::Null
    );
    assert_eq!(
        a1_row["admin"]["splits"][TRANSFER_SPLIT]["vs_above"],
        Value::Null
    );
    // Agents see a probe-flagged entry as unflagged (the flag may depend on labels).
    let flagged = find_row(&leaderboard(&w.app, &a).await, entries[3]);
    assert_eq!(flagged.1["status"], "ok", "{flagged:?}");

    // Evaluations with known exact scores (private predictions are scored and stored too).
    let mut evaluations = Vec::new();
    for (token, name, public, private) in [
        (&a, "a", 1037, Some(333)),
        (&b, "b", 957, None),
        (&c, "c", 1049, Some(291)),
    ] {
        secrets.scores(
            &format!("evaluation by {name}, public"),
            &[public],
            N,
            base(PUBLIC_SPLIT),
        );
        let mut body =
            json!({ "task": "math", "predictions": to_u8(&predictions(&w.labels.test, public)) });
        if let Some(private) = private {
            secrets.scores(
                &format!("evaluation by {name}, private"),
                &[private],
                PRIVATE_N,
                base(PRIVATE_SPLIT),
            );
            body["private_predictions"] = json!(to_u8(&predictions(&w.labels.private, private)));
        }
        let (status, answer) = call(&w.app, "POST", "/api/evaluate", Some(token), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        secrets.assert_absent("POST /api/evaluate", &answer);
        evaluations.push(answer["evaluation_id"].as_i64().unwrap());
    }
    // The scan's own evaluation (a safe POST).
    secrets.scores("the scan's evaluation", &[1011], N, base(PUBLIC_SPLIT));
    let post = json!({ "kind": "result", "title": "confidence filter", "body": "entries 1 and 2", "task": "math",
                       "links": { "entries": [entries[0], entries[1]], "evaluations": [evaluations[0]], "snapshots": [snapshots[0]] } });
    let (status, created_post) = call(&w.app, "POST", "/api/posts", Some(&a), Some(post)).await;
    assert_eq!(status, StatusCode::CREATED, "{created_post}");
    let post_id = created_post["post_id"].as_i64().unwrap();

    // Test design: what agents legitimately see (released values and their PGRs,
    // baselines, snapshot sizes) is no secret.
    let mut legit: Vec<f64> = vec![STEP, N as f64, PRIVATE_N as f64, c1.len() as f64];
    let mut released: Vec<f64> = w
        .store
        .all_entries()
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.released_accuracy)
        .collect();
    released.extend([0.795, 0.81, 0.855]);
    for r in released {
        let pgr = (r - WEAK) / 0.15;
        legit.extend([r, (pgr * 1e3).round() / 1e3, (pgr * 1e4).round() / 1e4]);
    }
    for split in [PUBLIC_SPLIT, PRIVATE_SPLIT, TRANSFER_SPLIT] {
        let b = base(split).unwrap();
        legit.extend([b.weak.mean, b.ceiling.mean]);
    }
    for s in &snapshots {
        let (_, meta) = call(
            &w.app,
            "GET",
            &format!("/api/snapshots/{s}"),
            Some(&a),
            None,
        )
        .await;
        legit.push(meta["size_bytes"].as_f64().unwrap());
    }
    secrets.assert_distinct_from(&legit);
    assert!(secrets.values.len() > 500, "{}", secrets.values.len());

    // The routes: those openapi documents and those the router serves (from its source).
    let (status, doc) = call(&w.app, "GET", "/openapi.json", Some(&a), None).await;
    assert_eq!(status, StatusCode::OK);
    let mut documented: BTreeMap<(String, String), String> = BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            documented.insert(
                (path.clone(), method.clone()),
                op["x-aar-token"].as_str().unwrap().to_owned(),
            );
        }
    }
    let served = router_routes();
    assert!(
        served.len() >= 25,
        "the route table was not read: {served:?}"
    );
    let mut every: BTreeMap<(String, String), String> = documented.clone();
    for route in &served {
        let kind = if route.0.starts_with("/api/admin/") {
            "admin"
        } else if route.0.starts_with("/api/verifier/") {
            "worker"
        } else {
            "agent"
        };
        every
            .entry(route.clone())
            .or_insert_with(|| kind.to_owned());
    }

    // Every operation, called as an agent; every JSON answer scanned.
    let entry_ids: Vec<i64> = w
        .store
        .all_entries()
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let mut scan_snapshot = None;
    for ((path, method), token_kind) in &every {
        let route = format!("{} {path}", method.to_uppercase());
        let fill = |id: &str| path.replace("{id}", id).replace("{action}", "approve");
        if token_kind == "admin" || token_kind == "worker" {
            // Refused to an agent (403) and to a stranger (401) before anything is read.
            let uri = if path.contains("/agents/{id}") {
                fill(&b_id)
            } else if path.contains("{lease}") {
                path.replace("{lease}", &"ab".repeat(16))
            } else {
                fill(&entries[0].to_string())
            };
            let body = (method == "post").then(|| json!({ "name": "x", "reason": "x" }));
            for (token, want) in [
                (Some(a.as_str()), StatusCode::FORBIDDEN),
                (None, StatusCode::UNAUTHORIZED),
            ] {
                let (status, answer) =
                    call(&w.app, &method.to_uppercase(), &uri, token, body.clone()).await;
                assert_routed(&route, status, &answer);
                assert_eq!(status, want, "{route} as {token:?}: {answer}");
                secrets.assert_absent(&route, &answer);
            }
            continue;
        }
        let mut calls: Vec<(&str, String, Option<Value>)> = Vec::new(); // (token, uri, body)
        match (method.as_str(), path.as_str()) {
            ("get", "/health" | "/openapi.json" | "/api/me" | "/api/tasks" | "/api/campaign") => {
                calls.extend(agents.iter().map(|t| (t.as_str(), path.clone(), None)));
            }
            ("get", "/api/leaderboard") => {
                calls.extend(
                    agents
                        .iter()
                        .map(|t| (t.as_str(), "/api/leaderboard?task=math".to_owned(), None)),
                );
            }
            ("get", "/api/entries/{id}") => {
                for t in &agents {
                    calls.extend(
                        entry_ids
                            .iter()
                            .map(|id| (t.as_str(), fill(&id.to_string()), None)),
                    );
                }
            }
            ("get", "/api/evaluations/{id}") => {
                for t in &agents {
                    calls.extend(
                        evaluations
                            .iter()
                            .map(|id| (t.as_str(), fill(&id.to_string()), None)),
                    );
                }
            }
            ("get", "/api/posts") => {
                for q in [
                    "",
                    "?q=confidence",
                    "?task=math",
                    "?sort=top",
                    "?sort=discussed",
                    "?kind=result",
                ] {
                    calls.push((b.as_str(), format!("/api/posts{q}"), None));
                }
                calls.push((b.as_str(), format!("/api/posts?agent={a_id}"), None));
            }
            ("get", "/api/posts/{id}") => {
                calls.push((c.as_str(), fill(&post_id.to_string()), None))
            }
            (
                "get",
                "/api/snapshots/{id}" | "/api/snapshots/{id}/archive" | "/api/snapshots/{id}/files",
            ) => {
                calls.extend(snapshots.iter().map(|s| (b.as_str(), fill(s), None)));
            }
            ("post", "/api/evaluate") => {
                let body = json!({ "task": "math", "predictions": to_u8(&predictions(&w.labels.test, 1011)) });
                calls.push((b.as_str(), path.clone(), Some(body)));
            }
            ("post", "/api/posts") => {
                let body = json!({ "kind": "insight", "title": "t", "body": "b", "links": { "entries": [entries[2]] } });
                calls.push((c.as_str(), path.clone(), Some(body)));
            }
            ("post", "/api/posts/{id}/vote") => calls.push((
                c.as_str(),
                fill(&post_id.to_string()),
                Some(json!({ "vote": "up" })),
            )),
            ("post", "/api/posts/{id}/comments") => calls.push((
                b.as_str(),
                fill(&post_id.to_string()),
                Some(json!({ "body": "tried it" })),
            )),
            ("post", "/api/snapshots") => {
                // The raw archive as the body; entered below.
                let (status, meta) = send(
                    &w.app,
                    "POST",
                    "/api/snapshots?message=scan",
                    Some(&c),
                    Body::from(c1.clone()),
                    false,
                )
                .await;
                assert_routed(&route, status, &meta);
                assert_eq!(status, StatusCode::CREATED, "{meta}");
                secrets.assert_absent(&route, &meta);
                scan_snapshot = Some(meta["snapshot_id"].as_str().unwrap().to_owned());
            }
            ("post", "/api/entries") => {} // once the snapshot is uploaded, below
            ("post", "/mcp") => {}         // through an MCP client, below
            _ => panic!("the leak scan does not know how to call {route}: add it"),
        }
        for (token, uri, body) in calls {
            let (status, answer) =
                call(&w.app, &method.to_uppercase(), &uri, Some(token), body).await;
            assert_routed(&route, status, &answer);
            assert!(
                status.is_success() || status == StatusCode::NOT_FOUND,
                "{route} {uri}: {status} {answer}"
            );
            secrets.assert_absent(&format!("{route} ({uri})"), &answer);
        }
    }

    // The safe POST of an entry; then everything that shows entries, once it is verified.
    let snapshot = scan_snapshot.expect("POST /api/snapshots was scanned");
    let (status, created) = enter(&w.app, &c, &snapshot, &[11, 12, 13]).await;
    assert_routed("POST /api/entries", status, &created);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    secrets.assert_absent("POST /api/entries", &created);
    let scanned = created["entry_id"].as_i64().unwrap();
    wait_for_verification(&w.app, &c, scanned).await;
    for token in &agents {
        secrets.assert_absent("GET /api/leaderboard", &leaderboard(&w.app, token).await);
        for id in entry_ids.iter().chain([&scanned]) {
            let (_, entry) = call(
                &w.app,
                "GET",
                &format!("/api/entries/{id}"),
                Some(token),
                None,
            )
            .await;
            secrets.assert_absent("GET /api/entries/{id}", &entry);
        }
    }

    // MCP: the same functions; every tool an agent has, called and scanned.
    use base64::Engine;
    let archive_b64 = base64::engine::general_purpose::STANDARD.encode(tar_gz(&[(
        b"notes.txt",
        Regular,
        b"scan",
        None,
    )]));
    let client = mcp_client(&serve_on_loopback(w.app.clone()).await, &a)
        .await
        .expect("initialize");
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for tool in ["leaderboard", "evaluate", "read_finding"] {
        assert!(
            tools.iter().any(|t| t == tool),
            "{tool} missing from {tools:?}"
        );
    }
    for tool in &tools {
        let args = match tool.as_str() {
            "leaderboard" => json!({ "task": "math" }),
            "search_findings" => json!({ "q": "confidence" }),
            "read_finding" => json!({ "post_id": post_id }),
            "evaluate" => {
                json!({ "task": "math", "predictions": to_u8(&predictions(&w.labels.test, 1011)) })
            }
            "share_finding" => {
                json!({ "kind": "insight", "title": "mcp", "body": "b", "links": { "entries": [entries[0]] } })
            }
            "upload_snapshot" => json!({ "archive_base64": archive_b64, "message": "m" }),
            "download_snapshot" => json!({ "snapshot_id": snapshots[0] }),
            other => panic!("the leak scan does not know the MCP tool {other}: add it"),
        };
        let result = client
            .call_tool(
                rmcp::model::CallToolRequestParams::new(tool.clone()).with_arguments(object(args)),
            )
            .await
            .unwrap();
        assert_eq!(result.is_error, Some(false), "{tool}: {result:?}");
        let mut answer = result.structured_content.unwrap_or(Value::Null);
        if let Some(map) = answer.as_object_mut() {
            // The snapshot's archive, verbatim (an agent's upload, no label in it).
            map.remove("archive_base64");
        }
        secrets.assert_absent(&format!("MCP {tool}"), &answer);
    }
    client.cancel().await.unwrap();

    // The scan could have found something: the admin sees the secrets.
    let leaks = secrets.leaks(&admin_board(&w.app).await);
    assert!(
        leaks.len() > 20,
        "the admin's board shows no secret, so the scan proves nothing: {leaks:?}"
    );

    // Last, openapi lists exactly the routes the router serves.
    let undocumented: Vec<_> = served
        .iter()
        .filter(|r| !documented.contains_key(*r))
        .collect();
    let unserved: Vec<_> = documented.keys().filter(|r| !served.contains(*r)).collect();
    assert!(
        unserved.is_empty(),
        "in /openapi.json but not served: {unserved:?}"
    );
    assert!(
        undocumented.is_empty(),
        "served but missing from /openapi.json: {undocumented:?}"
    );
}

// ---------------------------------------------------------------------------
// Remote verification workers: the same outcome, posted over HTTP.
// ---------------------------------------------------------------------------

const WORKER: &str = "worker-token-for-tests-0123456789";

/// A server whose (scripted) verifier only checks snapshots, with remote workers.
async fn world_with_workers(labels: &SplitLabels) -> (tempfile::TempDir, Router, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aar.db").display());
    let store = Store::connect(&url).await.unwrap();
    let handle = VerifierHandle {
        verifier: Arc::new(ScriptedVerifier::new(labels)),
        concurrency: 0,
    };
    let state = AppState::with_verification(
        store.clone(),
        registry(labels),
        ADMIN,
        entry_policy(),
        Some(handle),
        Some(WORKER),
    )
    .unwrap();
    (dir, app(state), store)
}

/// `value` without the keys that hold times or ids that differ between two servers.
fn comparable(value: &Value, agent_id: &str) -> Value {
    let text = value.to_string().replace(agent_id, "AGENT");
    let mut value: Value = serde_json::from_str(&text).unwrap();
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|k, _| !k.ends_with("_at") && !k.ends_with("seconds"));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

#[tokio::test]
async fn a_posted_outcome_is_stored_like_an_in_process_verification() {
    // Pinned rows: the admin's PGRs are scored row by row from the runs' predictions.
    let labels = SplitLabels::with_pinned_rows();
    let planted = json!({
        "11": labels.scored(1003, 311, 257),
        "12": labels.scored(1013, 318, 263),
        "13": labels.scored(1024, 326, 271),
        "99": labels.scored(N, PRIVATE_N, TRANSFER_N),
    });
    let archive = method_archive("confidence filter", &planted);
    let flag = ProbeFlag {
        probe: "teacher_ablation".into(),
        summary: "PGR survives a shuffled teacher".into(),
        evidence: json!({ "main_pgr": 0.9, "shuffled_teacher_pgr": 0.85 }),
        about_agent: false,
    };

    // In process.
    let local = world_with_pinned_rows().await;
    let (local_agent, a) = new_agent(&local.app, "a").await;
    let snapshot = upload(&local.app, &a, archive.clone()).await;
    local.verifier.flag(&snapshot, flag.clone());
    let (_, created) = enter(&local.app, &a, &snapshot, &[11, 12, 13]).await;
    let local_id = created["entry_id"].as_i64().unwrap();
    let local_view = wait_for_verification(&local.app, &a, local_id).await;

    // Through a worker: claimed, run by the same scripted verifier, posted.
    let (_dir, remote, store) = world_with_workers(&labels).await;
    let (remote_agent, b) = new_agent(&remote, "a").await;
    assert_eq!(upload(&remote, &b, archive).await, snapshot);
    let (status, created) = enter(&remote, &b, &snapshot, &[11, 12, 13]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let remote_id = created["entry_id"].as_i64().unwrap();
    let claim = json!({ "worker": "node-1 job 42" });
    let (status, claimed) = call(
        &remote,
        "POST",
        "/api/verifier/claim",
        Some(WORKER),
        Some(claim),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let claimed: crate::workers::Claim = serde_json::from_value(claimed).unwrap();
    let job = claimed.job.into_job().unwrap();
    assert_eq!(
        (
            job.entry_id,
            job.seeds.clone(),
            job.snapshot_id.clone(),
            job.agent_id.clone()
        ),
        (
            remote_id,
            vec![11, 12, 13],
            snapshot.clone(),
            remote_agent.clone()
        )
    );
    assert_eq!(job.evaluation_log, Some(Vec::new()));
    let worker_side = ScriptedVerifier::new(&labels);
    worker_side.flag(&snapshot, flag);
    let outcome = worker_side.score(&job).unwrap();
    let body = serde_json::to_value(crate::workers::ResultRequest::from_outcome(&outcome)).unwrap();
    let uri = format!("/api/verifier/leases/{}/result", claimed.lease);
    let (status, stored) = call(&remote, "POST", &uri, Some(WORKER), Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["verification"], "verified", "{stored}");
    // Once stored, the lease is finished: the same result again is refused.
    let (status, _) = call(&remote, "POST", &uri, Some(WORKER), Some(body)).await;
    assert_eq!(status, StatusCode::GONE);
    let remote_view = wait_for_verification(&remote, &b, remote_id).await;

    // The same entry, the same runs, the same board, for agents and for the admin.
    assert_eq!(
        remote_view["released_accuracy"],
        json!(0.78),
        "{remote_view}"
    );
    assert_eq!(
        comparable(&remote_view, &remote_agent),
        comparable(&local_view, &local_agent)
    );
    assert_eq!(
        store.verification_runs(remote_id).await.unwrap(),
        local.store.verification_runs(local_id).await.unwrap()
    );
    let local_board = admin_board(&local.app).await;
    let remote_board = admin_board(&remote).await;
    assert_eq!(
        find_row(&remote_board, remote_id).0,
        "flagged",
        "{remote_board}"
    );
    assert_eq!(
        comparable(&remote_board, &remote_agent),
        comparable(&local_board, &local_agent)
    );
    assert_eq!(
        comparable(&leaderboard(&remote, &b).await, &remote_agent),
        comparable(&leaderboard(&local.app, &a).await, &local_agent)
    );
    // The audit line is the in-process one, with the worker named.
    let (_, audit) = call(
        &remote,
        "GET",
        "/api/admin/audit?limit=1000",
        Some(ADMIN),
        None,
    )
    .await;
    let records = audit["records"].as_array().unwrap();
    let verify: Vec<Value> = records
        .iter()
        .filter(|r| r["action"] == "verify_entry")
        .map(|r| serde_json::from_str(r["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(verify.len(), 1, "{audit}");
    assert_eq!(verify[0]["worker"], "node-1 job 42");
    assert_eq!(verify[0]["runs"], json!(outcome.runs.len()));
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "verification_claimed"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_server_whose_verifier_only_checks_runs_no_entry_itself() {
    let labels = SplitLabels::standard();
    let (_dir, app, store) = world_with_workers(&labels).await;
    let (_, a) = new_agent(&app, "a").await;
    let snapshot = upload(
        &app,
        &a,
        method_archive("m", &json!({ "*": labels.scored(1000, 300, 200) })),
    )
    .await;
    let (_, created) = enter(&app, &a, &snapshot, &[1, 2, 3]).await;
    let id = created["entry_id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entry = store.entry(id).await.unwrap().unwrap();
    assert_eq!(entry.verification, aar_store::VerificationState::Queued);
}

#[tokio::test]
async fn the_workers_token_cannot_be_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aar.db").display());
    let store = Store::connect(&url).await.unwrap();
    let labels = SplitLabels::standard();
    let state = AppState::with_verification(
        store,
        registry(&labels),
        ADMIN,
        entry_policy(),
        None,
        Some(&format!(" {ADMIN}\n")),
    );
    assert!(
        matches!(&state, Err(ServerError::WorkerToken(why)) if why.contains("admin token")),
        "{state:?}"
    );
}

#[tokio::test]
async fn entering_the_same_method_again_returns_the_first_entry() {
    let labels = SplitLabels::standard();
    let (_dir, app, store) = world_with_workers(&labels).await;
    let (_, a) = new_agent(&app, "a").await;
    let (_, b) = new_agent(&app, "b").await;
    let archive = method_archive("m", &json!({ "*": labels.scored(1000, 300, 200) }));
    let snapshot = upload(&app, &a, archive.clone()).await;
    let (status, first) = enter(&app, &a, &snapshot, &[1, 2, 3]).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // A researcher resumed after losing its job enters what it already entered.
    let (status, again) = enter(&app, &a, &snapshot, &[1, 2, 3]).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["entry_id"], first["entry_id"]);
    assert_eq!(again["duplicate"], json!(true));
    // Other seeds, or another author, make a new entry.
    let (status, other_seeds) = enter(&app, &a, &snapshot, &[4, 5, 6]).await;
    assert_eq!(status, StatusCode::CREATED, "{other_seeds}");
    assert_ne!(other_seeds["entry_id"], first["entry_id"]);
    let snapshot_b = upload(&app, &b, archive).await;
    let (status, by_b) = enter(&app, &b, &snapshot_b, &[1, 2, 3]).await;
    assert_eq!(status, StatusCode::CREATED, "{by_b}");
    assert_eq!(store.all_entries().await.unwrap().len(), 3);
}
