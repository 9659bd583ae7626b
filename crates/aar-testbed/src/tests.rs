#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use serde_json::json;

use crate::baselines::write_json_atomic;
use crate::features::Vocabulary;
use crate::method::{MethodSpec, zero_shot_labels};
use crate::report::BaselineTable;
use crate::text_tasks::{TextItem, clean_claim, dedup, split_longest};

#[test]
fn table_pgr_is_hand_checkable() {
    // W = 0.6 on every seed, S = 0.8 on every seed; vanilla 0.70, 0.72, 0.68:
    // PGR per seed 0.5, 0.6, 0.4 -> mean 0.5, SE = std(ddof=1)/sqrt(3) = 0.1/sqrt(3).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for seed in 0..3u64 {
        write_json_atomic(
            &root.join(format!("t_weak_artifacts/bow_e1/seed_{seed}.json")),
            &json!({"weak_acc": 0.6, "soft_labels": [], "eval": {"test": {"accuracy": 0.6}, "transfer": {"accuracy": 0.55}}}),
        )
        .unwrap();
        write_json_atomic(
            &root.join(format!("t_train_ceiling/m_e1/seed_{seed}.json")),
            &json!({"strong_acc": 0.8, "eval": {"test": {"accuracy": 0.8}, "transfer": {"accuracy": 0.5}}}),
        )
        .unwrap();
        let acc = [0.70, 0.72, 0.68][seed as usize];
        write_json_atomic(
            &root.join(format!("t_vanilla_w2s/m_bow_e1/seed_{seed}.json")),
            &json!({"transfer_acc": acc, "eval": {"test": {"accuracy": acc}, "transfer": {"accuracy": 0.6}}}),
        )
        .unwrap();
    }
    let table = BaselineTable::read(root, &[0, 1, 2]).unwrap();
    let task = &table.tasks[0];
    let (w, s) = task.baseline("test").unwrap();
    assert!((w.mean - 0.6).abs() < 1e-12 && (s.mean - 0.8).abs() < 1e-12);
    let pgr = task
        .method("vanilla_w2s")
        .unwrap()
        .split("test")
        .unwrap()
        .pgr
        .unwrap();
    assert!((pgr.mean - 0.5).abs() < 1e-12, "{pgr:?}");
    assert!(
        (pgr.se.unwrap() - 0.1 / 3f64.sqrt()).abs() < 1e-12,
        "{pgr:?}"
    );
    // On the transfer split S < W: no PGR, not a made-up number.
    let transfer = task
        .method("vanilla_w2s")
        .unwrap()
        .split("transfer")
        .unwrap();
    assert!(transfer.pgr.is_none());
    // These files predate per-row outcomes: the error is the seeds' alone, and said so.
    let test = task.method("vanilla_w2s").unwrap().split("test").unwrap();
    assert!(test.seeds_only() && test.estimate.is_none());
    assert!(table.outcomes("t", "test").is_none());
    let text = table.to_string();
    assert!(text.contains("n/a (S<=W)"), "{text}");
    assert!(text.contains("0.500+-0.058^"), "{text}");
    assert!(
        text.contains("^ test: seeds only (vanilla_w2s): result files without correct_rows"),
        "{text}"
    );
}

/// An eval entry with per-row outcomes (`rows` of '0'/'1'), or without when `None`.
fn entry(rows: &str, with_rows: bool) -> serde_json::Value {
    let correct = rows.chars().filter(|c| *c == '1').count();
    let mut entry = json!({
        "accuracy": correct as f64 / rows.len() as f64,
        "correct": correct,
        "total": rows.len(),
    });
    if with_rows {
        entry["correct_rows"] = json!(rows);
    }
    entry
}

