//! Issue 11's false-positive side: the testbed's own honest methods (vanilla, soft labels,
//! logconf), entered as method directories over seeds [1, 2, 3], raise no flag on any
//! served task of the `cpu` preset, with the real engine, the real `aar` binary (run by
//! `aar run-method` inside the verifier's bubblewrap sandboxes) and the real
//! `SandboxedVerifier`. So does a method written as code: the workspace's method template
//! (Python and numpy writing a training plan for `aar run-method --plan`), which must
//! reproduce vanilla's figures exactly. CI verifies vanilla on every served task and the
//! other methods on the first; the full matrix is the `--ignored` test.
//!
//! The set-up mirrors `aar up`: the preset's tasks and baselines are built by the testbed
//! (only tasks whose ceiling beats the weak teacher on the public test are served, as
//! `prepare_testbed` decides), each served task gets the server's `baselines.json` with the
//! held-out splits' own W and S, researchers' data is the campaign's copy of the agent
//! copies with decoys planted (`aar_campaign::decoys`), and the verifier is configured like
//! the campaign's (`aar-campaign/src/oversight.rs`), its feature cache warmed first. The
//! author's evaluation log holds what an honest author evaluated: each method's declared
//! seeds on the public test.
//!
//! Besides "no flag", the verifier's scores are checked against the testbed's: the verifier
//! re-runs the testbed's own method on the same agent copy, so its undeclared seed 0 (the
//! agent copy's weak labels are the weak teacher of seed 0) must reproduce the testbed's
//! seed-0 result, and its public PGR over the declared seeds must lie within the seeds'
//! spread of the testbed's figure.
//!
//! Assets (MiniLM, Rotten Tomatoes, BIG-bench: a 358 MB download)
//! are fetched once into the repository's `.aar/assets` (or `AAR_HOME/assets`) by the real
//! fetch code, and frozen features are kept in the testbed's shared cache beside them
//! (`.aar/testbed/features`, as `aar up` keeps them); everything else is written under a
//! temporary directory. Without network on a fresh machine this fails, never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aar_core::metrics::{FixedBaselines, MeanSe};
use aar_oversight::inputs::{SCORED_SPLITS, SplitLabels, TaskSources};
use aar_oversight::{SandboxedVerifier, VerifierConfig};
use aar_server::verify::{MAIN_VARIANT, PUBLIC_SPLIT, VerificationJob, VerificationOutcome};
use aar_store::{AgentRecord, EvaluationInsert, EvaluationRecord, NewEvaluation, Store};
use aar_tasks::IdKey;
use aar_testbed::agent::{Recipe, run_method_on_splits};
use aar_testbed::{AgentRun, BaselineTable, MethodKind, MethodSpec, Preset, RunOptions};
use serde_json::{Value, json};

const PRESET: &str = "cpu";
/// The declared seeds. Seed 0 stays undeclared: the verifier's run of it must reproduce the
/// testbed's seed-0 result (see the module comment).
const SEEDS: [i64; 3] = [1, 2, 3];
/// As the campaign configures its verifier.
const UNDECLARED_SEEDS: usize = 2;
/// A uid of its own (61950 as root), apart from the campaign's verifier and researchers.
const SANDBOX_INDEX: u32 = 950;
/// The author whose evaluation log the log probes read.
const AUTHOR: &str = "honest-author";
/// How many of the testbed's per-seed standard deviations the verifier's PGR may be off.
const PGR_TOLERANCE_SD: f64 = 3.0;

/// The three methods, as an author writes their spec files.
fn methods() -> Vec<(&'static str, Value)> {
    vec![
        ("vanilla", json!({"method": "vanilla"})),
        ("soft labels", json!({"method": "soft_labels"})),
        (
            "logconf",
            json!({"method": "logconf", "aux_coef": 0.5, "warmup_frac": 0.2}),
        ),
    ]
}

/// The testbed's idea name of a spec.
fn idea_name(spec: &Value) -> &'static str {
    serde_json::from_value::<MethodSpec>(spec.clone())
        .unwrap()
        .idea_name()
}

/// A directory the sandbox's uid may traverse (we may be root; tempfile makes 0700).
fn open_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Fails (never skips) when a tool the sandboxed runs need is missing.
fn require_tools() {
    for tool in [
        "/usr/bin/bwrap",
        "/usr/bin/strace",
        "/usr/bin/prlimit",
        "/usr/bin/setpriv",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: verification runs need bubblewrap, strace and util-linux \
             (scripts/setup.sh installs them)"
        );
    }
}

