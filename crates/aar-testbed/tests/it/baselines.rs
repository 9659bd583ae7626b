//! The tiny preset end to end: every baseline over 5 seeds, the table against hand-computed
//! PGR and against `aar-results` reading the same files, the cache, interruption, and
//! determinism of the agent-facing runner.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use aar_core::metrics::MeanSe;
use aar_core::noise::{CorrectRows, DEFAULT_RESAMPLES, pgr_estimate};
use aar_results::{ReferenceReport, ResultCache, SeedSet};
use aar_testbed::agent::{Recipe, run_method_on_splits};
use aar_testbed::{
    AgentRun, BaselineTable, MethodKind, MethodSpec, Preset, RunOptions, SplitOutcomes,
    TestbedError, labeled_accuracy, run_baselines, run_method, write_agent_features,
};
use serde_json::Value;

use crate::aar_home;

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn accuracies(results: &std::path::Path, dir_prefix: &str, field: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for config in std::fs::read_dir(results.join(dir_prefix)).unwrap() {
        let config = config.unwrap().path();
        let mut files: Vec<_> = std::fs::read_dir(&config)
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            out.push(read(&file)[field].as_f64().unwrap());
        }
    }
    out
}

/// Every result file's eval entries hold `correct_rows`, as many as `total`, with as many
/// ones as `correct`.
fn assert_row_outcomes_match_counts(results: &Path, files: usize) {
    let mut seen = 0;
    for method in std::fs::read_dir(results).unwrap() {
        for config in std::fs::read_dir(method.unwrap().path()).unwrap() {
            for file in std::fs::read_dir(config.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                let record = read(&path);
                let eval = record["eval"].as_object().unwrap();
                assert_eq!(eval.len(), 3, "{}", path.display());
                for (split, entry) in eval {
                    let rows: CorrectRows =
                        serde_json::from_value(entry["correct_rows"].clone()).unwrap();
                    let ones = rows.rows().iter().filter(|c| **c).count() as u64;
                    let at = format!("{} {split}", path.display());
                    assert_eq!(Some(rows.len() as u64), entry["total"].as_u64(), "{at}");
                    assert_eq!(Some(ones), entry["correct"].as_u64(), "{at}");
                }
                seen += 1;
            }
        }
    }
    assert_eq!(seen, files);
}

