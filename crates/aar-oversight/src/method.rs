//! The method contract: what a leaderboard entry is, so it can be re-run by someone
//! who never trusts its author.
//!
//! An entry is a code-store snapshot (a directory) with a manifest, `aar-method.json`:
//!
//! ```json
//! {"name": "logconf 0.5",
//!  "command": ["python3", "method.py"],        // or "spec": "spec.json", not both
//!  "resources": {"device": "cpu", "minutes": 10, "memory_mb": 4096}}
//! ```
//!
//! - `name`: 1-100 printable characters on one line.
//! - `command`: the argv run in the method directory (1-64 non-empty arguments); or
//!   `spec`: a testbed `MethodSpec` JSON file in the directory (relative, no `..`), which
//!   is run as `aar run-method --task $AAR_INPUT --spec <dir>/<spec> --seed $AAR_SEED
//!   --splits $AAR_SPLITS --out $AAR_OUTPUT`.
//! - `resources` (optional): `device` `cpu` (default) or `gpu`, `minutes` in (0, 60]
//!   (default 10) per run, `memory_mb` in 256..=65536 (default 4096).
//!
//! A run (one seed) gets a fresh sandbox and this environment:
//!
//! - `AAR_INPUT`: a label-free task copy (read-only): `train_unlabel.jsonl`,
//!   `weak_labels.json` (the weak teacher's `[p0, p1]` per `train_unlabel` row),
//!   `testbed.json` (the task and its student learner) and one `<split>.jsonl` per split
//!   to predict;
//! - `AAR_SEED`: the training seed, decimal;
//! - `AAR_SPLITS`: the splits to predict, comma-separated (`test,test_private,transfer`);
//! - `AAR_OUTPUT`: the file to write, `{"splits": {"test": [0, 1, ...], ...}}` with one 0/1
//!   per row of each asked split in file order (other top-level fields are ignored);
//! - `AAR_METHOD_DIR`: the unpacked snapshot, also the working directory; read-only in
//!   verification (write scratch files under `$HOME` or `/tmp`).
//!
//! [`check_method_dir`] runs a method on a small copy of a task the way the verifier
//! would, so its author finds out what is wrong before entering it (`aar method check`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::num::NonZeroUsize;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aar_tasks::{LabelPolicy, Split, TaskFile, read_task_file, write_task_file};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The manifest's file name, at the root of a method directory.
pub const MANIFEST_FILE: &str = "aar-method.json";
/// A label-free task copy directory (read-only).
pub const ENV_INPUT: &str = "AAR_INPUT";
/// The training seed, decimal.
pub const ENV_SEED: &str = "AAR_SEED";
/// Comma-separated split names to predict, e.g. `test,test_private,transfer`.
pub const ENV_SPLITS: &str = "AAR_SPLITS";
/// The file to write predictions to.
pub const ENV_OUTPUT: &str = "AAR_OUTPUT";
/// The unpacked snapshot (also the working directory).
pub const ENV_METHOD_DIR: &str = "AAR_METHOD_DIR";

/// The weak teacher's soft labels in a task copy (as the testbed writes them).
const WEAK_LABELS_FILE: &str = "weak_labels.json";
/// The task's metadata in a task copy (as the testbed writes it).
const TASK_META_FILE: &str = "testbed.json";
/// Fields a manifest may have, as error messages list them.
const MANIFEST_FIELDS: &str = "name, command or spec, resources";
/// Fields of `resources`, as error messages list them.
const RESOURCE_FIELDS: &str = "device, minutes, memory_mb";
/// Most arguments of a command.
const MAX_ARGS: usize = 64;
/// Longest name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Largest output file read: 64 MiB is millions of predictions.
const MAX_OUTPUT_BYTES: u64 = 64 << 20;
/// Rows per split of the small copy a check runs on: 64.
const DEFAULT_ROWS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(63);
/// Extensions of arguments taken for scripts that must be in the method directory.
const SCRIPT_EXTENSIONS: &[&str] = &[
    "py", "sh", "bash", "pl", "rb", "js", "mjs", "r", "jl", "lua", "ipynb",
];

