//! Rebuilding a task from its source package: disjoint splits, balance, group ids, no labels
//! in agent-facing files, determinism.

use std::collections::{BTreeMap, BTreeSet};

use aar_core::Label;
use aar_tasks::{LabeledTask, Split, write_agent_copy};
use aar_testbed::Preset;
use aar_testbed::baselines::build_task;

use crate::aar_home;

fn question(e: &aar_tasks::Example) -> String {
    match &e.inputs {
        aar_tasks::Inputs::Binary { question, .. } => question.clone(),
        aar_tasks::Inputs::Comparison { prompt, .. } => prompt.clone(),
    }
}

#[test]
fn tiny_task_rebuilds_from_its_source_package_with_disjoint_balanced_splits() {
    let home = aar_home();
    let preset = Preset::named("tiny").unwrap();
    let spec = &preset.tasks[0];
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join(&spec.name);
    build_task(spec, &home.join("assets"), &dir, preset.build_seed).unwrap();
    let task = LabeledTask::load(&dir).unwrap();

    let mut owner: BTreeMap<String, Split> = BTreeMap::new();
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for split in Split::ALL {
        let file = task.split(split).unwrap_or_else(|| panic!("no {split:?}"));
        let expected = match split {
            Split::TrainLabel => spec.sizes.train_label,
            Split::TrainUnlabel => spec.sizes.train_unlabel,
            Split::Test => spec.sizes.test,
            Split::TestPrivate => spec.sizes.test_private,
            Split::Transfer => spec.sizes.transfer,
        };
        assert_eq!(file.len(), expected, "{split:?} size");
        let labels = file.labels().unwrap();
        let ones = labels.iter().filter(|l| **l == Label::One).count();
        assert_eq!(ones, file.len() / 2, "{split:?} is not balanced");
        for e in file.examples() {
            // No question in two splits.
            if let Some(previous) = owner.insert(question(e).to_lowercase(), split) {
                assert_eq!(previous, split, "{:?} is in two splits", question(e));
            }
            let group = e.extra["consistency_id"].as_str().unwrap().to_owned();
            groups.entry(group).or_default().insert(question(e));
        }
    }
    // A group id names one question.
    for (group, questions) in &groups {
        assert_eq!(questions.len(), 1, "group {group} spans {questions:?}");
    }

    // The agent-facing copy: the agent splits only (never train_label or transfer), no
    // label, no subset.
    let agent = out.path().join("agent");
    write_agent_copy(&task, &agent).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&agent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = aar_tasks::AGENT_SPLITS
        .iter()
        .map(|s| s.file_name().to_owned())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(
        !names
            .iter()
            .any(|n| n == "train_label.jsonl" || n == "transfer.jsonl")
    );
    for name in names {
        for line in std::fs::read_to_string(agent.join(&name)).unwrap().lines() {
            let row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            let keys: BTreeSet<&str> = row.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["choice", "consistency_id", "id", "question"]),
                "{name}"
            );
        }
    }

    // Same source, same seed: same bytes.
    let again = out.path().join("again");
    build_task(spec, &home.join("assets"), &again, preset.build_seed).unwrap();
    for split in Split::ALL {
        let name = split.file_name();
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} differs between two builds"
        );
    }
}