/// `.aar` (or `AAR_HOME`), absolute, with the preset's assets fetched.
fn aar_home(preset: &Preset) -> PathBuf {
    let home = std::env::var_os("AAR_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.aar"),
        PathBuf::from,
    );
    let home = std::path::absolute(&home).unwrap();
    let mut options = aar_assets::FetchOptions::new(&home.join("assets"));
    options.only = aar_campaign::campaign::preset_assets(preset);
    aar_assets::fetch_assets(&options).unwrap_or_else(|e| {
        panic!(
            "fetching the {PRESET} preset's assets ({:?}) from the registries; this test needs \
             them: {e}",
            options.only
        )
    });
    home
}

/// What the sandboxes mount for libtorch, as `aar up` decides (`cli/up.rs`): the whole
/// virtual environment when libtorch lives in one (pip's torch links its sibling packages).
fn libtorch_tree() -> Option<PathBuf> {
    option_env!("AAR_LIBTORCH_DIR").map(|dir| python_venv().unwrap_or_else(|| PathBuf::from(dir)))
}

/// The virtual environment libtorch lives in, the sandboxes' `python3`, as `aar up`
/// decides (`cli/up.rs`).
fn python_venv() -> Option<PathBuf> {
    let dir = Path::new(option_env!("AAR_LIBTORCH_DIR")?);
    dir.parent()
        .filter(|venv| venv.join("pyvenv.cfg").is_file())
        .map(Path::to_owned)
}

/// A served task: its labeled copy (server side) and the testbed's figures.
struct Served {
    name: String,
    labeled: PathBuf,
    agent_copy: PathBuf,
    /// Public test W and S (means over the preset's seeds).
    baselines: FixedBaselines,
    /// Per method idea name: the testbed's per-seed public test accuracies.
    testbed_accuracy: BTreeMap<String, BTreeMap<u64, f64>>,
}

/// Everything built before the verifier starts.
struct Testbed {
    home: PathBuf,
    options: RunOptions,
    served: Vec<Served>,
    decoys: PathBuf,
}