/// A method directory's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "ManifestJson")]
pub struct Manifest {
    /// Display name: 1-100 printable characters on one line.
    pub name: String,
    /// What a run executes.
    pub entrypoint: Entrypoint,
    /// What a run may use.
    pub resources: Resources,
}

/// What a run executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Entrypoint {
    /// argv run in the method dir
    Command(Vec<String>),
    /// a testbed MethodSpec JSON file in the method dir, run by `aar run-method`
    Spec(String),
}

/// What one run may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct Resources {
    /// The device the run needs.
    pub device: Device,
    /// Wall time of one run, in (0, 60].
    pub minutes: f64,
    /// Memory of one run, in 256..=65536 MiB.
    pub memory_mb: u64,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            device: Device::Cpu,
            minutes: 10.0,
            memory_mb: 4096,
        }
    }
}

/// The device a run needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CPU only.
    Cpu,
    /// One GPU.
    Gpu,
}

/// Sandbox-side paths and values of one run.
#[derive(Debug, Clone)]
pub struct RunInterface {
    /// The label-free task copy ([`ENV_INPUT`]).
    pub input_dir: String,
    /// The training seed ([`ENV_SEED`]).
    pub seed: i64,
    /// The splits to predict ([`ENV_SPLITS`]).
    pub splits: Vec<String>,
    /// The file to write predictions to ([`ENV_OUTPUT`]).
    pub output: String,
    /// The unpacked snapshot, also the working directory ([`ENV_METHOD_DIR`]).
    pub method_dir: String,
}

