//! The method contract at its boundary: manifests, runs and outputs as an author and the
//! verifier see them. Runs use small `sh` scripts, so nothing here needs models.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aar_oversight::method::{
    CheckOptions, Device, ENV_INPUT, ENV_METHOD_DIR, ENV_OUTPUT, ENV_SEED, ENV_SPLITS, Entrypoint,
    MANIFEST_FILE, Manifest, MethodError, Resources, RunInterface, check_method_dir, read_output,
    split_rows,
};
use serde_json::json;

fn write(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn parse_err(manifest: &str) -> String {
    match Manifest::parse(manifest.as_bytes()) {
        Ok(m) => panic!("{manifest} parsed as {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_minimal_manifest_gets_the_default_resources_and_round_trips() {
    let manifest = Manifest::parse(br#"{"name": "logconf 0.5", "spec": "spec.json"}"#).unwrap();
    assert_eq!(manifest.entrypoint, Entrypoint::Spec("spec.json".into()));
    assert_eq!(
        manifest.resources,
        Resources {
            device: Device::Cpu,
            minutes: 10.0,
            memory_mb: 4096
        }
    );
    let full = json!({"name": "mine", "command": ["python3", "method.py", "--fast"],
                      "resources": {"device": "gpu", "minutes": 0.5, "memory_mb": 256}});
    let manifest: Manifest = serde_json::from_value(full.clone()).unwrap();
    assert_eq!(manifest.resources.device, Device::Gpu);
    assert_eq!(serde_json::to_value(&manifest).unwrap(), full);
    let again = Manifest::parse(&serde_json::to_vec(&manifest).unwrap()).unwrap();
    assert_eq!(again, manifest);
}

#[test]
fn bad_manifests_name_the_field_and_say_what_to_fix() {
    let long_name = "x".repeat(101);
    let many_args = vec!["a"; 65];
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"name": "m", "entry": "x.py"}"#.into(),
            "aar-method.json: unknown field `entry`; expected name, command or spec, resources",
        ),
        (
            r#"{"name": "m", "command": ["sh"], "spec": "s.json"}"#.into(),
            "`command` and `spec` are both set; give exactly one",
        ),
        (r#"{"name": "m"}"#.into(), "`command` is missing"),
        (r#"{"command": ["sh"]}"#.into(), "`name` must be a string"),
        (
            r#"{"name": " ", "command": ["sh"]}"#.into(),
            "`name` has 1 characters",
        ),
        (
            json!({"name": long_name, "command": ["sh"]}).to_string(),
            "`name` has 101 characters",
        ),
        (
            json!({"name": "a\nb", "command": ["sh"]}).to_string(),
            "`name` has U+000A at character 2",
        ),
        (
            json!({"name": "a\u{202E}b", "command": ["sh"]}).to_string(),
            "`name` has U+202E",
        ),
        (
            r#"{"name": "m", "command": []}"#.into(),
            "`command` has 0 arguments",
        ),
        (
            json!({"name": "m", "command": many_args}).to_string(),
            "`command` has 65 arguments",
        ),
        (
            r#"{"name": "m", "command": "sh run.sh"}"#.into(),
            "`command` must be an array",
        ),
        (
            r#"{"name": "m", "command": ["sh", ""]}"#.into(),
            "`command[1]` is \"\"",
        ),
        (
            json!({"name": "m", "command": ["sh", "a\u{0}b"]}).to_string(),
            "`command[1]`",
        ),
        (
            r#"{"name": "m", "command": ["sh", 3]}"#.into(),
            "`command[1]` is 3",
        ),
        (
            r#"{"name": "m", "spec": "../spec.json"}"#.into(),
            "`spec` is \"../spec.json\"",
        ),
        (
            r#"{"name": "m", "spec": "/etc/spec.json"}"#.into(),
            "`spec` is \"/etc/spec.json\"",
        ),
        (r#"{"name": "m", "spec": ""}"#.into(), "`spec` is \"\""),
        (
            r#"{"name": "m", "spec": 1}"#.into(),
            "`spec` must be a string",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"minutes": 0}}"#.into(),
            "`resources.minutes` is 0; write a number of minutes above 0, at most 60",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"minutes": 61}}"#.into(),
            "`resources.minutes` is 61",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"minutes": "10"}}"#.into(),
            "`resources.minutes` is \"10\"",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"memory_mb": 255}}"#.into(),
            "`resources.memory_mb` is 255; write a whole number of MiB from 256 to 65536",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"memory_mb": 65537}}"#.into(),
            "`resources.memory_mb` is 65537",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"memory_mb": 1024.5}}"#.into(),
            "`resources.memory_mb` is 1024.5",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"device": "tpu"}}"#.into(),
            "`resources.device` is \"tpu\"; write \"cpu\" or \"gpu\"",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": {"gpus": 1}}"#.into(),
            "unknown field `resources.gpus`; expected device, minutes, memory_mb",
        ),
        (
            r#"{"name": "m", "spec": "s", "resources": 4}"#.into(),
            "`resources` must be an object",
        ),
        (
            r#"{"name": "m", "#.into(),
            "aar-method.json: not valid JSON",
        ),
        (r#"["m"]"#.into(), "must be a JSON object"),
    ];
    for (manifest, expected) in cases {
        let err = parse_err(&manifest);
        assert!(
            err.contains(expected),
            "{manifest}: {err:?} lacks {expected:?}"
        );
    }
}