/// Writes `t`'s weak, ceiling and vanilla files: per seed the test rows (with
/// `correct_rows`) and the transfer rows (without).
fn write_row_results(root: &std::path::Path, runs: &[(&str, &str, [&str; 2])]) {
    for (dir, field, seeds) in runs {
        for (seed, rows) in seeds.iter().enumerate() {
            let test = entry(rows, true);
            let record = json!({
                *field: test["accuracy"],
                "soft_labels": [],
                "eval": {"test": test, "transfer": entry(rows, false)},
            });
            write_json_atomic(&root.join(format!("{dir}/seed_{seed}.json")), &record).unwrap();
        }
    }
}

#[test]
fn table_errors_include_the_test_rows_when_files_hold_them() {
    // 10 test rows. W 0.6 and S 0.8 on both seeds; vanilla 0.7 and 0.8: per-seed PGR
    // 0.5 and 1.0, so PGR 0.75 with a seeds' SE of std([0.5, 1]) / sqrt(2) = 0.25.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let weak = ["1111110000", "0111111000"];
    let ceiling = ["1111111100", "1111111010"];
    let vanilla = ["1111111000", "1111111100"];
    write_row_results(
        root,
        &[
            ("t_weak_artifacts/bow_e1", "weak_acc", weak),
            ("t_train_ceiling/m_e1", "strong_acc", ceiling),
            ("t_vanilla_w2s/m_bow_e1", "transfer_acc", vanilla),
        ],
    );
    let table = BaselineTable::read(root, &[0, 1]).unwrap();
    let task = &table.tasks[0];
    let test = task.method("vanilla_w2s").unwrap().split("test").unwrap();
    let estimate = test.estimate.unwrap();
    assert!((estimate.pgr - 0.75).abs() < 1e-12, "{estimate:?}");
    assert!((estimate.se_seeds.unwrap() - 0.25).abs() < 1e-12);
    assert_eq!((estimate.rows, estimate.seeds), (10, 2));
    // The printed error is the total one, and it counts the test rows' noise too.
    let pgr = test.pgr.unwrap();
    assert_eq!((pgr.mean, pgr.se), (estimate.pgr, Some(estimate.se)));
    assert!(estimate.se_test > 0.05 && estimate.se > 0.25);
    assert!(!test.seeds_only() && test.noisy());
    // The transfer files hold no rows there: the seeds' error only, marked.
    let transfer = task
        .method("vanilla_w2s")
        .unwrap()
        .split("transfer")
        .unwrap();
    assert!(transfer.seeds_only());
    assert!((transfer.pgr.unwrap().se.unwrap() - 0.25).abs() < 1e-12);
    // The outcomes, in seed order, for the server's comparisons; none where rows lack.
    let outcomes = table.outcomes("t", "test").unwrap();
    let strings = |runs: &[aar_core::noise::CorrectRows]| -> Vec<String> {
        runs.iter().cloned().map(String::from).collect()
    };
    assert_eq!(strings(&outcomes.weak), weak);
    assert_eq!(strings(&outcomes.ceiling), ceiling);
    assert_eq!(strings(&outcomes.vanilla), vanilla);
    assert!(table.outcomes("t", "transfer").is_none());
    assert!(table.outcomes("other", "test").is_none());
    let text = table.to_string();
    assert!(
        text.contains(&format!(
            "* test: test noise up to +-{0:.3} > 0.05 (vanilla_w2s +-{0:.3}): the split has 10 rows",
            estimate.se_test
        )),
        "{text}"
    );
    assert!(
        text.contains("^ transfer: seeds only (vanilla_w2s)"),
        "{text}"
    );
    // The JSON keeps `pgr` as it was and adds the parts.
    let json = serde_json::to_value(&table).unwrap();
    let cell = &json["tasks"][0]["methods"][0]["splits"][0][1];
    assert_eq!(cell["pgr"]["mean"], json!(estimate.pgr));
    assert_eq!(cell["estimate"]["se_test"], json!(estimate.se_test));
    assert!(json["tasks"][0].get("outcomes").is_none());
}