/// Why a method directory, a run or its output is unusable. Each message names the
/// file and field, and says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The method directory has no manifest.
    #[error(
        "{}: no {MANIFEST_FILE}; write one, e.g. {{\"name\": \"my method\", \"command\": [\"python3\", \"method.py\"]}}",
        dir.display()
    )]
    NoManifest {
        /// The method directory.
        dir: PathBuf,
    },
    /// A file is not JSON.
    #[error("{file}: not valid JSON ({message}); fix the syntax")]
    Json {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// The manifest has a field the contract does not know.
    #[error("{MANIFEST_FILE}: unknown field `{field}`; expected {expected}")]
    UnknownField {
        /// The field, with its parent (`resources.gpus`).
        field: String,
        /// The fields allowed there.
        expected: &'static str,
    },
    /// A manifest field is missing or has a bad value.
    #[error("{MANIFEST_FILE}: `{field}` {problem}")]
    Manifest {
        /// The field (`name`, `resources.minutes`, `command[2]`).
        field: String,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// The manifest names a file the method directory does not have.
    #[error(
        "{MANIFEST_FILE}: `{field}` names {path:?}, which is not a file in the method directory {}; add it there or fix the name",
        dir.display()
    )]
    MissingFile {
        /// The field.
        field: String,
        /// The path as written.
        path: String,
        /// The method directory.
        dir: PathBuf,
    },
    /// A split name that cannot be a file name of a task copy.
    #[error("split {split:?}: a split name is lowercase letters, digits and `_`")]
    BadSplitName {
        /// The name.
        split: String,
    },
    /// A task copy lacks a split file.
    #[error("{}: no {split}.jsonl in the task copy", dir.display())]
    MissingSplit {
        /// The task copy.
        dir: PathBuf,
        /// The split.
        split: String,
    },
    /// A task file is unreadable or labeled.
    #[error(transparent)]
    Task(#[from] aar_tasks::TaskError),
    /// The weak labels do not fit the task copy.
    #[error("{}: {problem}", path.display())]
    WeakLabels {
        /// The weak-labels file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The entrypoint could not be started.
    #[error(
        "could not start `{program}`: {source}; is it installed, or, for a script, named relative to the method directory?"
    )]
    Spawn {
        /// argv\[0\].
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The run took too long and was killed.
    #[error(
        "the run took longer than {minutes} minutes and was killed; make it faster or raise `resources.minutes` (at most 60)"
    )]
    TimedOut {
        /// The limit it ran under.
        minutes: f64,
    },
    /// The run exited unsuccessfully.
    #[error("the run failed ({status}); the end of its output:\n{log_tail}")]
    Failed {
        /// Its exit status.
        status: String,
        /// The end of its stdout and stderr.
        log_tail: String,
    },
    /// The run changed its own directory, which is read-only when verified.
    #[error(
        "the run changed {path} in the method directory, which is read-only when verified; write scratch files under $HOME or /tmp"
    )]
    WroteMethodDir {
        /// The file, relative to the method directory.
        path: String,
    },
    /// The run wrote no output file.
    #[error(
        "the run wrote nothing to {} (${ENV_OUTPUT}); write {{\"splits\": {{\"<split>\": [0, 1, ...]}}}} there",
        file.display()
    )]
    NoOutput {
        /// The expected output file.
        file: PathBuf,
    },
    /// The output is not the expected shape.
    #[error("{}: {problem}", file.display())]
    OutputShape {
        /// The output file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// An asked split has no predictions.
    #[error(
        "{}: no predictions for {split} (`splits.{split}`); the run was asked for {asked} (${ENV_SPLITS})",
        file.display()
    )]
    OutputMissingSplit {
        /// The output file.
        file: PathBuf,
        /// The split.
        split: String,
        /// The asked splits, comma-separated.
        asked: String,
    },
    /// The output predicts a split nobody asked for.
    #[error(
        "{}: `splits.{split}` was not asked for; write exactly the splits in ${ENV_SPLITS} ({asked})",
        file.display()
    )]
    OutputExtraSplit {
        /// The output file.
        file: PathBuf,
        /// The split.
        split: String,
        /// The asked splits, comma-separated.
        asked: String,
    },
    /// A split has the wrong number of predictions.
    #[error(
        "{}: the output has {got} predictions for {split} (`splits.{split}`); the input has {rows} rows",
        file.display()
    )]
    OutputCount {
        /// The output file.
        file: PathBuf,
        /// The split.
        split: String,
        /// Predictions in the output.
        got: usize,
        /// Rows of the split's input file.
        rows: usize,
    },
    /// A prediction is not 0 or 1.
    #[error("{}: `splits.{split}[{index}]` is {value}; a prediction is 0 or 1", file.display())]
    OutputValue {
        /// The output file.
        file: PathBuf,
        /// The split.
        split: String,
        /// Position in the split.
        index: usize,
        /// The value found.
        value: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> MethodError + '_ {
    move |source| MethodError::Io {
        path: path.to_owned(),
        source,
    }
}

