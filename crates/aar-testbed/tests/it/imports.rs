//! A user's labeled JSONL (`TaskSource::Jsonl`, `aar tasks import`): dealing by group,
//! the size picker, the content hash, model directories, and nothing written on error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aar_tasks::{Example, Inputs, LabeledTask, Split};
use aar_testbed::import::{ImportRequest, LearnerChoice, import, pick_sizes, pooling_of};
use aar_testbed::jsonl_tasks::{build_jsonl_task, needs_rebuild, split_rows};
use aar_testbed::preset::{FeaturePooling, LearnerSpec, Sizes, TaskSource, TaskSpec};
use serde_json::{Value, json};

/// Row `i`: label `i % 2 == 0`, in group `g{i / group}` when `group > 1`.
fn rows(n: usize, group: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut row =
                json!({"question": format!("text {i}"), "choice": "holds", "label": i % 2 == 0});
            if group > 1 {
                row["consistency_id"] = json!(format!("g{}", i / group));
            }
            row
        })
        .collect()
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn examples(rows: &[Value]) -> Vec<Example> {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    aar_tasks::parse_jsonl(text.as_bytes(), "rows", aar_tasks::LabelPolicy::Required)
        .unwrap()
        .examples()
        .to_vec()
}

fn question(e: &Example) -> &str {
    match &e.inputs {
        Inputs::Binary { question, .. } => question,
        Inputs::Comparison { prompt, .. } => prompt,
    }
}

const SIZES: Sizes = Sizes {
    train_label: 20,
    train_unlabel: 40,
    test: 20,
    test_private: 20,
    transfer: 10,
};

#[test]
fn groups_stay_whole_and_the_deal_is_deterministic() {
    let all = examples(&rows(120, 3));
    let splits = split_rows("mine", all.clone(), &SIZES, 0).unwrap();
    // Groups of 3: each split takes groups until it holds its size (21 >= 20, 42 >= 40).
    let counts: BTreeMap<Split, usize> = splits.iter().map(|(s, r)| (*s, r.len())).collect();
    assert_eq!(counts[&Split::TrainLabel], 21);
    assert_eq!(counts[&Split::TrainUnlabel], 42);
    assert_eq!(counts[&Split::Test], 21);
    assert_eq!(counts[&Split::TestPrivate], 21);
    // 15 rows are left; transfer takes whole groups up to 10 rows: 9.
    assert_eq!(counts[&Split::Transfer], 9);
    let mut owner: BTreeMap<String, Split> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (split, rows) in &splits {
        for row in rows {
            let group = row.extra["consistency_id"].as_str().unwrap().to_owned();
            assert_eq!(
                *owner.entry(group).or_insert(*split),
                *split,
                "a group in two splits"
            );
            assert!(seen.insert(question(row).to_owned()), "a row dealt twice");
            assert!(row.extra["id"].as_str().unwrap().starts_with("mine-"));
        }
    }
    assert_eq!(splits, split_rows("mine", all.clone(), &SIZES, 0).unwrap());
    assert_ne!(splits, split_rows("mine", all, &SIZES, 1).unwrap());
}

#[test]
fn too_few_rows_or_one_label_in_training_is_an_error_naming_the_split() {
    let err = split_rows("mine", examples(&rows(90, 1)), &SIZES, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mine: test_private needs 20 rows, the source has 10"
    );
    let mut one_label = rows(200, 1);
    for row in &mut one_label {
        row["label"] = json!(true);
    }
    let err = split_rows("mine", examples(&one_label), &SIZES, 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("train_label holds 20 rows of one label only"),
        "{err}"
    );
}

#[test]
fn sizes_are_picked_in_the_cpu_proportions_less_one_group_of_slack_per_split() {
    // 340 single rows: 340 * 400 / 3400 = 40, 340 * 500 / 3400 = 50, the rest 200.
    let picked = pick_sizes(&examples(&rows(340, 1))).unwrap();
    assert_eq!(
        (
            picked.train_label,
            picked.train_unlabel,
            picked.test,
            picked.test_private
        ),
        (40, 200, 50, 50)
    );
    // Pairs: 340 - 4 = 336 usable: 39, 49, 49 and 336 - 39 - 98 = 199.
    let picked = pick_sizes(&examples(&rows(340, 2))).unwrap();
    assert_eq!(
        (
            picked.train_label,
            picked.train_unlabel,
            picked.test,
            picked.test_private
        ),
        (39, 199, 49, 49)
    );
    assert_eq!(picked.transfer, 0);
    let large = pick_sizes(&examples(&rows(5000, 1))).unwrap();
    assert_eq!((large.train_label, large.train_unlabel), (400, 2000));
    assert!(pick_sizes(&examples(&rows(99, 1))).is_none());
}