#[test]
fn rows_that_contradict_the_recorded_accuracy_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_row_results(
        root,
        &[
            ("t_weak_artifacts/bow_e1", "weak_acc", ["1100", "1100"]),
            ("t_train_ceiling/m_e1", "strong_acc", ["1110", "1110"]),
            ("t_vanilla_w2s/m_bow_e1", "transfer_acc", ["1100", "1110"]),
        ],
    );
    let path = root.join("t_vanilla_w2s/m_bow_e1/seed_1.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    record["eval"]["test"]["correct_rows"] = json!("1111");
    write_json_atomic(&path, &record).unwrap();
    let err = BaselineTable::read(root, &[0, 1]).unwrap_err().to_string();
    assert!(
        err.contains("t vanilla_w2s")
            && err.contains("seed 1 eval.test")
            && err.contains("1.000000"),
        "{err}"
    );
    record["eval"]["test"]["correct_rows"] = json!("11x0");
    write_json_atomic(&path, &record).unwrap();
    let err = BaselineTable::read(root, &[0, 1]).unwrap_err().to_string();
    assert!(
        err.contains("eval.test.correct_rows") && err.contains("character 2"),
        "{err}"
    );
}

#[test]
fn zero_shot_keeps_one_true_choice_per_group_and_balances() {
    // Group g holds rows 0..3: only row 1 (highest prior) stays true. Singletons keep
    // prior > 0.5. Labels: [0,1,0, 1,1,1,1, 0] -> ones 5, zeros 3; cap = floor(3*1.1) = 3,
    // so the two least confident ones (rows 6: 0.55, 5: 0.6) are dropped.
    let prior = [0.7, 0.9, 0.2, 0.8, 0.95, 0.6, 0.55, 0.1];
    let groups: Vec<String> = ["g", "g", "g", "a", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (kept, labels) = zero_shot_labels(&prior, &groups, 1.1);
    assert_eq!(kept, [0, 1, 2, 3, 4, 7]);
    assert_eq!(labels, [false, true, false, true, true, false]);
}

#[test]
fn method_specs_round_trip_and_reject_unknown_fields() {
    for spec in MethodSpec::baselines() {
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<MethodSpec>(&text).unwrap(), spec);
    }
    let with_head: MethodSpec = serde_json::from_str(
        r#"{"method": "vanilla", "head": {"hidden": 64, "epochs": 5, "batch_size": 16, "learning_rate": 0.01, "weight_decay": 0.0}}"#,
    )
    .unwrap();
    assert_eq!(with_head.head.unwrap().hidden, 64);
    assert!(serde_json::from_str::<MethodSpec>(r#"{"method": "oracle"}"#).is_err());
}

#[test]
fn bag_of_words_counts_documents_not_tokens() {
    let texts = vec!["Good good film".to_string(), "bad film".to_string()];
    let vocab = Vocabulary::fit(&texts, 2);
    assert_eq!(vocab.len(), 1); // only "film" is in two texts
    let m = vocab
        .transform(&["a FILM".to_string(), "nothing".to_string()])
        .unwrap();
    assert_eq!((m.row(0), m.row(1)), (&[1.0][..], &[0.0][..]));
}

fn item(id: &str, text: &str, label: bool) -> TextItem {
    TextItem {
        id: id.into(),
        text: text.into(),
        label,
        subset: "s".into(),
    }
}

#[test]
fn sources_are_cleaned_deduplicated_and_split_by_length() {
    assert_eq!(
        clean_claim(
            "On June 2017, the following claim was made: Paris is in France.\nQ: Was this claim true or false?"
        ),
        "Paris is in France."
    );
    let items = vec![
        item("1", "a b", true),
        item("2", "A  b", true),
        item("3", "x", true),
        item("4", "x", false),
        item("5", "c d e", false),
    ];
    let kept: Vec<String> = dedup(items).into_iter().map(|i| i.id).collect();
    assert_eq!(kept, ["1", "5"]); // "A b" repeats "a b"; "x" has both labels
    let many: Vec<TextItem> = (0..20)
        .map(|i| item(&format!("{i:02}"), &"w ".repeat(i + 1), i % 2 == 0))
        .collect();
    let (short, long) = split_longest(many);
    assert_eq!((short.len(), long.len()), (17, 3));
    assert!(long.iter().all(|i| i.subset.ends_with("/longest")));
}

#[test]
fn preset_files_round_trip_and_name_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preset.json");
    let cpu = crate::Preset::named("cpu").unwrap();
    std::fs::write(&path, serde_json::to_string(&cpu).unwrap()).unwrap();
    assert_eq!(crate::Preset::from_file(&path).unwrap(), cpu);

    let mut escaping = serde_json::to_value(&cpu).unwrap();
    escaping["tasks"][1]["name"] = json!("../sarcasm");
    std::fs::write(&path, escaping.to_string()).unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("tasks[1].name"), "{message}");

    let mut underscore = serde_json::to_value(&cpu).unwrap();
    underscore["tasks"][0]["name"] = json!("sentiment_long");
    std::fs::write(&path, underscore.to_string()).unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("tasks[0].name"), "{message}");

    let mut empty_split = serde_json::to_value(&cpu).unwrap();
    empty_split["tasks"][0]["sizes"]["test"] = json!(0);
    std::fs::write(&path, empty_split.to_string()).unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("tasks[0].sizes"), "{message}");

    std::fs::write(&path, "{\"name\": \"x\"}").unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("preset.json"), "{message}");
}