fn field_error(field: &str, problem: impl Into<String>) -> MethodError {
    MethodError::Manifest {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// The manifest as JSON, for serialising.
#[derive(Serialize)]
struct ManifestJson {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<String>,
    resources: Resources,
}

impl From<Manifest> for ManifestJson {
    fn from(manifest: Manifest) -> ManifestJson {
        let (command, spec) = match manifest.entrypoint {
            Entrypoint::Command(argv) => (Some(argv), None),
            Entrypoint::Spec(spec) => (None, Some(spec)),
        };
        ManifestJson {
            name: manifest.name,
            command,
            spec,
            resources: manifest.resources,
        }
    }
}

impl TryFrom<Value> for Manifest {
    type Error = MethodError;

    fn try_from(value: Value) -> Result<Manifest, MethodError> {
        let Value::Object(mut object) = value else {
            return Err(field_error(
                "(top level)",
                "must be a JSON object: {\"name\": ..., \"command\": [...]} or {\"name\": ..., \"spec\": \"spec.json\"}",
            ));
        };
        refuse_unknown(
            &object,
            &["name", "command", "spec", "resources"],
            "",
            MANIFEST_FIELDS,
        )?;
        let name = check_name(object.remove("name"))?;
        let entrypoint = match (object.remove("command"), object.remove("spec")) {
            (Some(command), None) => Entrypoint::Command(check_command(command)?),
            (None, Some(spec)) => Entrypoint::Spec(check_spec_path(spec)?),
            (Some(_), Some(_)) => {
                return Err(field_error(
                    "command",
                    "and `spec` are both set; give exactly one",
                ));
            }
            (None, None) => {
                return Err(field_error(
                    "command",
                    "is missing: give `command` (an argv, e.g. [\"python3\", \"method.py\"]) or `spec` (a method spec file, e.g. \"spec.json\")",
                ));
            }
        };
        let resources = match object.remove("resources") {
            None => Resources::default(),
            Some(value) => Resources::try_from(value)?,
        };
        Ok(Manifest {
            name,
            entrypoint,
            resources,
        })
    }
}

impl TryFrom<Value> for Resources {
    type Error = MethodError;

    fn try_from(value: Value) -> Result<Resources, MethodError> {
        let Value::Object(object) = value else {
            return Err(field_error(
                "resources",
                "must be an object, e.g. {\"device\": \"cpu\", \"minutes\": 10, \"memory_mb\": 4096}",
            ));
        };
        refuse_unknown(
            &object,
            &["device", "minutes", "memory_mb"],
            "resources.",
            RESOURCE_FIELDS,
        )?;
        let mut resources = Resources::default();
        if let Some(device) = object.get("device") {
            resources.device = match device.as_str() {
                Some("cpu") => Device::Cpu,
                Some("gpu") => Device::Gpu,
                _ => {
                    return Err(field_error(
                        "resources.device",
                        format!("is {device}; write \"cpu\" or \"gpu\""),
                    ));
                }
            };
        }
        if let Some(minutes) = object.get("minutes") {
            resources.minutes = minutes
                .as_f64()
                .filter(|m| *m > 0.0 && *m <= 60.0)
                .ok_or_else(|| {
                    field_error(
                        "resources.minutes",
                        format!("is {minutes}; write a number of minutes above 0, at most 60"),
                    )
                })?;
        }
        if let Some(memory) = object.get("memory_mb") {
            resources.memory_mb = memory
                .as_u64()
                .filter(|m| (256..=65536).contains(m))
                .ok_or_else(|| {
                    field_error(
                        "resources.memory_mb",
                        format!("is {memory}; write a whole number of MiB from 256 to 65536"),
                    )
                })?;
        }
        Ok(resources)
    }
}

/// The first key of `object` outside `known`, as an error.
fn refuse_unknown(
    object: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
    expected: &'static str,
) -> Result<(), MethodError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(field) => Err(MethodError::UnknownField {
            field: format!("{prefix}{field}"),
            expected,
        }),
        None => Ok(()),
    }
}

fn check_name(value: Option<Value>) -> Result<String, MethodError> {
    let Some(Value::String(name)) = value else {
        return Err(field_error(
            "name",
            "must be a string: a short name of the method, e.g. \"logconf, aux 0.5\"",
        ));
    };
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS {
        return Err(field_error(
            "name",
            format!("has {chars} characters; write 1 to {MAX_NAME_CHARS}, not all blank"),
        ));
    }
    // The name reaches reports, terminals and other agents' prompts.
    aar_core::text::check_agent_text(&name, false)
        .map_err(|e| field_error("name", format!("has {e}; write one line of printable text")))?;
    Ok(name)
}

fn check_command(value: Value) -> Result<Vec<String>, MethodError> {
    let problem = "must be an array of 1 to 64 strings, e.g. [\"python3\", \"method.py\"]";
    let Value::Array(items) = value else {
        return Err(field_error("command", problem));
    };
    if items.is_empty() || items.len() > MAX_ARGS {
        return Err(field_error(
            "command",
            format!("has {} arguments; {problem}", items.len()),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(arg) if !arg.is_empty() && !arg.contains('\0') => Ok(arg),
            other => Err(field_error(
                &format!("command[{i}]"),
                format!("is {other}; every argument is a non-empty string without NUL"),
            )),
        })
        .collect()
}

fn check_spec_path(value: Value) -> Result<String, MethodError> {
    let Value::String(path) = value else {
        return Err(field_error(
            "spec",
            "must be a string: the method spec file's path in the method directory, e.g. \"spec.json\"",
        ));
    };
    if !is_inside(&path) {
        return Err(field_error(
            "spec",
            format!("is {path:?}; write a relative path inside the method directory, without `..`"),
        ));
    }
    Ok(path)
}

/// Whether `path` is a non-empty relative path that stays below its directory.
fn is_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && Path::new(path)
            .components()
            .any(|c| matches!(c, Component::Normal(_)))
}