fn jsonl_spec(path: &Path, sha256: &str) -> TaskSpec {
    TaskSpec {
        name: "mine".into(),
        source: TaskSource::Jsonl {
            path: path.to_owned(),
            sha256: sha256.into(),
        },
        sizes: SIZES,
        weak: None,
        strong: None,
    }
}

#[test]
fn a_built_task_records_its_source_and_a_changed_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data.jsonl");
    write_jsonl(&file, &rows(150, 1));
    let sha = aar_testbed::jsonl_tasks::source_sha256(&file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(sha, sha256_hex(&bytes));
    let dir = tmp.path().join("tasks").join("mine");
    let spec = jsonl_spec(&file, &sha);
    assert!(needs_rebuild(&spec, &dir, 0));
    build_jsonl_task("mine", &file, &sha, &dir, &SIZES, 0).unwrap();
    let task = LabeledTask::load(&dir).unwrap();
    assert_eq!(task.split(Split::Test).unwrap().len(), 20);
    assert!(!needs_rebuild(&spec, &dir, 0));
    assert!(
        needs_rebuild(&spec, &dir, 1),
        "another seed deals other rows"
    );
    let mut bigger = spec.clone();
    bigger.sizes.test = 30;
    assert!(needs_rebuild(&bigger, &dir, 0));

    let mut changed = rows(150, 1);
    changed[3]["label"] = json!(true);
    write_jsonl(&file, &changed);
    let err = build_jsonl_task("mine", &file, &sha, &dir, &SIZES, 0).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was imported"),
        "{err}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A model directory with the files an import looks at (weights empty: not loaded).
fn model_dir(root: &Path, model_type: &str, files: &[&str]) -> PathBuf {
    let dir = root.join(model_type);
    std::fs::create_dir_all(&dir).unwrap();
    for file in files {
        let body = if *file == "config.json" {
            json!({"model_type": model_type}).to_string()
        } else {
            "{}".into()
        };
        std::fs::write(dir.join(file), body).unwrap();
    }
    dir
}

#[test]
fn model_directories_pool_by_architecture_and_a_missing_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let all = ["config.json", "model.safetensors", "tokenizer.json"];
    let bert = model_dir(tmp.path(), "bert", &all);
    assert_eq!(pooling_of("--strong", &bert).unwrap(), FeaturePooling::Mean);
    let qwen = model_dir(tmp.path(), "qwen2", &all);
    assert_eq!(
        pooling_of("--strong", &qwen).unwrap(),
        FeaturePooling::LastToken
    );
    let no_tokenizer = model_dir(tmp.path(), "llama", &all[..2]);
    let err = pooling_of("--strong", &no_tokenizer)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--strong") && err.contains("llama") && err.contains("missing tokenizer.json"),
        "{err}"
    );
    let no_weights = model_dir(tmp.path(), "qwen3", &["config.json", "tokenizer.json"]);
    let err = pooling_of("--weak", &no_weights).unwrap_err().to_string();
    assert!(err.contains("missing model.safetensors"), "{err}");
    let unknown = model_dir(tmp.path(), "t5", &all);
    let err = pooling_of("--weak", &unknown).unwrap_err().to_string();
    assert!(err.contains("t5"), "{err}");
}

fn request(tmp: &Path, source: PathBuf, strong: LearnerChoice) -> ImportRequest {
    ImportRequest {
        source,
        name: "mine".into(),
        format: None,
        weak: LearnerChoice::Default,
        strong,
        sizes: None,
        home: tmp.join("home"),
        out: tmp.join("mine.json"),
    }
}