#[test]
fn agent_specs_with_unbounded_training_cost_are_named() {
    let ok: MethodSpec = serde_json::from_value(json!({"method": "vanilla"})).unwrap();
    assert!(ok.check_cost_bounds().is_ok());
    let head = |epochs: usize, hidden: i64| {
        json!({"method": "vanilla", "head": {"hidden": hidden, "epochs": epochs, "batch_size": 32,
            "learning_rate": 0.01, "weight_decay": 0.0}})
    };
    let slow: MethodSpec = serde_json::from_value(head(1_000_000_000, 0)).unwrap();
    assert!(
        slow.check_cost_bounds()
            .unwrap_err()
            .contains("head.epochs")
    );
    let wide: MethodSpec = serde_json::from_value(head(10, 1 << 30)).unwrap();
    assert!(
        wide.check_cost_bounds()
            .unwrap_err()
            .contains("head.hidden")
    );
    let fine: MethodSpec = serde_json::from_value(head(50, 64)).unwrap();
    assert!(fine.check_cost_bounds().is_ok());
}

/// A goal_step_wikihow-shaped file: `n` examples about `topic{i}`, option 2 right.
fn goal_step_file(dir: &std::path::Path, kind: &str, n: usize, topic: &str) -> std::path::PathBuf {
    let role = if kind == "step" { "step" } else { "goal" };
    let examples: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            json!({
                "input": format!("The most reasonable {role} of '{topic} {i}' is "),
                "target_scores": {
                    format!("wrong a {topic} {i}"): 0,
                    format!("wrong b {topic} {i}"): 0,
                    format!("right {topic} {i}"): 1,
                    format!("wrong c {topic} {i}"): 0,
                },
            })
        })
        .collect();
    let path = dir.join(format!("{kind}.json"));
    std::fs::write(&path, json!({"examples": examples}).to_string()).unwrap();
    path
}

