//! Bring your own data, with the real binary: `aar tasks import` turns a labeled JSONL file
//! into a preset file, and `aar up --preset-file` runs a campaign on it. Everything is
//! written under a temporary `AAR_HOME` holding a copy of the MiniLM asset (fetched once
//! into the repository's `.aar`, which is only read).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aar_tasks::Split;
use aar_testbed::preset::{Corpus, Sizes};
use serde_json::{Value, json};

fn aar_at(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aar"))
        .args(args)
        .env("AAR_HOME", home)
        .output()
        .expect("the aar binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository's `.aar/assets` with Rotten Tomatoes and MiniLM fetched (once).
fn shared_assets() -> PathBuf {
    let home = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.aar");
    let out = aar_at(
        &home,
        &[
            "assets",
            "fetch",
            "--only",
            "rotten-tomatoes",
            "minilm-l6-v2",
        ],
    );
    assert!(out.status.success(), "fetching assets: {}", stderr(&out));
    home.join("assets")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary aar home with its own copy of MiniLM, searchable by the sandboxes' uids.
fn temp_home(assets: &Path) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = aar_assets::manifest::MINILM;
    copy_dir(
        &assets.join("models").join(model),
        &tmp.path().join("home/assets/models").join(model),
    );
    tmp
}

/// `rows` balanced Rotten Tomatoes reviews as a user's binary JSONL (question, choice,
/// label only), read through the testbed's own corpus reader.
fn write_reviews(assets: &Path, path: &Path, rows: usize) {
    let (main, transfer) =
        aar_testbed::text_tasks::corpus_items(Corpus::RottenTomatoes, assets).unwrap();
    let sizes = Sizes {
        train_label: rows,
        train_unlabel: 0,
        test: 0,
        test_private: 0,
        transfer: 0,
    };
    let splits = aar_testbed::text_tasks::build_text_splits(
        "export",
        Corpus::RottenTomatoes,
        main,
        transfer,
        &sizes,
        7,
    )
    .unwrap();
    let mut text = String::new();
    for example in &splits[&Split::TrainLabel] {
        let aar_tasks::Inputs::Binary { question, choice } = &example.inputs else {
            panic!("a text task row is binary");
        };
        let label = example.label == Some(aar_core::Label::One);
        text += &format!(
            "{}\n",
            json!({"question": question, "choice": choice, "label": label})
        );
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_imported_file_runs_a_campaign_that_reports_its_task() {
    let assets = shared_assets();
    let tmp = temp_home(&assets);
    let home = tmp.path().join("home");
    let data = tmp.path().join("reviews.jsonl");
    write_reviews(&assets, &data, 600);
    let preset = tmp.path().join("reviews.json");
    let out = aar_at(
        &home,
        &[
            "tasks",
            "import",
            data.to_str().unwrap(),
            "--name",
            "reviews",
            "--format",
            "binary",
            "--sizes",
            "64,256,96,96",
            "--out",
            preset.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "import failed: {}", stderr(&out));
    let written: Value = serde_json::from_slice(&std::fs::read(&preset).unwrap()).unwrap();
    assert_eq!(written["tasks"][0]["source"]["kind"], "jsonl");
    assert!(home.join("imports/reviews/data.jsonl").is_file());

    let out = aar_at(
        &home,
        &[
            "up",
            "--preset-file",
            preset.to_str().unwrap(),
            "--minutes",
            "1",
            "--researchers",
            "1",
            "--progress-seconds",
            "30",
            "--name",
            "mine",
        ],
    );
    assert!(out.status.success(), "aar up failed: {}", stderr(&out));
    let report = home.join("campaigns/mine/report/report.json");
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(report["preset"], "reviews");
    let task = &report["tasks"][0];
    assert_eq!(task["task"], "reviews");
    let (weak, strong) = (
        task["public"][0].as_f64().unwrap(),
        task["public"][1].as_f64().unwrap(),
    );
    assert!(strong > weak, "served without a gap: W {weak}, S {strong}");
    assert!(task["vanilla_pgr"][0].is_f64(), "{task}");
    eprintln!(
        "reviews: W {weak:.3}, S {strong:.3}, vanilla PGR {}",
        task["vanilla_pgr"][0]
    );
    let evaluations = report["evaluations"].as_array().unwrap();
    assert!(
        evaluations.iter().any(|e| e["task"] == "reviews"),
        "no evaluation on the imported task: {report}"
    );
}

#[test]
fn import_and_up_refuse_bad_input_naming_it_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let data = tmp.path().join("rows.jsonl");
    let rows: String = (0..200)
        .map(|i| {
            let mut row =
                json!({"question": format!("text {i}"), "choice": "holds", "label": i % 2 == 0});
            if i == 41 {
                row.as_object_mut().unwrap().remove("label");
            }
            format!("{row}\n")
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let preset = tmp.path().join("p.json");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "tasks",
            "import",
            data.to_str().unwrap(),
            "--name",
            "mine",
            "--out",
            preset.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        aar_at(&home, &args)
    };
    let out = import(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}:42: missing field `label`", data.display())),
        "{}",
        stderr(&out)
    );

    let good: String = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"label\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&data, good).unwrap();
    let model = tmp.path().join("my-model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    std::fs::write(model.join("model.safetensors"), "").unwrap();
    let out = import(&["--strong", model.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "--strong {}: missing tokenizer.json",
            model.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!home.exists(), "an import that failed wrote under its home");
    assert!(!preset.exists());

    // The two ways to name a preset exclude each other.
    let out = aar_at(
        &home,
        &["up", "--preset", "tiny", "--preset-file", "p.json"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}