#[test]
fn reading_a_manifest_checks_the_files_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = Manifest::read(d).unwrap_err();
    assert!(matches!(err, MethodError::NoManifest { .. }), "{err}");
    assert!(err.to_string().contains("no aar-method.json"), "{err}");

    let read_err = |manifest: serde_json::Value| {
        write(d, MANIFEST_FILE, &manifest.to_string());
        Manifest::read(d).unwrap_err().to_string()
    };
    let err = read_err(json!({"name": "m", "spec": "spec.json"}));
    assert!(
        err.contains("`spec` names \"spec.json\", which is not a file in the method directory"),
        "{err}"
    );
    let err = read_err(json!({"name": "m", "command": ["python3", "method.py"]}));
    assert!(err.contains("`command[1]` names \"method.py\""), "{err}");
    let err = read_err(json!({"name": "m", "command": ["./run.sh"]}));
    assert!(err.contains("`command[0]` names \"./run.sh\""), "{err}");
    let err = read_err(json!({"name": "m", "command": ["python3", "../shared/method.py"]}));
    assert!(err.contains("which leaves the method directory"), "{err}");

    write(d, "spec.json", "{}");
    write(d, "src/method.py", "");
    write(d, MANIFEST_FILE, r#"{"name": "m", "spec": "spec.json"}"#);
    assert!(Manifest::read(d).is_ok());
    // Flags, inline code and absolute programs are not files of the directory.
    let manifest = json!({"name": "m",
        "command": ["/usr/bin/python3", "-u", "src/method.py", "-c", "print(1)", "--lr=0.1"]});
    write(d, MANIFEST_FILE, &manifest.to_string());
    assert!(Manifest::read(d).is_ok());
}

fn interface() -> RunInterface {
    RunInterface {
        input_dir: "/input".into(),
        seed: 42,
        splits: vec!["test".into(), "test_private".into(), "transfer".into()],
        output: "/output/predictions.json".into(),
        method_dir: "/method".into(),
    }
}