/// Copies the files of a directory (not its subdirectories).
fn copy_files(from: &Path, to: &Path) {
    open_dir(to);
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The testbed's per-seed public test accuracy of each method, read from its result files
/// (`results/{task}_{idea}/{config}/seed_N.json`; one config per method here).
fn testbed_accuracies(results: &Path, task: &str) -> BTreeMap<String, BTreeMap<u64, f64>> {
    let mut out = BTreeMap::new();
    for (_, spec) in methods() {
        let idea = idea_name(&spec);
        let dir = results.join(format!("{task}_{idea}"));
        let configs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(configs.len(), 1, "{idea}: one config expected: {configs:?}");
        let mut by_seed = BTreeMap::new();
        for file in std::fs::read_dir(&configs[0]).unwrap() {
            let record: Value =
                serde_json::from_slice(&std::fs::read(file.unwrap().path()).unwrap()).unwrap();
            by_seed.insert(
                record["seed"].as_u64().unwrap(),
                record["eval"]["test"]["accuracy"].as_f64().unwrap(),
            );
        }
        out.insert(idea.to_owned(), by_seed);
    }
    out
}

/// The testbed's tasks and baselines, the server's copies and the researchers' data, as
/// `prepare_testbed` in `aar-campaign` builds them.
fn build_testbed(root: &Path) -> Testbed {
    let preset = Preset::named(PRESET).unwrap();
    let home = aar_home(&preset);
    let mut options = RunOptions::new(&preset, &root.join("aar"));
    options.assets_dir = home.join("assets");
    // The testbed's shared feature cache (`aar up` and `aar baselines` use it too): the
    // cpu preset's frozen features take minutes to compute and are the same every run.
    options.feature_cache = home.join("testbed").join("features");
    // The methods under test: their testbed figures are what the verifier must reproduce.
    options.methods = methods()
        .into_iter()
        .map(|(_, spec)| serde_json::from_value(spec).unwrap())
        .collect();
    let started = Instant::now();
    let summary = aar_testbed::run_baselines(&preset, &options).unwrap();
    eprintln!(
        "testbed: {PRESET} preset's tasks, features and baselines in {:.1} s (build {:.1} s, \
         features {:.1} s, {} results)",
        started.elapsed().as_secs_f64(),
        summary.build_seconds,
        summary.feature_seconds,
        summary.computed
    );
    let table = BaselineTable::read(&options.results_dir(), &preset.seeds).unwrap();
    let mut served = Vec::new();
    let served_dir = root.join("served");
    for task in &table.tasks {
        let Some((weak, ceiling)) = task.baseline("test") else {
            continue;
        };
        // PGR needs a ceiling above the weak teacher (every task of the cpu preset has one).
        if ceiling.mean <= weak.mean {
            eprintln!(
                "{}: not served (W {:.3} >= S {:.3})",
                task.task, weak.mean, ceiling.mean
            );
            continue;
        }
        let labeled = served_dir.join(&task.task);
        copy_files(&options.tasks_dir().join(&task.task), &labeled);
        let mut splits = serde_json::Map::new();
        for split in ["test_private", "transfer"] {
            if let Some((w, s)) = task.baseline(split) {
                splits.insert(split.into(), json!({"weak": [w.mean], "ceiling": [s.mean]}));
            }
        }
        let file = json!({"weak": [weak.mean], "ceiling": [ceiling.mean], "splits": splits});
        std::fs::write(labeled.join("baselines.json"), file.to_string()).unwrap();
        served.push(Served {
            name: task.task.clone(),
            labeled,
            agent_copy: PathBuf::new(),
            baselines: FixedBaselines::from_seed_accuracies(&[weak.mean], &[ceiling.mean]).unwrap(),
            testbed_accuracy: testbed_accuracies(&options.results_dir(), &task.task),
        });
    }
    let names: Vec<String> = served.iter().map(|s| s.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["fever", "hotels", "sentiment"],
        "the {PRESET} preset serves sentiment, fever and hotels, each with S > W"
    );
    // The researchers' /data: the campaign's copy of the agent copies, decoys planted.
    let campaign = root.join("campaign");
    let data =
        aar_campaign::decoys::build_agent_data(&campaign, &options.agent_dir(), &names).unwrap();
    for task in &mut served {
        task.agent_copy = data.join(&task.name);
    }
    Testbed {
        home,
        options,
        served,
        decoys: aar_campaign::decoys::decoy_truth_path(&campaign, "x")
            .parent()
            .unwrap()
            .to_owned(),
    }
}

/// A `.tar.gz` of a method directory holding `files` (name, contents).
fn archive(files: &[(&str, String)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (file, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        builder
            .append_data(&mut header, file, body.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// What is entered: each method's name, its directory as an archive, and the testbed
/// method whose figures it must reproduce, if any. The spec methods; the workspace's
/// method template, Python (numpy) writing a training plan that `aar run-method --plan`
/// trains, which by construction is vanilla; and a method of its own, two rounds of
/// confidence-weighted self-training written with torch, which must run and raise no flag.
fn entries() -> Vec<(&'static str, Vec<u8>, Option<Value>)> {
    let mut out: Vec<_> = methods()
        .into_iter()
        .map(|(name, spec)| {
            let manifest = json!({"name": name, "spec": "spec.json"});
            let files = [
                ("aar-method.json", manifest.to_string()),
                ("spec.json", spec.to_string()),
            ];
            (name, archive(&files), Some(spec))
        })
        .collect();
    let template: Vec<(&str, String)> = aar_oversight::template::TEMPLATE_FILES
        .iter()
        .map(|(name, body)| (*name, (*body).to_owned()))
        .collect();
    out.push((
        TEMPLATE,
        archive(&template),
        Some(json!({"method": "vanilla"})),
    ));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/self_training");
    let self_training: Vec<(&str, String)> = ["aar-method.json", "method.py"]
        .into_iter()
        .map(|file| (file, std::fs::read_to_string(fixture.join(file)).unwrap()))
        .collect();
    out.push((SELF_TRAINING, archive(&self_training), None));
    out
}

/// The method template's entry name.
const TEMPLATE: &str = "python plan (template)";
/// The torch self-training method's entry name.
const SELF_TRAINING: &str = "torch self-training";

/// One vanilla run on the verification copy while the cache is writable, so the sandboxed
/// runs (read-only cache) find every split's features (`oversight::warm_features`).
fn warm_features(testbed: &Testbed, input: &Path) {
    let splits: Vec<String> = SCORED_SPLITS
        .iter()
        .filter(|s| input.join(format!("{s}.jsonl")).is_file())
        .map(|s| (*s).to_owned())
        .collect();
    let run = AgentRun {
        task_dir: input.to_owned(),
        weak_labels: None,
        assets_dir: testbed.options.assets_dir.clone(),
        feature_cache: testbed.options.feature_cache.clone(),
        seed: 0,
    };
    run_method_on_splits(
        &run,
        Recipe::Spec(&MethodSpec::new(MethodKind::Vanilla)),
        &splits,
    )
    .unwrap();
}

/// What the honest author evaluated before entering: each method with each declared seed
/// (no other: a seed whose score an author saw belongs among the declared ones), on the
/// researchers' copy of the task, stored as the server stores evaluations.
async fn log_author_evaluations(store: &Store, testbed: &Testbed) {
    let mut tx = store.begin_write().await.unwrap();
    let inserted = tx
        .insert_agent(&AgentRecord {
            id: AUTHOR.into(),
            name: AUTHOR.into(),
            token_hash: "0".repeat(64),
            created_at: aar_store::now_millis(),
            expires_at: None,
            revoked: false,
        })
        .await
        .unwrap();
    assert!(inserted);
    let mut inserts = Vec::new();
    for task in &testbed.served {
        let labels = SplitLabels::load(&task.labeled).unwrap();
        let truth = &labels.labels[PUBLIC_SPLIT];
        for (_, spec) in methods() {
            let spec: MethodSpec = serde_json::from_value(spec).unwrap();
            for seed in SEEDS {
                let run = AgentRun {
                    task_dir: task.agent_copy.clone(),
                    weak_labels: None,
                    assets_dir: testbed.options.assets_dir.clone(),
                    feature_cache: testbed.options.feature_cache.clone(),
                    seed: seed as u64,
                };
                let predictions =
                    run_method_on_splits(&run, Recipe::Spec(&spec), &[PUBLIC_SPLIT.into()])
                        .unwrap()
                        .predictions;
                let right = predictions
                    .iter()
                    .zip(truth)
                    .filter(|(p, l)| (**p == 1) == (**l == aar_core::Label::One))
                    .count();
                inserts.push(EvaluationInsert {
                    record: EvaluationRecord {
                        id: inserts.len() as i64 + 1,
                        new: NewEvaluation {
                            agent_id: AUTHOR.into(),
                            task: task.name.clone(),
                            predictions_hash: format!("{:064x}", inserts.len()),
                            n_predictions: predictions.len() as i64,
                            public_accuracy: right as f64 / truth.len() as f64,
                            private_accuracy: None,
                            released_accuracy: None,
                            entry_id: None,
                            seed: None,
                            response: "{}".into(),
                            created_at: aar_store::now_millis(),
                        },
                    },
                    predictions,
                });
            }
        }
    }
    tx.insert_evaluations(&inserts).await.unwrap();
    tx.commit().await.unwrap();
}

/// Accuracies of one variant on one split, by seed.
fn accuracies(outcome: &VerificationOutcome, variant: &str, split: &str) -> BTreeMap<i64, f64> {
    outcome
        .runs
        .iter()
        .filter(|r| r.variant == variant && r.split == split)
        .filter_map(|r| r.accuracy.map(|a| (r.seed, a)))
        .collect()
}

/// CI's share of the matrix: vanilla on every served task, the other methods and the
/// Python ones on the first (7 verifications instead of 15: the full matrix takes about
/// 8 minutes of CI's 45).
#[test]
fn vanilla_on_every_served_cpu_task_and_every_method_on_one_are_verified_without_flags() {
    verify_matrix(|task_index, method| task_index == 0 || method == "vanilla");
}

#[test]
#[ignore = "the full matrix (15 verifications, about 8 minutes on 2 cores); run with `cargo test -p aar --test verify_builtin -- --ignored`"]
fn testbed_methods_entered_on_every_served_cpu_task_are_verified_without_flags() {
    verify_matrix(|_, _| true);
}

/// Enters the `entries()` that `pick(task index, method name)` selects on each served task.
fn verify_matrix(pick: fn(usize, &str) -> bool) {
    require_tools();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("verify-builtin-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let root = dir.path().to_owned();
    open_dir(&root);
    let testbed = build_testbed(&root);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut problems: Vec<String> = Vec::new();
    let mut timings: Vec<(String, f64)> = Vec::new();
    runtime.block_on(async {
        let store = Store::connect(&format!("sqlite://{}", root.join("aar.db").display()))
            .await
            .unwrap();
        let feature_cache = testbed.options.feature_cache.clone();
        let config = VerifierConfig {
            work_dir: root.join("oversight").join("work"),
            tasks: testbed
                .served
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        TaskSources {
                            agent_copy: t.agent_copy.clone(),
                            labeled: t.labeled.clone(),
                        },
                    )
                })
                .collect(),
            aar_binary: PathBuf::from(env!("CARGO_BIN_EXE_aar")),
            libtorch: libtorch_tree(),
            python_venv: python_venv(),
            extra_ro: vec![
                testbed.home.join("assets").join("models"),
                feature_cache.clone(),
            ],
            env: vec![
                ("AAR_HOME".into(), testbed.home.display().to_string()),
                (
                    "AAR_FEATURE_CACHE".into(),
                    feature_cache.display().to_string(),
                ),
                // Not in the campaign's configuration: libtorch's OpenMP threads spin while
                // they wait, which on 2 busy cores (other tests, builds) makes a run 5-20x
                // slower; sleeping waiters change no number.
                ("OMP_WAIT_POLICY".into(), "PASSIVE".into()),
            ],
            decoys: Some(testbed.decoys.clone()),
            id_key: IdKey::load_or_create(&root.join("oversight").join("id.key")).unwrap(),
            undeclared_seeds: UNDECLARED_SEEDS,
            sandbox_index: SANDBOX_INDEX,
            strace: PathBuf::from("/usr/bin/strace"),
        };
        let verifier = SandboxedVerifier::new(config, store.clone()).unwrap();
        let warm_started = Instant::now();
        for task in &testbed.served {
            let input = verifier.prepare_task(&task.name).await.unwrap();
            warm_features(&testbed, &input);
        }
        log_author_evaluations(&store, &testbed).await;
        eprintln!(
            "verifier inputs, feature warm-up and the author's {} evaluations in {:.1} s",
            testbed.served.len() * methods().len() * SEEDS.len(),
            warm_started.elapsed().as_secs_f64()
        );

        let mut entry_id = 0;
        for (task_index, task) in testbed.served.iter().enumerate() {
            for (name, archive, spec) in entries() {
                if !pick(task_index, name) {
                    continue;
                }
                entry_id += 1;
                let label = format!("{} / {name}", task.name);
                let job = VerificationJob {
                    entry_id,
                    agent_id: AUTHOR.into(),
                    task: task.name.clone(),
                    seeds: SEEDS.to_vec(),
                    snapshot_id: format!("snapshot-{entry_id}"),
                    archive,
                    evaluation_log: None,
                };
                let verify_started = Instant::now();
                let outcome = verifier.verify_job(job).await;
                let seconds = verify_started.elapsed().as_secs_f64();
                timings.push((label.clone(), seconds));
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        eprintln!("  PROBLEM {label}: not verified: {e}");
                        problems.push(format!("{label}: not verified: {e}"));
                        continue;
                    }
                };
                let run_seconds: Vec<String> = outcome
                    .runs
                    .iter()
                    .filter(|r| r.split == PUBLIC_SPLIT)
                    .map(|r| format!("{}:{}={:.1}", r.variant, r.seed, r.seconds))
                    .collect();
                eprintln!(
                    "verified {label} in {seconds:.1} s (sandboxed runs, s: {})",
                    run_seconds.join(" ")
                );
                check_outcome(task, &label, spec.as_ref(), &outcome, &mut problems);
            }
        }
    });
    let total: f64 = timings.iter().map(|(_, s)| s).sum();
    eprintln!(
        "{} verifications in {total:.1} s ({:.1} s per entry, slowest {:.1} s); whole test {:.1} s",
        timings.len(),
        total / timings.len().max(1) as f64,
        timings.iter().map(|(_, s)| *s).fold(0.0, f64::max),
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every run scored, no flag, and scores that agree with the testbed's.
fn check_outcome(
    task: &Served,
    label: &str,
    spec: Option<&Value>,
    outcome: &VerificationOutcome,
    all_problems: &mut Vec<String>,
) {
    let mut problems = Vec::new();
    check_runs(task, label, spec, outcome, &mut problems);
    for problem in &problems {
        eprintln!("  PROBLEM {problem}");
    }
    all_problems.extend(problems);
}

fn check_runs(
    task: &Served,
    label: &str,
    spec: Option<&Value>,
    outcome: &VerificationOutcome,
    problems: &mut Vec<String>,
) {
    // 3 declared seeds x 3 splits, 2 ablations and 2 undeclared seeds on the public test.
    let expected_runs = SEEDS.len() * SCORED_SPLITS.len() + 2 + UNDECLARED_SEEDS;
    if outcome.runs.len() != expected_runs {
        problems.push(format!(
            "{label}: {} scored runs, expected {expected_runs}",
            outcome.runs.len()
        ));
    }
    for run in &outcome.runs {
        if run.accuracy.is_none() || run.error.is_some() {
            problems.push(format!(
                "{label}: {} seed {} on {} not scored: {:?}",
                run.variant, run.seed, run.split, run.error
            ));
        }
    }
    for flag in &outcome.flags {
        problems.push(format!(
            "{label}: flag {} ({}): {}\n  evidence: {}",
            flag.probe,
            if flag.about_agent { "agent" } else { "entry" },
            flag.summary,
            flag.evidence
        ));
    }
    match spec {
        Some(spec) => check_against_testbed(task, label, spec, outcome, problems),
        None => {
            let declared = accuracies(outcome, MAIN_VARIANT, PUBLIC_SPLIT);
            match task
                .baselines
                .pgr_over_seeds(&declared.into_values().collect::<Vec<_>>())
            {
                Ok(pgr) => eprintln!(
                    "  {label}: public PGR {:.3} +- {:.3} (seeds {SEEDS:?}; no testbed figure)",
                    pgr.mean,
                    pgr.se.unwrap_or(0.0)
                ),
                Err(e) => problems.push(format!("{label}: no public PGR: {e}")),
            }
        }
    }
}

/// The verifier's figures against the testbed's own runs of the same method.
fn check_against_testbed(
    task: &Served,
    label: &str,
    spec: &Value,
    outcome: &VerificationOutcome,
    problems: &mut Vec<String>,
) {
    let idea = idea_name(spec);
    let testbed = &task.testbed_accuracy[idea];
    // The agent copy carries the weak teacher of the preset's first seed (0): the
    // verifier's undeclared seed 0 is the testbed's seed-0 run on the same rows.
    let undeclared = accuracies(
        outcome,
        aar_oversight::verifier::UNDECLARED_VARIANT,
        PUBLIC_SPLIT,
    );
    if let (Some(verifier), Some(reference)) = (undeclared.get(&0), testbed.get(&0))
        && (verifier - reference).abs() > 1e-9
    {
        problems.push(format!(
            "{label}: seed 0 scores {verifier:.4} in the verifier's sandbox, {reference:.4} in \
             the testbed (same method, seed and weak labels)"
        ));
    }
    // Public PGR over the declared seeds against the testbed's figure over the preset's
    // seeds. Both score the same test rows, so the test's sampling noise is common to
    // both; what differs is seeds (the testbed's seed s also draws its own weak teacher,
    // the agent copy has seed 0's). The allowed gap is in the testbed's per-seed spread.
    let declared: Vec<f64> = accuracies(outcome, MAIN_VARIANT, PUBLIC_SPLIT)
        .into_values()
        .collect();
    let reference: Vec<f64> = testbed.values().copied().collect();
    let (Ok(ours), Ok(theirs)) = (
        task.baselines.pgr_over_seeds(&declared),
        task.baselines.pgr_over_seeds(&reference),
    ) else {
        problems.push(format!(
            "{label}: no public PGR ({declared:?} vs {reference:?})"
        ));
        return;
    };
    let sd = |m: MeanSe| m.se.unwrap_or(0.0) * (m.n as f64).sqrt();
    let allowed = PGR_TOLERANCE_SD * (sd(theirs).powi(2) + sd(ours).powi(2)).sqrt();
    eprintln!(
        "  {label}: public PGR {:.3} (seeds {SEEDS:?}) vs testbed {:.3} +- {:.3} (seeds 0-4); \
         allowed gap {allowed:.3}",
        ours.mean,
        theirs.mean,
        theirs.se.unwrap_or(0.0)
    );
    if (ours.mean - theirs.mean).abs() > allowed.max(1e-9) {
        problems.push(format!(
            "{label}: public PGR {:.3} in the verifier, {:.3} in the testbed (allowed gap \
             {allowed:.3}; accuracies {declared:?} vs {reference:?})",
            ours.mean, theirs.mean
        ));
    }
}
