//! The generalization gate end to end, without a campaign: a `tiny`-sized preset with one
//! held-out task (FEVER claims, whose ceiling beats the weak teacher at these sizes) and a
//! cheap second pair (the bag of words against MiniLM's layer 3), an entry whose method is
//! the workspace's method template (Python writing a training plan: vanilla by
//! construction) entered on sentiment, run through `run_gate` with the real verifier's
//! sandboxed runs and the real `aar` binary.
//!
//! The gate's figures are checked against an independent computation of the same numbers:
//! per declared seed, the testbed's own runner (`run_method_on_splits`, vanilla, unsandboxed)
//! on the same target's agent copy, scored here against the labels (and seed 0 also against
//! the testbed's own vanilla result file, written by `run_baselines`), and PGR from those
//! accuracies against the target's baselines as the testbed's table reads them. The
//! report's section must list every target, and a rerun must come from the gate's cache.
//!
//! Assets (MiniLM, Rotten Tomatoes, BIG-bench) come from the repository's `.aar/assets` (or
//! `AAR_HOME/assets`), fetched by the real fetch code when missing; frozen features are kept
//! in the testbed's shared cache beside them, as `verify_builtin.rs` keeps them; everything
//! else is written under a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aar_campaign::generalize::{
    BOOTSTRAP_SEED, GENERALIZATION_FILE, GateEntry, GateSetup, Generalization, MainTestbed,
    SCORED_SPLIT, run_gate,
};
use aar_core::metrics::FixedBaselines;
use aar_core::noise::{CorrectRows, DEFAULT_RESAMPLES, pgr_estimate};
use aar_oversight::inputs::SplitLabels;
use aar_store::Store;
use aar_testbed::agent::{Recipe, run_method_on_splits};
use aar_testbed::preset::{Corpus, LearnerSpec, ModelPair, TaskSource, TaskSpec};
use aar_testbed::{AgentRun, BaselineTable, MethodKind, MethodSpec, Preset, RunOptions};
use serde_json::Value;

/// The entry's declared seeds. Seed 0 is the seed of the agent copies' weak labels, so the
/// testbed's own seed-0 vanilla result is the same run.
const SEEDS: [i64; 2] = [0, 1];
/// MiniLM's layer the second pair's student reads.
const PAIR_LAYER: usize = 3;

fn open_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn require_tools() {
    for tool in [
        "/usr/bin/bwrap",
        "/usr/bin/strace",
        "/usr/bin/prlimit",
        "/usr/bin/setpriv",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: the gate's sandboxed runs need bubblewrap, strace and \
             util-linux (scripts/setup.sh installs them)"
        );
    }
}

/// `tiny` with FEVER held out and a second pair.
fn gate_preset() -> Preset {
    let mut preset = Preset::named("tiny").unwrap();
    preset.name = "tiny-gate".into();
    let sizes = preset.tasks[0].sizes;
    preset.held_out = vec![TaskSpec {
        name: "fever".into(),
        source: TaskSource::Text {
            corpus: Corpus::Fever,
        },
        sizes,
        weak: None,
        strong: None,
    }];
    let LearnerSpec::Frozen {
        model,
        pooling,
        max_tokens,
        head,
        ..
    } = preset.strong.clone()
    else {
        panic!("tiny's student is a frozen MiniLM");
    };
    preset.second_pair = Some(ModelPair {
        weak: preset.weak.clone(),
        strong: LearnerSpec::Frozen {
            model,
            layer: Some(PAIR_LAYER),
            pooling,
            max_tokens,
            pair: false,
            head,
        },
    });
    preset
}

/// `.aar` (or `AAR_HOME`), absolute, with every asset of the gate fetched.
fn aar_home(preset: &Preset) -> PathBuf {
    let home = std::env::var_os("AAR_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.aar"),
        PathBuf::from,
    );
    let home = std::path::absolute(&home).unwrap();
    let mut with_held_out = preset.clone();
    with_held_out.tasks.extend(preset.held_out.iter().cloned());
    let mut options = aar_assets::FetchOptions::new(&home.join("assets"));
    options.only = aar_campaign::campaign::preset_assets(&with_held_out);
    aar_assets::fetch_assets(&options)
        .unwrap_or_else(|e| panic!("fetching {:?}; this test needs them: {e}", options.only));
    home
}

fn libtorch_tree() -> Option<PathBuf> {
    option_env!("AAR_LIBTORCH_DIR").map(|dir| python_venv().unwrap_or_else(|| PathBuf::from(dir)))
}

fn python_venv() -> Option<PathBuf> {
    let dir = Path::new(option_env!("AAR_LIBTORCH_DIR")?);
    dir.parent()
        .filter(|venv| venv.join("pyvenv.cfg").is_file())
        .map(Path::to_owned)
}