#[test]
fn goal_step_files_parse_into_groups_with_the_roles_of_their_subtask() {
    use crate::pair_tasks::{GoalStepFile, goal_step};
    let dir = tempfile::tempdir().unwrap();
    let steps = goal_step(
        &goal_step_file(dir.path(), "step", 3, "Bake bread"),
        GoalStepFile::StepInference,
    )
    .unwrap();
    assert_eq!(steps.len(), 3);
    // step_inference: the quoted text is the goal (question), options are steps (choice).
    assert_eq!(
        steps[1].right,
        ("Bake bread 1".to_owned(), "right Bake bread 1".to_owned())
    );
    assert_eq!(steps[1].wrong.len(), 3);
    assert!(
        steps[1]
            .wrong
            .iter()
            .all(|(q, c)| q == "Bake bread 1" && c.starts_with("wrong"))
    );
    // goal_inference: the quoted text is the step, options are goals: pairs stay (goal, step).
    let goals = goal_step(
        &goal_step_file(dir.path(), "goal", 2, "Knead"),
        GoalStepFile::GoalInference,
    )
    .unwrap();
    assert_eq!(
        goals[0].right,
        ("right Knead 0".to_owned(), "Knead 0".to_owned())
    );

    // Malformed sources name the example and what is wrong.
    let bad = dir.path().join("bad.json");
    for (examples, expected) in [
        (
            json!([{"input": "Which step?", "target_scores": {"a": 1, "b": 0}}]),
            "example 0: input does not read",
        ),
        (
            json!([{"input": "The most reasonable step of 'x' is ", "target_scores": {"a": 1, "b": 1}}]),
            "example 0: 2 options scored 1",
        ),
        (
            json!([{"input": "The most reasonable step of 'x' is ", "target_scores": {"a": 1}}]),
            "example 0: no wrong option",
        ),
    ] {
        std::fs::write(&bad, json!({"examples": examples}).to_string()).unwrap();
        let error = goal_step(&bad, GoalStepFile::StepInference)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{error}");
        assert!(error.contains("bad.json"), "{error}");
    }
}

#[test]
fn pair_splits_deal_whole_groups_balanced_and_keep_transfer_apart() {
    use crate::pair_tasks::{GoalStepFile, PairGroup, build_pair_splits, goal_step};
    use crate::preset::Sizes;
    use aar_tasks::{Inputs, Split};
    let dir = tempfile::tempdir().unwrap();
    let mut main = goal_step(
        &goal_step_file(dir.path(), "step", 60, "Goal"),
        GoalStepFile::StepInference,
    )
    .unwrap();
    // The same goal asked twice: kept once, so no question is in two splits.
    let mut repeat = main[0].clone();
    repeat.id = "step_inference-repeat".into();
    main.push(repeat);
    let mut transfer = goal_step(
        &goal_step_file(dir.path(), "goal", 10, "Step"),
        GoalStepFile::GoalInference,
    )
    .unwrap();
    // A transfer group sharing a text with the main source is left out.
    transfer.push(PairGroup {
        id: "goal_inference-shared".into(),
        right: ("Goal 5".into(), "a new step".into()),
        wrong: vec![("another goal".into(), "a new step".into())],
        subset: "goal_inference".into(),
    });
    let sizes = Sizes {
        train_label: 20,
        train_unlabel: 60,
        test: 20,
        test_private: 20,
        transfer: 100,
    };
    let splits = build_pair_splits("gs", main.clone(), transfer.clone(), &sizes, 7).unwrap();
    assert_eq!(
        splits,
        build_pair_splits("gs", main.clone(), transfer.clone(), &sizes, 7).unwrap(),
        "same inputs and seed, same rows"
    );
    let mut question_split: std::collections::HashMap<String, Split> = Default::default();
    for (split, rows) in &splits {
        let expected = match split {
            Split::TrainLabel => 20,
            Split::TrainUnlabel => 60,
            Split::Test | Split::TestPrivate => 20,
            Split::Transfer => 20, // 10 groups: the shared one is dropped
        };
        assert_eq!(rows.len(), expected, "{split:?}");
        let mut groups: std::collections::BTreeMap<String, Vec<bool>> = Default::default();
        for row in rows {
            let Inputs::Binary { question, choice } = &row.inputs else {
                panic!("pair rows are binary")
            };
            assert_ne!(
                question, "another goal",
                "the shared transfer group was kept"
            );
            let right = row.label == Some(aar_core::Label::One);
            assert_eq!(
                right,
                question.starts_with("right") || choice.starts_with("right"),
                "{choice}"
            );
            if *split != Split::Transfer
                && let Some(other) = question_split.insert(question.clone(), *split)
            {
                assert_eq!(other, *split, "{question} is in two splits");
            }
            let group = row.extra["consistency_id"].as_str().unwrap().to_owned();
            groups.entry(group).or_default().push(right);
        }
        // Every group is whole: one right and one wrong row.
        for (group, labels) in groups {
            let mut labels = labels;
            labels.sort();
            assert_eq!(labels, [false, true], "{split:?} group {group}");
        }
    }
    // Sizes a group-of-two deal cannot meet are errors that say so.
    let odd = Sizes { test: 21, ..sizes };
    let error = build_pair_splits("gs", main.clone(), transfer.clone(), &odd, 7)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("test has 21 rows") && error.contains("even"),
        "{error}"
    );
    let big = Sizes {
        train_unlabel: 200,
        ..sizes
    };
    let error = build_pair_splits("gs", main, transfer, &big, 7)
        .unwrap_err()
        .to_string();
    assert!(error.contains("train_unlabel"), "{error}");
}

