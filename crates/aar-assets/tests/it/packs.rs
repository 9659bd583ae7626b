//! Task packs: split hygiene, balance, determinism, and labels from running programs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use aar_assets::packs::{
    Format, Group, PackKind, PackOptions, PackSizes, Runner, RunnerConfig, build_splits,
    build_task_pack, codeio_groups, human_eval_groups,
};
use aar_core::Label;
use aar_tasks::{Example, Inputs, LabelPolicy, Split, read_task_file};
use serde_json::json;

const SIZES: PackSizes = PackSizes {
    train_label: 20,
    train_unlabel: 40,
    test: 20,
    test_private: 20,
    transfer: 10,
};

fn binary_groups(n: usize, prefix: &str) -> Vec<Group> {
    (0..n)
        .map(|i| Group {
            id: format!("{prefix}-{i}"),
            question: format!("{prefix} question {i}?"),
            positives: vec![format!("right {i}")],
            negatives: vec![format!("wrong {i}a"), format!("wrong {i}b")],
            subset: prefix.into(),
            paired: false,
        })
        .collect()
}

fn question_of(e: &Example) -> &str {
    match &e.inputs {
        Inputs::Binary { question, .. } => question,
        Inputs::Comparison { prompt, .. } => prompt,
    }
}

fn check_split_hygiene(splits: &BTreeMap<Split, Vec<Example>>) {
    let mut owner: BTreeMap<String, Split> = BTreeMap::new();
    let mut group_of_question: BTreeMap<String, String> = BTreeMap::new();
    for (split, examples) in splits {
        for e in examples {
            let q = question_of(e).to_owned();
            let previous = owner.insert(q.clone(), *split);
            assert!(
                previous.is_none() || previous == Some(*split),
                "{q:?} is in {previous:?} and {split:?}"
            );
            let group = e.extra["consistency_id"].as_str().unwrap().to_owned();
            let known = group_of_question
                .entry(q.clone())
                .or_insert_with(|| group.clone());
            assert_eq!(*known, group, "one question, one consistency_id");
        }
    }
    let groups: BTreeSet<_> = group_of_question.values().collect();
    assert_eq!(
        groups.len(),
        group_of_question.len(),
        "one consistency_id, one question"
    );
}

fn ones(examples: &[Example]) -> usize {
    examples
        .iter()
        .filter(|e| e.label == Some(Label::One))
        .count()
}

#[test]
fn binary_splits_are_balanced_disjoint_by_question_and_deterministic() {
    let make = |seed| {
        build_splits(
            Format::Binary,
            binary_groups(100, "q"),
            binary_groups(8, "t"),
            &SIZES,
            seed,
            "math",
        )
        .unwrap()
    };
    let splits = make(7);
    for (split, rows) in [
        (Split::TrainLabel, 20),
        (Split::TrainUnlabel, 40),
        (Split::Test, 20),
        (Split::TestPrivate, 20),
    ] {
        assert_eq!(splits[&split].len(), rows, "{split:?}");
        assert_eq!(ones(&splits[&split]), rows / 2, "{split:?} balanced");
    }
    assert_eq!(splits[&Split::Transfer].len(), 10);
    assert_eq!(ones(&splits[&Split::Transfer]), 5);
    check_split_hygiene(&splits);
    // Labels follow the source: the positive is the right answer.
    for e in splits.values().flatten() {
        let Inputs::Binary { choice, .. } = &e.inputs else {
            panic!()
        };
        assert_eq!(choice.starts_with("right"), e.label == Some(Label::One));
    }
    assert_eq!(make(7), splits);
    assert_ne!(make(8), splits);
}

#[test]
fn duplicate_questions_are_merged_before_splitting() {
    let mut groups = binary_groups(60, "q");
    let mut twin = groups[0].clone();
    twin.id = "twin".into();
    twin.question = format!("  {}  ", groups[0].question.to_uppercase());
    groups.push(twin);
    let splits = build_splits(Format::Binary, groups, Vec::new(), &SIZES, 1, "math").unwrap();
    assert!(
        splits
            .values()
            .flatten()
            .all(|e| e.extra["consistency_id"] != "twin")
    );
    check_split_hygiene(&splits);
}

#[test]
fn too_little_data_is_an_error_not_a_short_split() {
    let err = build_splits(
        Format::Binary,
        binary_groups(10, "q"),
        Vec::new(),
        &SIZES,
        1,
        "math",
    )
    .unwrap_err();
    assert!(err.to_string().contains("need"), "{err}");
}