/// Whether argument `arg` of a command names a script the method directory must hold:
/// a relative path starting with `./`, or a word ending in a script extension.
fn looks_like_script(arg: &str) -> bool {
    if arg.starts_with('-') || arg.starts_with('/') || arg.chars().any(char::is_whitespace) {
        return false;
    }
    arg.starts_with("./")
        || Path::new(arg)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SCRIPT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn require_file(dir: &Path, field: &str, path: &str) -> Result<(), MethodError> {
    if !is_inside(path) {
        return Err(field_error(
            field,
            format!(
                "is {path:?}, which leaves the method directory; only the snapshot is there when it runs"
            ),
        ));
    }
    if dir.join(path).is_file() {
        Ok(())
    } else {
        Err(MethodError::MissingFile {
            field: field.to_owned(),
            path: path.to_owned(),
            dir: dir.to_owned(),
        })
    }
}

impl Manifest {
    /// Parses and validates manifest JSON; errors say what to fix.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, MethodError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| MethodError::Json {
            file: MANIFEST_FILE.to_owned(),
            message: e.to_string(),
        })?;
        Manifest::try_from(value)
    }

    /// Reads `dir/aar-method.json` and checks that what it names exists in `dir` (the
    /// spec file; a relative script path in the command's argv if it looks like one).
    pub fn read(dir: &Path) -> Result<Manifest, MethodError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MethodError::NoManifest {
                    dir: dir.to_owned(),
                });
            }
            Err(e) => return Err(io_error(&path)(e)),
        };
        let manifest = Manifest::parse(&bytes)?;
        match &manifest.entrypoint {
            Entrypoint::Spec(spec) => require_file(dir, "spec", spec)?,
            Entrypoint::Command(argv) => {
                for (i, arg) in argv.iter().enumerate() {
                    if looks_like_script(arg) {
                        require_file(dir, &format!("command[{i}]"), arg)?;
                    }
                }
            }
        }
        Ok(manifest)
    }

    /// argv of a run: the command as is, or for a Spec `[aar_binary, "run-method",
    /// "--task", input_dir, "--spec", "<method_dir>/<spec>", "--seed", seed, "--splits",
    /// "a,b", "--out", output]`.
    pub fn argv(&self, run: &RunInterface, aar_binary: &str) -> Vec<String> {
        match &self.entrypoint {
            Entrypoint::Command(argv) => argv.clone(),
            Entrypoint::Spec(spec) => vec![
                aar_binary.to_owned(),
                "run-method".to_owned(),
                "--task".to_owned(),
                run.input_dir.clone(),
                "--spec".to_owned(),
                format!("{}/{spec}", run.method_dir.trim_end_matches('/')),
                "--seed".to_owned(),
                run.seed.to_string(),
                "--splits".to_owned(),
                run.splits.join(","),
                "--out".to_owned(),
                run.output.clone(),
            ],
        }
    }

    /// The AAR_* environment of a run.
    pub fn env(run: &RunInterface) -> Vec<(String, String)> {
        [
            (ENV_INPUT, run.input_dir.clone()),
            (ENV_SEED, run.seed.to_string()),
            (ENV_SPLITS, run.splits.join(",")),
            (ENV_OUTPUT, run.output.clone()),
            (ENV_METHOD_DIR, run.method_dir.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

/// Whether `split` can name a `<split>.jsonl` file of a task copy.
fn check_split_name(split: &str) -> Result<(), MethodError> {
    let ok = !split.is_empty()
        && split
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(MethodError::BadSplitName {
            split: split.to_owned(),
        })
    }
}

/// Rows of `<split>.jsonl` in a label-free task copy (a labeled row is an error).
pub fn split_rows(input_dir: &Path, split: &str) -> Result<usize, MethodError> {
    check_split_name(split)?;
    let path = input_dir.join(format!("{split}.jsonl"));
    if !path.is_file() {
        return Err(MethodError::MissingSplit {
            dir: input_dir.to_owned(),
            split: split.to_owned(),
        });
    }
    Ok(read_task_file(&path, LabelPolicy::Forbidden)?.len())
}

/// Reads a run's output and checks it: one 0/1 prediction per row of each asked split
/// (`expected` = (split, rows)); extra splits are an error.
pub fn read_output(
    path: &Path,
    expected: &[(String, usize)],
) -> Result<BTreeMap<String, Vec<u8>>, MethodError> {
    let shape = |problem: String| MethodError::OutputShape {
        file: path.to_owned(),
        problem,
    };
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MethodError::NoOutput {
                file: path.to_owned(),
            });
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    if size > MAX_OUTPUT_BYTES {
        return Err(shape(format!(
            "the output is {size} bytes; at most {MAX_OUTPUT_BYTES}: write only {{\"splits\": ...}}"
        )));
    }
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| MethodError::Json {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    let Some(splits) = value.get("splits").and_then(Value::as_object) else {
        return Err(shape(
            "the output has no `splits` object; write {\"splits\": {\"test\": [0, 1, ...], ...}}"
                .to_owned(),
        ));
    };
    let asked = expected
        .iter()
        .map(|(s, _)| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    if let Some(extra) = splits
        .keys()
        .find(|k| !expected.iter().any(|(s, _)| s == *k))
    {
        return Err(MethodError::OutputExtraSplit {
            file: path.to_owned(),
            split: extra.clone(),
            asked,
        });
    }
    let mut out = BTreeMap::new();
    for (split, rows) in expected {
        let Some(values) = splits.get(split) else {
            return Err(MethodError::OutputMissingSplit {
                file: path.to_owned(),
                split: split.clone(),
                asked,
            });
        };
        out.insert(
            split.clone(),
            split_predictions(path, split, values, *rows)?,
        );
    }
    Ok(out)
}

/// The 0/1 predictions of one split of an output, `rows` of them.
fn split_predictions(
    path: &Path,
    split: &str,
    values: &Value,
    rows: usize,
) -> Result<Vec<u8>, MethodError> {
    let Some(items) = values.as_array() else {
        return Err(MethodError::OutputShape {
            file: path.to_owned(),
            problem: format!("`splits.{split}` is not an array; write one 0/1 per row"),
        });
    };
    if items.len() != rows {
        return Err(MethodError::OutputCount {
            file: path.to_owned(),
            split: split.to_owned(),
            got: items.len(),
            rows,
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match item.as_u64() {
            Some(p @ (0 | 1)) => Ok(p as u8),
            _ => Err(MethodError::OutputValue {
                file: path.to_owned(),
                split: split.to_owned(),
                index,
                value: item.to_string(),
            }),
        })
        .collect()
}

/// How `aar method check` runs a method.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Rows of each split in the small task copy (the first ones).
    pub rows: NonZeroUsize,
    /// The training seed.
    pub seed: i64,
    /// The longest a check waits, whatever the manifest allows.
    pub max_minutes: f64,
    /// The `aar` binary for spec entrypoints (default: the current executable).
    pub aar_binary: Option<PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            rows: DEFAULT_ROWS,
            seed: 0,
            max_minutes: 10.0,
            aar_binary: None,
        }
    }
}

/// What a successful check ran and read.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The manifest.
    pub manifest: Manifest,
    /// The argv that ran.
    pub argv: Vec<String>,
    /// Rows per split file of the small copy, `train_unlabel` first.
    pub input_rows: Vec<(String, usize)>,
    /// The checked predictions per asked split.
    pub predictions: BTreeMap<String, Vec<u8>>,
    /// Wall time of the run.
    pub seconds: f64,
    /// The end of the run's stdout and stderr.
    pub log_tail: String,
}

/// Validates the manifest of `dir`, runs its entrypoint (here, not sandboxed) on a small
/// label-free copy of `task_dir` as the verifier would, and checks the output.
pub fn check_method_dir(
    dir: &Path,
    task_dir: &Path,
    options: &CheckOptions,
) -> Result<CheckReport, MethodError> {
    let manifest = Manifest::read(dir)?;
    let method_dir = dir.canonicalize().map_err(io_error(dir))?;
    let work = tempfile::Builder::new()
        .prefix("aar-method-check-")
        .tempdir()
        .map_err(io_error(&std::env::temp_dir()))?;
    let input = work.path().join("input");
    std::fs::create_dir(&input).map_err(io_error(&input))?;
    let input_rows = small_copy(task_dir, &input, options.rows.get())?;
    let expected: Vec<(String, usize)> = input_rows
        .iter()
        .filter(|(split, _)| split != Split::TrainUnlabel.name())
        .cloned()
        .collect();
    let output = work.path().join("output.json");
    let run = RunInterface {
        input_dir: input.display().to_string(),
        seed: options.seed,
        splits: expected.iter().map(|(s, _)| s.clone()).collect(),
        output: output.display().to_string(),
        method_dir: method_dir.display().to_string(),
    };
    let aar = match &options.aar_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(io_error(Path::new("/proc/self/exe")))?,
    };
    let argv = manifest.argv(&run, &aar.display().to_string());
    let minutes = manifest.resources.minutes.min(options.max_minutes);
    let started = Instant::now();
    let before = dir_state(&method_dir)?;
    let log_tail = run_process(&argv, &run, work.path(), minutes)?;
    if let Some(path) = first_change(&before, &dir_state(&method_dir)?) {
        return Err(MethodError::WroteMethodDir { path });
    }
    let seconds = started.elapsed().as_secs_f64();
    let predictions = read_output(&output, &expected)?;
    Ok(CheckReport {
        manifest,
        argv,
        input_rows,
        predictions,
        seconds,
        log_tail,
    })
}