#[test]
fn pair_features_and_prior_match_a_hand_computation() {
    use crate::features::{pair_cosines, pair_features};
    use crate::method::pair_prior;
    use aar_engine::features::Matrix;
    // u = (3, 4) -> (0.6, 0.8); v = (4, 3) -> (0.8, 0.6); cosine 0.96.
    // Row 2: u = (1, 0), v = (0, 2) -> cosine 0. Row 3: u = v = (0, 5) -> cosine 1.
    let u = Matrix::new(3, 2, vec![3.0, 4.0, 1.0, 0.0, 0.0, 5.0]).unwrap();
    let v = Matrix::new(3, 2, vec![4.0, 3.0, 0.0, 2.0, 0.0, 5.0]).unwrap();
    let x = pair_features(&u, &v).unwrap();
    assert_eq!(x.cols(), 8);
    let expected = [0.6, 0.8, 0.8, 0.6, 0.2, 0.2, 0.48, 0.48];
    for (got, want) in x.row(0).iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{:?}", x.row(0));
    }
    let cosines = pair_cosines(&x).unwrap();
    for (got, want) in cosines.iter().zip([0.96, 0.0, 1.0]) {
        assert!((got - want).abs() < 1e-6, "{cosines:?}");
    }
    // Centred on the median cosine (0.96): sigmoid(20 * (c - 0.96)).
    let prior = pair_prior(&x, 20.0).unwrap();
    let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
    for (got, c) in prior.iter().zip([0.96f32, 0.0, 1.0]) {
        assert!((got - sigmoid(20.0 * (c - 0.96))).abs() < 1e-6, "{prior:?}");
    }
    assert!(pair_features(&u, &Matrix::new(2, 2, vec![0.0; 4]).unwrap()).is_err());
    assert!(pair_cosines(&Matrix::new(1, 6, vec![0.0; 6]).unwrap()).is_err());
}

#[test]
fn a_presets_table_leaves_out_results_of_tasks_it_no_longer_has() {
    // `t` is in the preset; `old` is what an earlier preset left behind, with files
    // that would fail the table (two configs of one method).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (task, configs) in [("t", &["m_e1"][..]), ("old", &["m_e1", "m_e2"][..])] {
        write_json_atomic(
            &root.join(format!("{task}_weak_artifacts/bow_e1/seed_0.json")),
            &json!({"weak_acc": 0.6, "soft_labels": [], "eval": {"test": {"accuracy": 0.6}}}),
        )
        .unwrap();
        for config in configs {
            write_json_atomic(
                &root.join(format!("{task}_train_ceiling/{config}/seed_0.json")),
                &json!({"strong_acc": 0.8, "eval": {"test": {"accuracy": 0.8}}}),
            )
            .unwrap();
        }
    }
    assert!(
        BaselineTable::read(root, &[0]).is_err(),
        "the stale task fails the whole table"
    );
    let mut preset = crate::Preset::named("tiny").unwrap();
    preset.tasks[0].name = "t".into();
    preset.seeds = vec![0];
    let table = BaselineTable::read_preset(root, &preset).unwrap();
    let names: Vec<&str> = table.tasks.iter().map(|t| t.task.as_str()).collect();
    assert_eq!(names, ["t"]);
}
