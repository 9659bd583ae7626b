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

/// The `cpu` preset's served and held-out tasks build from the packaged sources at their
/// full sizes (every split, the transfer sets too: the sizes are what the sources allow),
/// balanced, with no text in two splits; `sarcasm` (S <= W) is no longer served.
#[test]
fn cpu_tasks_and_held_out_tasks_build_at_their_sizes_from_the_sources() {
    let home = aar_home();
    let mut fetch = aar_assets::FetchOptions::new(&home.join("assets"));
    fetch.only = vec![aar_assets::manifest::BIGBENCH.into()];
    aar_assets::fetch_assets(&fetch).expect("fetching BIG-bench (the cpu preset's source)");
    let preset = Preset::named("cpu").unwrap();
    let served: Vec<&str> = preset.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(served, ["sentiment", "fever", "hotels"]);
    let held_out: Vec<&str> = preset.held_out.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(held_out, ["medicine", "goalstep"]);
    assert!(preset.second_pair.is_some());

    let out = tempfile::tempdir().unwrap();
    for spec in preset.tasks.iter().chain(&preset.held_out) {
        let dir = out.path().join(&spec.name);
        build_task(spec, &home.join("assets"), &dir, preset.build_seed).unwrap();
        let task = LabeledTask::load(&dir).unwrap();
        let mut owner: BTreeMap<String, Split> = BTreeMap::new();
        for split in Split::ALL {
            let file = task
                .split(split)
                .unwrap_or_else(|| panic!("{}: no {split:?}", spec.name));
            let expected = match split {
                Split::TrainLabel => spec.sizes.train_label,
                Split::TrainUnlabel => spec.sizes.train_unlabel,
                Split::Test => spec.sizes.test,
                Split::TestPrivate => spec.sizes.test_private,
                Split::Transfer => spec.sizes.transfer,
            };
            assert_eq!(file.len(), expected, "{} {split:?} size", spec.name);
            let ones = file
                .labels()
                .unwrap()
                .iter()
                .filter(|l| **l == Label::One)
                .count();
            assert_eq!(ones, file.len() / 2, "{} {split:?} balance", spec.name);
            // A pair task repeats its question within a group (one split); a text task
            // never repeats a text at all.
            for e in file.examples() {
                let text = format!("{}\u{1}{}", question(e).to_lowercase(), choice(e));
                if let Some(previous) = owner.insert(text.clone(), split) {
                    assert_eq!(previous, split, "{}: {text:?} in two splits", spec.name);
                }
            }
        }
    }
}

fn choice(e: &aar_tasks::Example) -> String {
    match &e.inputs {
        aar_tasks::Inputs::Binary { choice, .. } => choice.to_lowercase(),
        aar_tasks::Inputs::Comparison { .. } => String::new(),
    }
}