/// A cached file written before per-row outcomes (same config hash, no `correct_rows`)
/// is recomputed, not used; the recomputed file is the same run, now with its rows.
fn old_format_files_are_recomputed(preset: &Preset, options: &RunOptions, jobs: usize) {
    let results = options.results_dir();
    let config = std::fs::read_dir(results.join("sentiment_vanilla_w2s"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let path = config.join("seed_2.json");
    let current = read(&path);
    let mut old = current.clone();
    for entry in old["eval"].as_object_mut().unwrap().values_mut() {
        entry.as_object_mut().unwrap().remove("correct_rows");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let rerun = run_baselines(preset, options).unwrap();
    assert_eq!((rerun.computed, rerun.cached), (1, jobs - 1));
    let recomputed = read(&path);
    assert_eq!(recomputed["eval"], current["eval"]);
    assert_eq!(recomputed["config_hash"], current["config_hash"]);
}

/// Per row, the fraction of `runs` right on it.
fn per_row(runs: &[CorrectRows]) -> Vec<f64> {
    let rows = runs[0].len();
    (0..rows)
        .map(|i| runs.iter().filter(|r| r.rows()[i]).count() as f64 / runs.len() as f64)
        .collect()
}

/// The delta method's standard error of PGR over test rows, an independent reference for
/// the bootstrap: per row i, with v, w, s the fractions of method, weak and ceiling seeds
/// right on it, PGR = mean(v - w) / mean(s - w), and its error over rows is about
/// sqrt(var(d) / n) / gap with d = (v - w) - PGR (s - w).
fn delta_method_se(outcomes: &SplitOutcomes, method: &[CorrectRows]) -> (f64, f64) {
    let (v, w, s) = (
        per_row(method),
        per_row(&outcomes.weak),
        per_row(&outcomes.ceiling),
    );
    let n = v.len();
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let gap = mean(&s) - mean(&w);
    let pgr = (mean(&v) - mean(&w)) / gap;
    let d: Vec<f64> = (0..n)
        .map(|i| (v[i] - w[i]) - pgr * (s[i] - w[i]))
        .collect();
    let d_mean = mean(&d);
    let var = d.iter().map(|x| (x - d_mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (pgr, (var / n as f64).sqrt() / gap)
}

/// Each run's rows repeated `times` over: the same per-row structure, `times` more rows.
fn tiled(runs: &[CorrectRows], times: usize) -> Vec<CorrectRows> {
    runs.iter()
        .map(|r| CorrectRows::new(r.rows().repeat(times)))
        .collect()
}

/// The table's test-noise error on vanilla's test PGR against the delta method on the
/// same rows. At tiny's 64 rows the gap (0.13) is under three of its own errors, so the
/// bootstrapped ratio has a heavy tail and its spread is well above the linearisation;
/// on the same rows tiled 16 times (1024 rows) the two agree within a factor of 1.5.
fn test_noise_matches_the_delta_method(table: &BaselineTable, rows: usize) {
    let outcomes = table.outcomes("sentiment", "test").unwrap();
    assert_eq!(
        (
            outcomes.weak.len(),
            outcomes.ceiling.len(),
            outcomes.vanilla.len()
        ),
        (5, 5, 5)
    );
    assert!(outcomes.weak.iter().all(|r| r.len() == rows));
    let estimate = table.tasks[0]
        .method("vanilla_w2s")
        .unwrap()
        .split("test")
        .unwrap()
        .estimate
        .unwrap();
    let (pgr, analytic) = delta_method_se(outcomes, &outcomes.vanilla);
    assert!((estimate.pgr - pgr).abs() < 1e-9, "{estimate:?} vs {pgr}");
    println!(
        "vanilla test PGR {pgr:.3}: bootstrap se_test {:.3}, delta method {analytic:.3}",
        estimate.se_test
    );
    assert!(
        estimate.se_test > 0.9 * analytic,
        "bootstrap {} vs delta method {analytic}",
        estimate.se_test
    );
    let times = 16;
    let tiled_outcomes = SplitOutcomes {
        weak: tiled(&outcomes.weak, times),
        ceiling: tiled(&outcomes.ceiling, times),
        vanilla: tiled(&outcomes.vanilla, times),
        methods: Default::default(),
    };
    let tiled_estimate = pgr_estimate(
        &tiled_outcomes.runs(),
        &tiled_outcomes.vanilla,
        DEFAULT_RESAMPLES,
        1,
    )
    .unwrap();
    let (_, tiled_analytic) = delta_method_se(&tiled_outcomes, &tiled_outcomes.vanilla);
    let ratio = tiled_estimate.se_test / tiled_analytic;
    println!(
        "tiled x{times}: bootstrap se_test {:.3}, delta method {tiled_analytic:.3}",
        tiled_estimate.se_test
    );
    assert!(
        (1.0 / 1.5..1.5).contains(&ratio),
        "tiled: bootstrap {} vs delta method {tiled_analytic}",
        tiled_estimate.se_test
    );
    // 64 rows: far above 0.05, and the table says so.
    assert!(estimate.se_test > 0.05);
    let text = table.to_string();
    assert!(
        text.contains(&format!(
            "* test: test noise up to +-{:.3} > 0.05 (vanilla_w2s +-{:.3}): the split has {rows} rows",
            table.tasks[0].noise("test").unwrap().se_test.unwrap(),
            estimate.se_test,
        )),
        "{text}"
    );
}

#[test]
fn tiny_baselines_end_to_end() {
    aar_engine::device::best_device();
    let home = aar_home();
    let preset = Preset::named("tiny").unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut options = RunOptions::new(&preset, &home);
    options.work_dir = work.path().join("tiny");
    options.feature_cache = work.path().join("features");

    // Interrupted before the first result: an error, and nothing half-written.
    options.interrupt = Some(Arc::new(AtomicBool::new(true)));
    assert!(matches!(
        run_baselines(&preset, &options),
        Err(TestbedError::Interrupted)
    ));
    options.interrupt = None;

    let first = run_baselines(&preset, &options).unwrap();
    let jobs = preset.seeds.len() * (2 + MethodSpec::baselines().len());
    assert_eq!((first.computed, first.cached), (jobs, 0));
    let rerun = run_baselines(&preset, &options).unwrap();
    assert_eq!((rerun.computed, rerun.cached), (0, jobs));
    let results = options.results_dir();
    assert_row_outcomes_match_counts(&results, jobs);
    old_format_files_are_recomputed(&preset, &options, jobs);

    // PGR by hand from the files: (acc - mean W) / (mean S - mean W), then mean and SE.
    let w = accuracies(&results, "sentiment_weak_artifacts", "weak_acc");
    let s = accuracies(&results, "sentiment_train_ceiling", "strong_acc");
    assert_eq!((w.len(), s.len()), (5, 5));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (w_mean, s_mean) = (mean(&w), mean(&s));
    assert!(
        s_mean > w_mean,
        "tiny must show a gap: W {w_mean:.3}, S {s_mean:.3}"
    );
    let table = BaselineTable::read(&results, &preset.seeds).unwrap();
    let task = &table.tasks[0];
    let (tw, ts) = task.baseline("test").unwrap();
    assert!((tw.mean - w_mean).abs() < 1e-12 && (ts.mean - s_mean).abs() < 1e-12);
    let cache = ResultCache::open(&results).unwrap();
    let reference = ReferenceReport::build(&cache, &"0-4".parse::<SeedSet>().unwrap()).unwrap();
    let dataset = reference.dataset("sentiment").unwrap();
    for method in [
        "vanilla_w2s",
        "soft_labels",
        "logconf",
        "train_only_on_confident_labels",
        "ue_zeroshot",
    ] {
        let dir = format!("sentiment_{method}");
        let accs = accuracies(&results, &dir, "transfer_acc");
        assert_eq!(accs.len(), 5, "{method}");
        let pgrs: Vec<f64> = accs
            .iter()
            .map(|a| (a - w_mean) / (s_mean - w_mean))
            .collect();
        let by_hand = MeanSe::from_values(&pgrs).unwrap();
        let score = task.method(method).unwrap().split("test").unwrap();
        let ours = score.pgr.unwrap();
        assert!(
            (ours.mean - by_hand.mean).abs() < 1e-9,
            "{method}: {ours:?} vs {by_hand:?}"
        );
        // The seeds' part of the error is the by-hand SE; the quoted error adds the
        // test rows' noise on top, so it is larger.
        let estimate = score.estimate.unwrap();
        assert!(
            (estimate.se_seeds.unwrap() - by_hand.se.unwrap()).abs() < 1e-9,
            "{method}"
        );
        assert_eq!(ours.se, Some(estimate.se), "{method}");
        assert!(estimate.se > by_hand.se.unwrap(), "{method}: {estimate:?}");
        // One reader for both: aar-results sees the same PGR.
        let theirs = dataset.method(method).unwrap();
        assert!(
            (theirs.pgr.mean - by_hand.mean).abs() < 1e-9,
            "{method} (aar-results)"
        );
    }
    println!("{table}");
    test_noise_matches_the_delta_method(&table, preset.tasks[0].sizes.test);

    // The agent-facing runner: label-free copy, same seed, same predictions.
    let agent_task = options.agent_dir().join("sentiment");
    for name in ["test.jsonl", "test_private.jsonl", "train_unlabel.jsonl"] {
        let text = std::fs::read_to_string(agent_task.join(name)).unwrap();
        assert!(!text.contains("\"label\""), "{name} carries a label");
        assert!(!text.contains("\"subset\""), "{name} carries a subset");
    }
    let run = AgentRun {
        task_dir: agent_task,
        weak_labels: None,
        assets_dir: options.assets_dir.clone(),
        feature_cache: options.feature_cache.clone(),
        seed: 3,
    };
    let spec: MethodSpec =
        serde_json::from_str(r#"{"method": "confidence_filter", "low": 0.3, "high": 0.7}"#)
            .unwrap();
    assert_eq!(
        spec.kind,
        MethodKind::ConfidenceFilter {
            low: 0.3,
            high: 0.7
        }
    );
    let a = run_method(&run, &spec).unwrap();
    let b = run_method(&run, &spec).unwrap();
    assert_eq!(a.predictions.len(), preset.tasks[0].sizes.test);
    assert_eq!(a.predictions, b.predictions);
    assert_eq!(
        a.private_predictions.as_ref().map(Vec::len),
        Some(preset.tasks[0].sizes.test_private)
    );
    assert_eq!(a.probabilities, b.probabilities);

    // The campaign's transfer-set scoring (the method re-run on the agent copy, scored on
    // the labeled transfer split) reproduces the baseline runner's own transfer accuracy.
    let vanilla = MethodSpec::new(MethodKind::Vanilla);
    let transfer = options
        .tasks_dir()
        .join("sentiment")
        .join(aar_tasks::Split::Transfer.file_name());
    // The agent copy holds the first seed's weak labels; the baseline runner pairs each
    // student seed with its own teacher seed, so the first seed is the one both share.
    let seed = preset.seeds[0];
    let config_dir = std::fs::read_dir(results.join("sentiment_vanilla_w2s"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let recorded =
        read(&config_dir.join(format!("seed_{seed}.json")))["eval"]["transfer"]["accuracy"]
            .as_f64()
            .unwrap();
    let rerun = labeled_accuracy(
        &AgentRun {
            seed,
            ..run.clone()
        },
        &vanilla,
        &transfer,
    )
    .unwrap();
    assert!((rerun - recorded).abs() < 1e-12, "{rerun} vs {recorded}");

    // The recorded per-row outcomes are the same run's predictions re-scored against the
    // labeled test and private test, row by row.
    let predictions = run_method(
        &AgentRun {
            seed,
            ..run.clone()
        },
        &vanilla,
    )
    .unwrap();
    let labeled = aar_tasks::LabeledTask::load(&options.tasks_dir().join("sentiment")).unwrap();
    let recorded = read(&config_dir.join(format!("seed_{seed}.json")));
    for (split, predicted) in [
        (aar_tasks::Split::Test, &predictions.predictions),
        (
            aar_tasks::Split::TestPrivate,
            predictions.private_predictions.as_ref().unwrap(),
        ),
    ] {
        let labels: Vec<u8> = labeled
            .split(split)
            .unwrap()
            .labels()
            .unwrap()
            .into_iter()
            .map(u8::from)
            .collect();
        let rescored = String::from(CorrectRows::score(predicted, &labels).unwrap());
        assert_eq!(
            recorded["eval"][split.name()]["correct_rows"].as_str(),
            Some(rescored.as_str()),
            "{}",
            split.name()
        );
    }

    // Features for new code, as .npy: one row per input row, the student's width, no label.
    let out = tempfile::tempdir().unwrap();
    let splits = vec!["test".to_owned(), "test_private".to_owned()];
    let index = write_agent_features(&run, &splits, out.path()).unwrap();
    assert_eq!(index.dim, 384);
    let sizes = &preset.tasks[0].sizes;
    let n = sizes.train_unlabel as u64;
    let expected = [
        ("train_unlabel", vec![n, 384]),
        ("weak_soft", vec![n, 2]),
        ("test", vec![sizes.test as u64, 384]),
        ("test_private", vec![sizes.test_private as u64, 384]),
    ];
    for (name, shape) in expected {
        let array = aar_testbed::npy::read_f32(&out.path().join(format!("{name}.npy"))).unwrap();
        assert_eq!(array.shape, shape, "{name}");
        assert_eq!(index.arrays[name].shape, shape, "{name} in features.json");
    }
    let groups: Vec<String> =
        serde_json::from_slice(&std::fs::read(out.path().join("groups.json")).unwrap()).unwrap();
    assert_eq!(groups.len() as u64, n);
    let written = std::fs::read_to_string(out.path().join("features.json")).unwrap();
    for field in ["\"label\"", "\"labels\"", "\"gold\""] {
        assert!(
            !written.contains(field),
            "the index carries no {field} field"
        );
    }

    // A training plan of vanilla's own targets (the weak teacher's hard labels, read back
    // from the .npy) trains the same student as the built-in vanilla, bit for bit.
    let weak = aar_testbed::npy::read_f32(&out.path().join("weak_soft.npy")).unwrap();
    let hard: Vec<f32> = weak
        .values
        .chunks(2)
        .flat_map(|p| if p[1] > p[0] { [0.0, 1.0] } else { [1.0, 0.0] })
        .collect();
    aar_testbed::npy::write_f32(&out.path().join("targets.npy"), &[n, 2], &hard).unwrap();
    let plan = out.path().join("plan.json");
    std::fs::write(&plan, r#"{"targets": "targets.npy"}"#).unwrap();
    let through_plan = run_method_on_splits(&run, Recipe::Plan(&plan), &splits).unwrap();
    let built_in = run_method(&run, &vanilla).unwrap();
    assert_eq!(through_plan.splits, built_in.splits);
    assert_eq!(through_plan.probabilities, built_in.probabilities);
    assert_eq!(
        through_plan.plan.as_ref().map(|p| p.kept),
        Some(sizes.train_unlabel)
    );
}