#[test]
fn comparison_splits_balance_a_and_b_and_put_the_true_answer_on_the_labeled_side() {
    let groups: Vec<Group> = (0..40)
        .map(|i| Group {
            id: format!("c-{i}"),
            question: format!("prompt {i}"),
            positives: vec![format!("true {i}.1"), format!("true {i}.2")],
            negatives: vec![
                format!("false {i}.1"),
                format!("false {i}.2"),
                format!("false {i}.3"),
            ],
            subset: "c".into(),
            paired: false,
        })
        .collect();
    let mut transfer = groups[..6].to_vec();
    for g in &mut transfer[3..] {
        g.question = format!("held-out {}", g.question);
        g.id = format!("held-out-{}", g.id);
    }
    // The first three transfer groups repeat in-distribution questions and must be dropped.
    let splits = build_splits(Format::Comparison, groups, transfer, &SIZES, 3, "chat").unwrap();
    assert!(
        splits[&Split::Transfer]
            .iter()
            .all(|e| question_of(e).starts_with("held-out"))
    );
    check_split_hygiene(&splits);
    for (split, examples) in &splits {
        if *split != Split::Transfer {
            assert_eq!(ones(examples) * 2, examples.len(), "{split:?}");
        }
        for e in examples {
            let Inputs::Comparison { first, second, .. } = &e.inputs else {
                panic!()
            };
            let better = if e.label == Some(Label::Zero) {
                first
            } else {
                second
            };
            let worse = if e.label == Some(Label::Zero) {
                second
            } else {
                first
            };
            assert!(
                better.starts_with("true") && worse.starts_with("false"),
                "{e:?}"
            );
        }
    }
}

fn write(path: &Path, value: &serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, value.to_string()).unwrap();
}

#[test]
fn chat_pack_is_written_in_the_reference_format_and_reproducible() {
    let assets = tempfile::tempdir().unwrap();
    let bigbench = assets.path().join("data/bigbench");
    let questions: Vec<_> = (0..60)
        .map(|i| {
            json!({"Question": format!("Q{i}?"), "Category": "Misc",
                   "True answers": [format!("yes {i}"), format!("indeed {i}")],
                   "False answers": [format!("no {i}"), format!("never {i}")]})
        })
        .collect();
    write(
        &bigbench.join("truthful_qa/questions.json"),
        &json!({"examples": questions}),
    );
    for subset in ["harmless", "helpful", "honest", "other"] {
        let examples: Vec<_> = (0..4)
            .map(|i| json!({"input": format!("{subset} {i}"), "target_scores": {format!("good {i}"): 1, format!("bad {i}"): 0}}))
            .collect();
        write(
            &bigbench.join(format!("hhh_alignment/{subset}/task.json")),
            &json!({"examples": examples}),
        );
    }
    let out = |name: &str| assets.path().join(name);
    let stats = build_task_pack(
        PackKind::Chat,
        assets.path(),
        &out("a"),
        &SIZES,
        11,
        &PackOptions::default(),
    )
    .unwrap();
    build_task_pack(
        PackKind::Chat,
        assets.path(),
        &out("b"),
        &SIZES,
        11,
        &PackOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.splits[&Split::Transfer], (10, 5));
    for split in Split::ALL {
        let a = std::fs::read(out("a").join(split.file_name())).unwrap();
        assert_eq!(
            a,
            std::fs::read(out("b").join(split.file_name())).unwrap(),
            "{split:?} differs between runs"
        );
        let file =
            read_task_file(&out("a").join(split.file_name()), LabelPolicy::Required).unwrap();
        assert_eq!(file.len(), stats.splits[&split].0);
    }
    let first_line =
        String::from_utf8(std::fs::read(out("a").join("test.jsonl")).unwrap()).unwrap();
    let row: serde_json::Value = serde_json::from_str(first_line.lines().next().unwrap()).unwrap();
    for field in [
        "prompt",
        "first",
        "second",
        "label",
        "consistency_id",
        "id",
        "subset",
    ] {
        assert!(row.get(field).is_some(), "{field} missing in {row}");
    }
}

fn runner() -> Runner {
    Runner::new(RunnerConfig {
        python: "python3".into(),
        timeout: Duration::from_secs(3),
        memory_bytes: 1 << 30,
    })
    .unwrap()
}

#[test]
fn runner_enforces_time_and_memory_limits_and_reports_failures() {
    let runner = runner();
    let looping = runner.run("while True: pass", "").unwrap();
    assert!(looping.timed_out && !looping.success);
    let hungry = runner
        .run("x = bytearray(4 << 30)\nprint('allocated')", "")
        .unwrap();
    assert!(!hungry.success && !hungry.stdout.contains("allocated"));
    let echo = runner
        .run("import sys; print(sys.stdin.read().upper())", "abc")
        .unwrap();
    assert!(echo.success);
    assert_eq!(echo.stdout.trim(), "ABC");
}

#[test]
fn program_output_does_not_depend_on_string_hash_randomization() {
    let script =
        "print(list({'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'}))";
    let outputs: BTreeSet<String> = (0..4)
        .map(|_| runner().run(script, "").unwrap().stdout)
        .collect();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
}