#[test]
fn an_import_writes_a_preset_that_reads_back_and_its_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data.jsonl");
    write_jsonl(&file, &rows(340, 1));
    let qwen = model_dir(
        tmp.path(),
        "qwen2",
        &["config.json", "model.safetensors", "tokenizer.json"],
    );
    let strong = LearnerChoice::Model(qwen.display().to_string());
    let imported = import(&request(tmp.path(), file.clone(), strong)).unwrap();
    let preset = aar_testbed::Preset::from_file(&tmp.path().join("mine.json")).unwrap();
    assert_eq!(preset, imported.preset);
    assert_eq!(preset.weak, aar_testbed::Preset::named("cpu").unwrap().weak);
    assert!(matches!(
        &preset.strong,
        LearnerSpec::Frozen { model, pooling: FeaturePooling::LastToken, .. } if Path::new(model) == qwen
    ));
    let copy = tmp.path().join("home/imports/mine/data.jsonl");
    assert_eq!(imported.data, copy);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&file).unwrap());
    assert_eq!(
        preset.tasks[0].source,
        TaskSource::Jsonl {
            path: copy,
            sha256: sha256_hex(&std::fs::read(&file).unwrap())
        }
    );
    assert_eq!(imported.split_rows[&Split::TrainUnlabel], 200);
}

#[test]
fn a_bad_row_or_model_is_an_error_naming_it_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data.jsonl");
    let mut bad = rows(340, 1);
    bad[6].as_object_mut().unwrap().remove("label");
    write_jsonl(&file, &bad);
    let err = import(&request(tmp.path(), file.clone(), LearnerChoice::Default))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}:7: missing field `label` (this file must be labeled)",
            file.display()
        )
    );

    let mut numeric_group = rows(340, 1);
    numeric_group[2]["group_id"] = json!(5);
    write_jsonl(&file, &numeric_group);
    let err = import(&request(tmp.path(), file.clone(), LearnerChoice::Default))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 3: field `group_id` must be a string"),
        "{err}"
    );

    write_jsonl(&file, &rows(340, 1));
    let no_tokenizer = model_dir(tmp.path(), "bert", &["config.json", "model.safetensors"]);
    let strong = LearnerChoice::Model(no_tokenizer.display().to_string());
    let err = import(&request(tmp.path(), file, strong))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tokenizer.json"), "{err}");
    assert!(!tmp.path().join("home").exists());
    assert!(!tmp.path().join("mine.json").exists());
    assert!(!tmp.path().join("mine.json.partial").exists());
}

#[test]
fn a_directory_of_splits_is_used_as_it_is_with_ids_added() {
    let tmp = tempfile::tempdir().unwrap();
    let splits = tmp.path().join("splits");
    std::fs::create_dir_all(&splits).unwrap();
    let all = rows(100, 1);
    for (split, range) in [
        (Split::TrainLabel, 0..20),
        (Split::TrainUnlabel, 20..60),
        (Split::Test, 60..80),
        (Split::TestPrivate, 80..94),
        (Split::Transfer, 94..100),
    ] {
        write_jsonl(&splits.join(split.file_name()), &all[range]);
    }
    let mut asked = request(tmp.path(), splits.clone(), LearnerChoice::Default);
    asked.sizes = Some(SIZES);
    let err = import(&asked).unwrap_err().to_string();
    assert!(err.starts_with("--sizes:"), "{err}");
    let imported = import(&request(tmp.path(), splits.clone(), LearnerChoice::Default)).unwrap();
    let spec = &imported.preset.tasks[0];
    assert_eq!(
        spec.sizes,
        Sizes {
            train_label: 20,
            train_unlabel: 40,
            test: 20,
            test_private: 14,
            transfer: 6
        }
    );
    let TaskSource::Jsonl { path, sha256 } = &spec.source else {
        panic!("not a jsonl source: {:?}", spec.source);
    };
    assert_eq!(path, &tmp.path().join("home/imports/mine/data"));
    let built = tmp.path().join("built");
    build_jsonl_task("mine", path, sha256, &built, &spec.sizes, 0).unwrap();
    let task = LabeledTask::load(&built).unwrap();
    let private = task.split(Split::TestPrivate).unwrap().examples();
    assert_eq!(question(&private[0]), "text 80");
    assert_eq!(private[0].extra["id"], "mine-test_private-00000");

    std::fs::remove_file(splits.join(Split::TestPrivate.file_name())).unwrap();
    let err = import(&request(tmp.path(), splits, LearnerChoice::Default))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("missing split file test_private.jsonl"),
        "{err}"
    );
}