/// Writes the first `rows` rows of the task copy's splits (and the matching weak labels,
/// and its `testbed.json`) into `out`; nothing else. Returns rows per split file.
fn small_copy(
    task_dir: &Path,
    out: &Path,
    rows: usize,
) -> Result<Vec<(String, usize)>, MethodError> {
    let mut copied = Vec::new();
    let mut unlabeled_total = 0;
    for split in [Split::TrainUnlabel, Split::Test, Split::TestPrivate] {
        let path = task_dir.join(split.file_name());
        if !path.is_file() {
            if split == Split::TestPrivate {
                continue;
            }
            return Err(MethodError::MissingSplit {
                dir: task_dir.to_owned(),
                split: split.name().to_owned(),
            });
        }
        let file = read_task_file(&path, LabelPolicy::Forbidden)?;
        if split == Split::TrainUnlabel {
            unlabeled_total = file.len();
        }
        let head = file.examples()[..rows.min(file.len())].to_vec();
        let n = head.len();
        let target = out.join(split.file_name());
        write_task_file(
            &target,
            &TaskFile::new(head, &target.display().to_string())?,
        )?;
        copied.push((split.name().to_owned(), n));
    }
    let train_rows = copied.first().map_or(0, |(_, n)| *n);
    copy_weak_labels(task_dir, out, unlabeled_total, train_rows)?;
    let meta = task_dir.join(TASK_META_FILE);
    if meta.is_file() {
        let to = out.join(TASK_META_FILE);
        std::fs::copy(&meta, &to).map_err(io_error(&to))?;
    }
    Ok(copied)
}