/// The method template as a snapshot archive.
fn template_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (file, body) in aar_oversight::template::TEMPLATE_FILES {
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

/// The main preset's testbed as a campaign builds it: served tasks are those whose ceiling
/// beats the weak teacher on the public test.
fn main_testbed(root: &Path, home: &Path, preset: &Preset) -> MainTestbed {
    let mut options = RunOptions::new(preset, &root.join("aar"));
    options.assets_dir = home.join("assets");
    options.feature_cache = home.join("testbed").join("features");
    options.methods = vec![MethodSpec::new(MethodKind::Vanilla)];
    aar_testbed::run_baselines(preset, &options).unwrap();
    let mut table = BaselineTable::read(&options.results_dir(), &preset.seeds).unwrap();
    table
        .tasks
        .retain(|t| t.baseline("test").is_some_and(|(w, s)| s.mean > w.mean));
    assert_eq!(table.tasks.len(), 1, "tiny serves sentiment");
    MainTestbed {
        preset: preset.clone(),
        options,
        table,
    }
}

/// Where the testbed put a target's preset: the main one's directory or its sibling.
fn target_dirs(main: &MainTestbed, preset: &str) -> RunOptions {
    RunOptions {
        work_dir: main.options.work_dir.with_file_name(preset),
        ..main.options.clone()
    }
}

/// The testbed's own seed-0 vanilla accuracy on the scored split, from its result file.
fn testbed_seed0_accuracy(options: &RunOptions, task: &str) -> f64 {
    let dir = options.results_dir().join(format!("{task}_vanilla_w2s"));
    let configs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(configs.len(), 1, "{configs:?}");
    let record: Value =
        serde_json::from_slice(&std::fs::read(configs[0].join("seed_0.json")).unwrap()).unwrap();
    record["eval"][SCORED_SPLIT]["accuracy"].as_f64().unwrap()
}

/// The independent figure: the testbed's vanilla on the target's agent copy with `seed`,
/// scored against the target's labels, row by row.
fn independent_rows(options: &RunOptions, task: &str, seed: i64) -> CorrectRows {
    let run = AgentRun {
        task_dir: options.agent_dir().join(task),
        weak_labels: None,
        assets_dir: options.assets_dir.clone(),
        feature_cache: options.feature_cache.clone(),
        seed: seed as u64,
    };
    let vanilla = MethodSpec::new(MethodKind::Vanilla);
    let predictions = run_method_on_splits(&run, Recipe::Spec(&vanilla), &[SCORED_SPLIT.into()])
        .unwrap()
        .splits
        .remove(SCORED_SPLIT)
        .unwrap();
    let labels = SplitLabels::load(&options.tasks_dir().join(task)).unwrap();
    let truth = &labels.labels[SCORED_SPLIT];
    CorrectRows::new(
        predictions
            .iter()
            .zip(truth)
            .map(|(p, l)| (*p == 1) == (*l == aar_core::Label::One))
            .collect(),
    )
}

/// Every target's figures against the independent computation.
fn check_targets(main: &MainTestbed, report: &Generalization) {
    let expected = [
        ("sentiment", "tiny-gate", "own_task"),
        ("heldout.fever", "tiny-gate-heldout", "held_out"),
        ("pair2.sentiment", "tiny-gate-pair2", "second_pair"),
        ("pair2.fever", "tiny-gate-pair2", "second_pair"),
    ];
    let keys: Vec<&str> = report.targets.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, expected.map(|e| e.0));
    let entry = &report.entries[0];
    for ((key, preset, kind), result) in expected.iter().zip(&entry.results) {
        let info = report.targets.iter().find(|t| &t.key == key).unwrap();
        assert_eq!(info.skipped, None, "{key}: S must beat W on {SCORED_SPLIT}");
        assert_eq!(
            (result.target.as_str(), result.kind.as_str()),
            (*key, *kind)
        );
        let options = target_dirs(main, preset);
        let task = info.task.as_str();
        let gate: Vec<f64> = result.seeds.iter().map(|s| s.accuracy.unwrap()).collect();
        let independent: Vec<CorrectRows> = SEEDS
            .iter()
            .map(|&s| independent_rows(&options, task, s))
            .collect();
        let accuracies: Vec<f64> = independent.iter().map(CorrectRows::accuracy).collect();
        eprintln!("{key}: gate accuracies {gate:?}, independent {accuracies:?}");
        assert_eq!(gate, accuracies, "{key}: per-seed accuracies");
        assert_eq!(
            gate[0],
            testbed_seed0_accuracy(&options, task),
            "{key}: seed 0 is the testbed's own vanilla run"
        );
        let table = BaselineTable::read(&options.results_dir(), &main.preset.seeds).unwrap();
        let outcomes = table.outcomes(task, SCORED_SPLIT).unwrap_or_else(|| {
            panic!("{key}: the testbed's result files hold no per-row outcomes")
        });
        assert_eq!(
            outcomes.vanilla[0], independent[0],
            "{key}: seed 0 row by row is the testbed's own vanilla run"
        );
        // PGR with test noise from the independent rows against the target's own W and
        // S: the same replicates, so the same figure to the last bit.
        let expected = pgr_estimate(
            &outcomes.runs(),
            &independent,
            DEFAULT_RESAMPLES,
            BOOTSTRAP_SEED,
        )
        .unwrap();
        let gate_pgr = result.pgr.unwrap();
        assert!(!gate_pgr.seeds_only, "{key}: the error includes test noise");
        assert_eq!(
            (gate_pgr.pgr, gate_pgr.se, gate_pgr.se_test),
            (expected.pgr, Some(expected.se), Some(expected.se_test)),
            "{key}"
        );
        // The same PGR from mean accuracies against the table's W and S.
        let row = table.tasks.iter().find(|t| t.task == task).unwrap();
        let (weak, ceiling) = row.baseline(SCORED_SPLIT).unwrap();
        let by_means = FixedBaselines { weak, ceiling }
            .pgr_over_seeds(&accuracies)
            .unwrap();
        assert!((gate_pgr.pgr - by_means.mean).abs() < 1e-12, "{key}");
        let vanilla = row
            .method("vanilla_w2s")
            .unwrap()
            .split(SCORED_SPLIT)
            .unwrap();
        let vanilla_pgr = vanilla.pgr.as_ref().unwrap().mean;
        assert!(
            (result.vanilla.unwrap().pgr - vanilla_pgr).abs() < 1e-12,
            "{key}: vanilla beside the entry is the testbed's"
        );
        assert!(result.vs_vanilla.is_some(), "{key}: entry minus vanilla");
    }
    let pgrs: Vec<f64> = entry.results.iter().map(|r| r.pgr.unwrap().pgr).collect();
    let mean = pgrs.iter().sum::<f64>() / pgrs.len() as f64;
    assert_eq!(entry.mean_over, 4);
    assert!((entry.mean_pgr.unwrap().pgr - mean).abs() < 1e-12);
}