#[test]
fn argv_and_environment_of_a_run() {
    let run = interface();
    let spec = Manifest::parse(br#"{"name": "m", "spec": "conf/spec.json"}"#).unwrap();
    assert_eq!(
        spec.argv(&run, "/opt/aar/bin/aar"),
        [
            "/opt/aar/bin/aar",
            "run-method",
            "--task",
            "/input",
            "--spec",
            "/method/conf/spec.json",
            "--seed",
            "42",
            "--splits",
            "test,test_private,transfer",
            "--out",
            "/output/predictions.json"
        ]
    );
    let command = Manifest::parse(br#"{"name": "m", "command": ["python3", "m.py"]}"#).unwrap();
    assert_eq!(command.argv(&run, "/opt/aar/bin/aar"), ["python3", "m.py"]);
    let env = Manifest::env(&run);
    let expected = [
        (ENV_INPUT, "/input"),
        (ENV_SEED, "42"),
        (ENV_SPLITS, "test,test_private,transfer"),
        (ENV_OUTPUT, "/output/predictions.json"),
        (ENV_METHOD_DIR, "/method"),
    ];
    assert_eq!(
        env,
        expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
    );
}

fn expected(splits: &[(&str, usize)]) -> Vec<(String, usize)> {
    splits.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

#[test]
fn an_output_is_checked_split_by_split() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    let asked = expected(&[("test", 3), ("transfer", 2)]);
    let output_err = |value: serde_json::Value| {
        std::fs::write(&path, value.to_string()).unwrap();
        read_output(&path, &asked).unwrap_err().to_string()
    };

    // `aar run-method`'s own fields ride along and are ignored.
    std::fs::write(
        &path,
        json!({"task": "t", "predictions": [9], "splits": {"test": [0, 1, 1], "transfer": [1, 0]}})
            .to_string(),
    )
    .unwrap();
    let read = read_output(&path, &asked).unwrap();
    assert_eq!(read["test"], vec![0, 1, 1]);
    assert_eq!(read["transfer"], vec![1, 0]);
    assert_eq!(read.len(), 2);

    let err = output_err(json!({"splits": {"test": [0, 1], "transfer": [1, 0]}}));
    assert!(
        err.ends_with(
            "the output has 2 predictions for test (`splits.test`); the input has 3 rows"
        ),
        "{err}"
    );
    let err = output_err(json!({"splits": {"test": [0, 1, 2], "transfer": [1, 0]}}));
    assert!(
        err.ends_with("`splits.test[2]` is 2; a prediction is 0 or 1"),
        "{err}"
    );
    for bad in [json!(0.5), json!(true), json!("1"), json!(-1)] {
        let err = output_err(json!({"splits": {"test": [0, 1, bad], "transfer": [1, 0]}}));
        assert!(err.contains("`splits.test[2]` is"), "{err}");
    }
    let err = output_err(json!({"splits": {"test": [0, 1, 1]}}));
    assert!(
        err.contains(
            "no predictions for transfer (`splits.transfer`); the run was asked for test,transfer"
        ),
        "{err}"
    );
    let err = output_err(
        json!({"splits": {"test": [0, 1, 1], "transfer": [1, 0], "train_unlabel": [1]}}),
    );
    assert!(
        err.contains("`splits.train_unlabel` was not asked for"),
        "{err}"
    );
    let err = output_err(json!({"predictions": [0, 1, 1]}));
    assert!(err.contains("no `splits` object"), "{err}");
    let err = output_err(json!({"splits": {"test": {"0": 1}, "transfer": [1, 0]}}));
    assert!(err.contains("`splits.test` is not an array"), "{err}");

    std::fs::write(&path, "{not json").unwrap();
    assert!(matches!(
        read_output(&path, &asked),
        Err(MethodError::Json { .. })
    ));
    let missing = dir.path().join("none.json");
    let err = read_output(&missing, &asked).unwrap_err();
    assert!(matches!(err, MethodError::NoOutput { .. }), "{err}");
}

/// A label-free task copy: `rows` binary rows per split, aligned weak labels, metadata,
/// and a file that must not reach a method.
fn task_copy(root: &Path, rows: usize, private: bool) -> PathBuf {
    let task = root.join("task");
    let lines = |split: &str| {
        (0..rows)
            .map(|i| json!({"question": format!("{split} q{i}"), "choice": "c", "id": format!("{split}-{i}")}).to_string() + "\n")
            .collect::<String>()
    };
    write(&task, "train_unlabel.jsonl", &lines("train"));
    write(&task, "test.jsonl", &lines("test"));
    if private {
        write(&task, "test_private.jsonl", &lines("private"));
    }
    let soft: Vec<[f64; 2]> = (0..rows)
        .map(|i| [0.1 * i as f64, 1.0 - 0.1 * i as f64])
        .collect();
    write(
        &task,
        "weak_labels.json",
        &json!({"seed": 0, "soft_labels": soft}).to_string(),
    );
    write(&task, "testbed.json", r#"{"task": "t"}"#);
    write(&task, "notes.txt", "not part of the contract");
    task
}

/// A method script: checks its environment, records what it saw beside its directory
/// (a check runs it unsandboxed), and predicts 1 for each row of each asked split (minus
/// `short` rows).
fn script(short: usize) -> String {
    format!(
        r#"set -e
[ "$AAR_METHOD_DIR" = "$(pwd)" ] || {{ echo "cwd is $(pwd)" >&2; exit 3; }}
echo "$AAR_SEED" > ../seen_seed.txt
ls "$AAR_INPUT" > ../seen_files.txt
cp "$AAR_INPUT/weak_labels.json" ../seen_weak.json
out='{{"splits": {{'
sep=''
for split in $(echo "$AAR_SPLITS" | tr ',' ' '); do
  n=$(( $(wc -l < "$AAR_INPUT/$split.jsonl") - {short} ))
  preds=$(yes 1 | head -n "$n" | paste -sd, -)
  out="$out$sep\"$split\": [$preds]"
  sep=', '
done
echo "$out}}}}" > "$AAR_OUTPUT"
echo "predicted $AAR_SPLITS"
"#
    )
}

fn method_dir(root: &Path, manifest: serde_json::Value, body: &str) -> PathBuf {
    let dir = root.join("method");
    write(&dir, MANIFEST_FILE, &manifest.to_string());
    write(&dir, "method.sh", body);
    dir
}

fn options(rows: usize, seed: i64) -> CheckOptions {
    CheckOptions {
        rows: rows.try_into().unwrap(),
        seed,
        ..CheckOptions::default()
    }
}

#[test]
fn a_check_runs_the_command_on_a_small_label_free_copy_and_reads_its_output() {
    let root = tempfile::tempdir().unwrap();
    let task = task_copy(root.path(), 5, true);
    let dir = method_dir(
        root.path(),
        json!({"name": "all ones", "command": ["sh", "method.sh"]}),
        &script(0),
    );
    let report = check_method_dir(&dir, &task, &options(3, 7)).unwrap();
    assert_eq!(
        report.input_rows,
        expected(&[("train_unlabel", 3), ("test", 3), ("test_private", 3)])
    );
    assert_eq!(report.predictions["test"], vec![1, 1, 1]);
    assert_eq!(report.predictions["test_private"], vec![1, 1, 1]);
    assert_eq!(report.argv, ["sh", "method.sh"]);
    assert!(
        report.log_tail.contains("predicted test,test_private"),
        "{}",
        report.log_tail
    );

    let read = |name: &str| std::fs::read_to_string(root.path().join(name)).unwrap();
    assert_eq!(read("seen_seed.txt").trim(), "7");
    let files: Vec<String> = read("seen_files.txt").lines().map(String::from).collect();
    assert_eq!(
        files,
        [
            "test.jsonl",
            "test_private.jsonl",
            "testbed.json",
            "train_unlabel.jsonl",
            "weak_labels.json"
        ]
    );
    let weak: serde_json::Value = serde_json::from_str(&read("seen_weak.json")).unwrap();
    assert_eq!(weak["soft_labels"].as_array().unwrap().len(), 3);
    assert_eq!(weak["soft_labels"][2], json!([0.2, 0.8]));

    // Without a private split, only `test` is asked for.
    let task = task_copy(&root.path().join("public"), 2, false);
    let report = check_method_dir(&dir, &task, &options(64, 0)).unwrap();
    assert_eq!(report.predictions.keys().collect::<Vec<_>>(), ["test"]);
    assert_eq!(report.predictions["test"].len(), 2);
}

#[test]
fn a_spec_entrypoint_runs_aar_run_method_with_the_contract_arguments() {
    let root = tempfile::tempdir().unwrap();
    let task = task_copy(root.path(), 4, true);
    let dir = root.path().join("method");
    write(
        &dir,
        MANIFEST_FILE,
        r#"{"name": "vanilla", "spec": "spec.json"}"#,
    );
    write(&dir, "spec.json", r#"{"method": "vanilla"}"#);
    // A stand-in for `aar`: records its arguments, writes what run-method writes.
    let fake = root.path().join("fake-aar");
    write(
        root.path(),
        "fake-aar",
        r#"#!/bin/sh
echo "$@" > "$AAR_METHOD_DIR/../args.txt"
while [ $# -gt 0 ]; do [ "$1" = "--out" ] && out="$2"; shift; done
echo '{"task": "t", "predictions": [0, 0, 1, 1], "splits": {"test": [0, 0, 1, 1], "test_private": [1, 1, 0, 0]}}' > "$out"
"#,
    );
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .unwrap();
    let mut options = options(64, 3);
    options.aar_binary = Some(fake.clone());
    let report = check_method_dir(&dir, &task, &options).unwrap();
    assert_eq!(report.predictions["test_private"], vec![1, 1, 0, 0]);
    let args = std::fs::read_to_string(root.path().join("args.txt")).unwrap();
    let method_dir = dir.canonicalize().unwrap();
    let expected_start = "run-method --task ".to_owned();
    assert!(args.starts_with(&expected_start), "{args}");
    assert!(
        args.contains(&format!(
            "--spec {}/spec.json --seed 3 --splits test,test_private --out ",
            method_dir.display()
        )),
        "{args}"
    );
    assert_eq!(report.argv[0], fake.display().to_string());
}

#[test]
fn a_failing_check_says_what_to_fix() {
    let root = tempfile::tempdir().unwrap();
    let task = task_copy(root.path(), 5, true);
    let check = |manifest: serde_json::Value, body: &str| {
        let dir = method_dir(root.path(), manifest, body);
        check_method_dir(&dir, &task, &options(4, 0)).unwrap_err()
    };
    let command = json!({"name": "m", "command": ["sh", "method.sh"]});

    let err = check(command.clone(), &script(1)).to_string();
    assert!(
        err.contains("the output has 3 predictions for test (`splits.test`); the input has 4 rows"),
        "{err}"
    );
    let err = check(command.clone(), "echo boom >&2; exit 3").to_string();
    assert!(err.contains("the run failed (exit status: 3)"), "{err}");
    assert!(err.contains("boom"), "{err}");
    let err = check(command.clone(), "echo done").to_string();
    assert!(err.contains("the run wrote nothing to"), "{err}");
    let err = check(
        json!({"name": "m", "command": ["no-such-program-aar", "x"]}),
        "",
    );
    assert!(matches!(err, MethodError::Spawn { .. }), "{err}");
    let err = check(json!({"name": "m", "entry": "method.sh"}), "").to_string();
    assert!(err.contains("unknown field `entry`"), "{err}");

    // Past its minutes the whole process group is killed, children included.
    let started = Instant::now();
    let err = check(
        json!({"name": "slow", "command": ["sh", "method.sh"], "resources": {"minutes": 0.02}}),
        "sleep 30 & echo $! > ../child.pid; wait",
    );
    assert!(matches!(err, MethodError::TimedOut { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let pid = std::fs::read_to_string(root.path().join("child.pid")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the child lives on: {stat}"
    );
}

#[test]
fn a_run_that_writes_into_its_own_directory_fails_its_check() {
    let root = tempfile::tempdir().unwrap();
    let task = task_copy(root.path(), 3, false);
    let command = json!({"name": "m", "command": ["sh", "method.sh"]});
    let check = |extra: &str| {
        let dir = method_dir(
            root.path(),
            command.clone(),
            &format!("{extra}\n{}", script(0)),
        );
        check_method_dir(&dir, &task, &options(2, 0))
    };
    let err = check("echo scratch > scratch.txt").unwrap_err();
    assert!(
        matches!(&err, MethodError::WroteMethodDir { path } if path == "scratch.txt"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("write scratch files under $HOME or /tmp"),
        "{err}"
    );
    let err = check("echo '# edited' >> method.sh").unwrap_err();
    assert!(
        matches!(&err, MethodError::WroteMethodDir { path } if path == "method.sh"),
        "{err}"
    );
    std::fs::remove_file(root.path().join("method/scratch.txt")).unwrap();
    // Python skips its bytecode cache where it cannot write it: no failure to predict.
    check("mkdir -p lib/__pycache__ && echo x > lib/__pycache__/m.pyc").unwrap();
    check("echo scratch > \"$(mktemp)\"").unwrap();
}

#[test]
fn a_check_refuses_task_copies_that_break_the_contract() {
    let root = tempfile::tempdir().unwrap();
    let dir = method_dir(
        root.path(),
        json!({"name": "m", "command": ["sh", "method.sh"]}),
        &script(0),
    );
    let task = task_copy(root.path(), 3, false);
    write(
        &task,
        "weak_labels.json",
        r#"{"seed": 0, "soft_labels": [[0.5, 0.5]]}"#,
    );
    let err = check_method_dir(&dir, &task, &options(2, 0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 soft labels for 3 train_unlabel rows"),
        "{err}"
    );

    write(
        &task,
        "test.jsonl",
        "{\"question\": \"q\", \"choice\": \"c\", \"label\": true}\n",
    );
    let err = check_method_dir(&dir, &task, &options(2, 0)).unwrap_err();
    assert!(matches!(err, MethodError::Task(_)), "{err}");

    std::fs::remove_file(task.join("test.jsonl")).unwrap();
    let err = check_method_dir(&dir, &task, &options(2, 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no test.jsonl in the task copy"), "{err}");
}

#[test]
fn split_rows_counts_a_split_file_and_refuses_names_that_are_paths() {
    let root = tempfile::tempdir().unwrap();
    let task = task_copy(root.path(), 4, false);
    write(
        &task,
        "transfer.jsonl",
        "{\"question\": \"q\", \"choice\": \"c\"}\n",
    );
    assert_eq!(split_rows(&task, "test").unwrap(), 4);
    assert_eq!(split_rows(&task, "transfer").unwrap(), 1);
    let err = split_rows(&task, "test_private").unwrap_err();
    assert!(matches!(err, MethodError::MissingSplit { .. }), "{err}");
    for bad in ["../test", "Test", "", "a/b"] {
        let err = split_rows(&task, bad).unwrap_err();
        assert!(
            matches!(err, MethodError::BadSplitName { .. }),
            "{bad}: {err}"
        );
    }
}