/// Copies the first `rows` soft labels, after checking they align with `train_unlabel`.
fn copy_weak_labels(
    task_dir: &Path,
    out: &Path,
    total: usize,
    rows: usize,
) -> Result<(), MethodError> {
    let path = task_dir.join(WEAK_LABELS_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| MethodError::Json {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    let problem = |problem: String| MethodError::WeakLabels {
        path: path.clone(),
        problem,
    };
    let Some(labels) = value.get_mut("soft_labels").and_then(Value::as_array_mut) else {
        return Err(problem("no `soft_labels` array".to_owned()));
    };
    if labels.len() != total {
        return Err(problem(format!(
            "{} soft labels for {total} train_unlabel rows; they must align",
            labels.len()
        )));
    }
    labels.truncate(rows);
    let to = out.join(WEAK_LABELS_FILE);
    std::fs::write(&to, value.to_string()).map_err(io_error(&to))
}

/// Size and modification time of each file under a directory, by relative path.
type DirState = BTreeMap<String, (u64, Option<std::time::SystemTime>)>;

/// What is under `dir` (links are not followed). Python's `__pycache__` is left out:
/// Python skips writing it where it cannot, so writing it here predicts no failure.
fn dir_state(dir: &Path) -> Result<DirState, MethodError> {
    let mut state = DirState::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).map_err(io_error(&current))? {
            let path = entry.map_err(io_error(&current))?.path();
            let meta = path.symlink_metadata().map_err(io_error(&path))?;
            if meta.is_dir() {
                if path.file_name().is_some_and(|n| n != "__pycache__") {
                    stack.push(path);
                }
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            state.insert(rel, (meta.len(), meta.modified().ok()));
        }
    }
    Ok(state)
}

/// The first file added, removed or rewritten between two states.
fn first_change(before: &DirState, after: &DirState) -> Option<String> {
    let changed = after
        .iter()
        .find(|(path, now)| before.get(*path) != Some(now));
    let removed = before.keys().find(|path| !after.contains_key(*path));
    changed.map(|(path, _)| path).or(removed).cloned()
}

/// Runs `argv` in the method directory with the run's environment, stdout and stderr
/// to files in `work`, killed after `minutes`. Returns the end of its output.
fn run_process(
    argv: &[String],
    run: &RunInterface,
    work: &Path,
    minutes: f64,
) -> Result<String, MethodError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(field_error("command", "is empty"));
    };
    let log = work.join("run.log");
    let stdout = File::create(&log).map_err(io_error(&log))?;
    let stderr = stdout.try_clone().map_err(io_error(&log))?;
    // A relative program with a slash is a script of the method directory; spelling
    // it out keeps it from resolving against our own working directory.
    let program_path = if program.contains('/') && !program.starts_with('/') {
        Path::new(&run.method_dir).join(program)
    } else {
        PathBuf::from(program)
    };
    let mut child = Command::new(program_path)
        .args(args)
        .current_dir(&run.method_dir)
        .envs(Manifest::env(run))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|source| MethodError::Spawn {
            program: program.clone(),
            source,
        })?;
    let status = wait_until(&mut child, Duration::from_secs_f64(minutes * 60.0))
        .map_err(io_error(Path::new(program)))?;
    let tail = log_tail(&log);
    match status {
        None => Err(MethodError::TimedOut { minutes }),
        Some(status) if status.success() => Ok(tail),
        Some(status) => Err(MethodError::Failed {
            status: status.to_string(),
            log_tail: tail,
        }),
    }
}

/// Waits for `child` up to `limit`; past it kills its whole process group (a script's
/// children too) and answers `None`.
fn wait_until(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            // The group may be gone already; killing the child itself is the fallback.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last few KiB of a run's log, from a line start.
fn log_tail(path: &Path) -> String {
    const TAIL: u64 = 4096;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let size = file.metadata().map_or(0, |m| m.len());
    if file
        .seek(SeekFrom::Start(size.saturating_sub(TAIL)))
        .is_err()
    {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match (size > TAIL, text.find('\n')) {
        (true, Some(newline)) => text[newline + 1..].to_owned(),
        _ => text,
    }
}