fn check_section(report: &Generalization) {
    let markdown = report.markdown();
    assert!(markdown.starts_with("## Generalization\n"), "{markdown}");
    for target in &report.targets {
        let rows = markdown
            .lines()
            .filter(|l| l.starts_with(&format!("| {} |", target.key)))
            .count();
        // Once in the targets table, once in the entry's table.
        assert_eq!(rows, 2, "{}:\n{markdown}", target.key);
    }
    assert!(
        markdown.contains("| 1 | 7 | author | python plan (template) | sentiment |"),
        "{markdown}"
    );
}

#[test]
fn the_template_generalizes_exactly_as_vanilla_on_held_out_tasks_and_a_second_pair() {
    require_tools();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("generalize-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let root = dir.path().to_owned();
    open_dir(&root);
    let preset = gate_preset();
    let home = aar_home(&preset);
    let main = main_testbed(&root, &home, &preset);
    eprintln!("main testbed in {:.1} s", started.elapsed().as_secs_f64());
    let entry = GateEntry {
        entry_id: 7,
        researcher: "author".into(),
        method: "python plan (template)".into(),
        task: "sentiment".into(),
        seeds: SEEDS.to_vec(),
        archive: template_archive(),
        private_pgr: None,
    };
    let campaign = root.join("campaign");
    open_dir(&campaign);
    let setup = GateSetup {
        campaign_root: campaign.clone(),
        aar_binary: PathBuf::from(env!("CARGO_BIN_EXE_aar")),
        libtorch: libtorch_tree(),
        python_venv: python_venv(),
        extra_ro: Vec::new(),
        interrupt: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gate = |entry: GateEntry| {
        runtime.block_on(async {
            let url = format!("sqlite://{}", root.join("aar.db").display());
            let store = Store::connect(&url).await.unwrap();
            run_gate(&setup, &main, &[entry], store).await.unwrap()
        })
    };
    let gate_started = Instant::now();
    let report = gate(entry.clone());
    eprintln!("gate in {:.1} s", gate_started.elapsed().as_secs_f64());
    eprintln!("{}", report.markdown());
    check_targets(&main, &report);
    check_section(&report);
    // Researchers' data is built from the main preset's agent copies of served tasks:
    // the held-out task and the second pair's copies live in their own presets' trees.
    let agent_copies: Vec<String> = std::fs::read_dir(main.options.agent_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(agent_copies, ["sentiment"]);
    let written = std::fs::read(campaign.join(GENERALIZATION_FILE)).unwrap();
    assert_eq!(written, serde_json::to_vec_pretty(&report).unwrap());

    // A rerun reads every finished run from the cache: the same report, no sandbox.
    let rerun_started = Instant::now();
    let rerun = gate(entry);
    eprintln!(
        "rerun in {:.1} s; whole test {:.1} s",
        rerun_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(rerun, report);
    for target in &report.targets {
        for seed in SEEDS {
            let cached = campaign
                .join("generalization/runs/7")
                .join(&target.key)
                .join(format!("seed_{seed}.json"));
            assert!(cached.is_file(), "{}", cached.display());
        }
    }
}

#[test]
fn generalize_names_a_missing_campaign() {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_aar"))
        .args([
            "generalize",
            "--campaign",
            "nowhere",
            "--preset",
            "tiny",
            "--home",
        ])
        .arg(home.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no campaign \"nowhere\"") && stderr.contains("server.db"),
        "{stderr}"
    );
}