#[test]
fn codeio_claims_are_labeled_by_running_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("codeio.jsonl");
    let doubling = json!({"code_sample": "def main_solution(x):\n    return {'double': x * 2}\n",
        "input_generator": "def generate_inputs(rng: Random) -> dict:\n    return {'x': rng.randint(1, 10**6)}\n"});
    let hanging = json!({"code_sample": "def main_solution(x):\n    while True:\n        pass\n",
        "input_generator": "def generate_inputs(rng):\n    return {'x': 1}\n"});
    let constant = json!({"code_sample": "def main_solution(x):\n    return 5\n",
        "input_generator": "def generate_inputs(rng):\n    return {'x': rng.random()}\n"});
    let lines = [doubling, hanging, constant]
        .map(|v| v.to_string())
        .join("\n");
    std::fs::write(&path, lines).unwrap();
    let groups = codeio_groups(&path, &runner(), 5, 10).unwrap();
    // Only the doubling program gives distinct, deterministic outputs in time.
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = &groups[0];
    let x: i64 = {
        let input = g.question.rsplit("Input: ").next().unwrap();
        serde_json::from_str::<serde_json::Value>(input).unwrap()["x"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(g.positives.len(), 1);
    let claimed: serde_json::Value = serde_json::from_str(&g.positives[0]).unwrap();
    assert_eq!(claimed, json!({"double": 2 * x}));
    assert_eq!(g.negatives.len(), 1);
    assert_ne!(g.negatives[0], g.positives[0]);
}

#[test]
fn human_eval_mutants_are_labeled_by_running_the_tests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("HumanEval.jsonl");
    let problem = json!({"task_id": "T/0", "prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
        "canonical_solution": "    return a + b\n",
        "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n", "entry_point": "add"});
    let broken = json!({"task_id": "T/1", "prompt": "def one():\n", "canonical_solution": "    return 2\n",
        "test": "def check(f):\n    assert f() == 1\n", "entry_point": "one"});
    std::fs::write(&path, format!("{problem}\n{broken}\n")).unwrap();
    let groups = human_eval_groups(&path, &runner(), 1, 10).unwrap();
    // The problem whose canonical solution fails its own tests is left out.
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].positives, vec!["    return a + b\n".to_owned()]);
    // Both applicable mutants break the tests; which one is used depends on the seed.
    let negative = groups[0].negatives[0].as_str();
    assert!(
        ["    return a - b\n", "    return not a + b\n"].contains(&negative),
        "{negative:?}"
    );
}

#[test]
fn repeated_preference_prompts_merge_without_crossing_their_pairs() {
    let pair = |id: &str, k: usize| Group {
        id: id.into(),
        question: "same prompt".into(),
        positives: vec![format!("good {k}")],
        negatives: vec![format!("bad {k}")],
        subset: "hhh".into(),
        paired: true,
    };
    let transfer = vec![pair("a", 1), pair("b", 2), pair("c", 3)];
    let sizes = PackSizes {
        transfer: 100,
        ..SIZES
    };
    let splits = build_splits(
        Format::Comparison,
        binary_groups(100, "q"),
        transfer,
        &sizes,
        2,
        "chat",
    )
    .unwrap();
    let rows = &splits[&Split::Transfer];
    // Three pairs, never good-k against bad-j for j != k.
    assert_eq!(rows.len(), 3);
    for e in rows {
        let Inputs::Comparison { first, second, .. } = &e.inputs else {
            panic!()
        };
        assert_eq!(
            first[first.len() - 1..],
            second[second.len() - 1..],
            "{e:?}"
        );
        assert_eq!(e.extra["consistency_id"], "a");
    }
}

#[test]
fn losing_one_group_moves_no_other_question_between_splits() {
    // A code-pack program that times out on one machine drops its group; every other
    // question must stay in its split (splits are dealt by a hash of the group id).
    let all = binary_groups(100, "q");
    let mut fewer = all.clone();
    fewer.remove(17);
    let owner = |splits: &BTreeMap<Split, Vec<Example>>| -> BTreeMap<String, Split> {
        splits
            .iter()
            .flat_map(|(split, rows)| rows.iter().map(|e| (question_of(e).to_owned(), *split)))
            .collect()
    };
    let a = owner(&build_splits(Format::Binary, all, Vec::new(), &SIZES, 7, "code").unwrap());
    let b = owner(&build_splits(Format::Binary, fewer, Vec::new(), &SIZES, 7, "code").unwrap());
    let mut moved = 0;
    for (question, split) in &b {
        if let Some(before) = a.get(question) {
            moved += usize::from(before != split);
        }
    }
    assert_eq!(
        moved, 0,
        "questions moved between splits after losing one group"
    );
}
