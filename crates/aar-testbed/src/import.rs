//! `aar tasks import`: a user's labeled JSONL and choice of models turned into a preset
//! file that `aar baselines --preset-file` and `aar up --preset-file` run.
//!
//! Everything is checked before anything is written: every row (file, line and field in
//! each error), the sizes (dealt once as the build will deal them), the model directories
//! (`config.json`, the safetensors weights, `tokenizer.json`, an architecture the engine
//! reads). Then the data is copied into `<home>/imports/<name>/` (its SHA-256 checked
//! again on the copy) and the preset written, each atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aar_core::TaskFormat;
use aar_engine::{Architecture, EngineError, ModelFiles};
use aar_tasks::{Example, Split};
use thiserror::Error;

use crate::error::{IoContext, TestbedError};
use crate::jsonl_tasks::{
    grouped, read_labeled_dir, read_labeled_file, source_sha256, source_splits,
};
use crate::preset::{
    FeaturePooling, HeadSpec, LearnerSpec, PRESET_NAMES, Preset, Sizes, TaskSource, TaskSpec,
};

/// Fewest rows a single file must hold to be dealt to four splits.
pub const MIN_ROWS: usize = 100;

/// The sizes an import picks for a file with enough rows (the `cpu` preset's); a smaller
/// file is dealt in the same proportions.
pub const LARGEST_SIZES: Sizes = Sizes {
    train_label: 400,
    train_unlabel: 2000,
    test: 500,
    test_private: 500,
    transfer: 0,
};

/// The seed an imported task is dealt with.
const BUILD_SEED: u64 = 0;

/// Tokens a frozen model reads per row.
const MAX_TOKENS: usize = 128;

/// A learner as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnerChoice {
    /// The `cpu` preset's (bag of words as the weak teacher, MiniLM as the student).
    Default,
    /// Logistic regression on word presence (`bow`).
    BagOfWords,
    /// A packaged model asset (`minilm-l6-v2`) or a Hugging Face model directory.
    Model(String),
}

impl LearnerChoice {
    /// `bow`, else an asset name or a directory.
    pub fn parse(text: &str) -> LearnerChoice {
        match text {
            "bow" => LearnerChoice::BagOfWords,
            other => LearnerChoice::Model(other.to_owned()),
        }
    }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// A labeled JSONL file, or a directory of split files.
    pub source: PathBuf,
    /// The preset's and the task's name.
    pub name: String,
    /// The format the rows must have (any when `None`).
    pub format: Option<TaskFormat>,
    /// The weak teacher.
    pub weak: LearnerChoice,
    /// The student (and ceiling).
    pub strong: LearnerChoice,
    /// Rows per split (picked from the file when `None`).
    pub sizes: Option<Sizes>,
    /// aar's state directory, absolute (the copy goes to `<home>/imports/<name>/`).
    pub home: PathBuf,
    /// Where the preset file goes.
    pub out: PathBuf,
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The preset written to [`ImportRequest::out`].
    pub preset: Preset,
    /// The copy of the data the preset reads.
    pub data: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Rows per split, as the build will deal them.
    pub split_rows: BTreeMap<Split, usize>,
}

/// Why an import was refused; nothing is written when one is returned.
#[derive(Debug, Error)]
pub enum ImportError {
    /// A command-line value cannot be used.
    #[error("{flag}: {message}")]
    Arg {
        /// The flag (`--name`, `--sizes`, ...).
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A model directory is not usable.
    #[error("{flag} {}: {message}", dir.display())]
    Model {
        /// The flag naming it.
        flag: &'static str,
        /// The directory.
        dir: PathBuf,
        /// What is wrong, naming the file.
        message: String,
    },
    /// The data, or writing the copy or the preset.
    #[error(transparent)]
    Testbed(#[from] TestbedError),
}

type Result<T, E = ImportError> = std::result::Result<T, E>;

/// Checks everything, then copies the data into `<home>/imports/<name>/` and writes the
/// preset file.
pub fn import(request: &ImportRequest) -> Result<Imported> {
    check_name(&request.name)?;
    let sizes = checked_sizes(request)?;
    let weak = weak_learner(&request.weak, &request.home)?;
    let strong = strong_learner(&request.strong, &request.home)?;
    let sha256 = source_sha256(&request.source)?;
    // Dealt once here as the build will deal them: sizes the data cannot give fail now.
    let splits = source_splits(&request.name, &request.source, &sizes, BUILD_SEED)?;
    let data = data_path(request);
    let preset = Preset {
        name: request.name.clone(),
        description: format!(
            "Imported by `aar tasks import` from {} (sha256 {sha256}): weak teacher {}, \
             student {}.",
            request.source.display(),
            weak.short_name(),
            strong.short_name()
        ),
        tasks: vec![TaskSpec {
            name: request.name.clone(),
            source: TaskSource::Jsonl {
                path: data.clone(),
                sha256: sha256.clone(),
            },
            sizes,
            weak: None,
            strong: None,
        }],
        weak,
        strong,
        seeds: vec![0, 1, 2, 3, 4],
        build_seed: BUILD_SEED,
        held_out: Vec::new(),
        second_pair: None,
    };
    let partial_preset = write_partial_preset(&preset, &request.out)?;
    if let Err(err) = copy_into_home(request, &sha256) {
        let _ = std::fs::remove_file(&partial_preset);
        return Err(err);
    }
    std::fs::rename(&partial_preset, &request.out).at(&request.out)?;
    Ok(Imported {
        preset,
        data,
        sha256,
        split_rows: splits.iter().map(|(s, rows)| (*s, rows.len())).collect(),
    })
}

/// A task name is a directory name and the `{dataset}` of result paths (split at `_`),
/// and must not share a built-in preset's working directory.
fn check_name(name: &str) -> Result<()> {
    let plain = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !plain {
        return Err(ImportError::Arg {
            flag: "--name",
            message: format!("{name:?} must be 1-64 letters, digits or `-`"),
        });
    }
    if PRESET_NAMES.contains(&name) {
        return Err(ImportError::Arg {
            flag: "--name",
            message: format!("{name:?} is a built-in preset's name; choose another"),
        });
    }
    Ok(())
}

/// The sizes to build with: a directory's own split sizes, the user's, or picked from the
/// file. Reads (and so checks) every row.
fn checked_sizes(request: &ImportRequest) -> Result<Sizes> {
    let source = &request.source;
    if source.is_dir() {
        if request.sizes.is_some() {
            return Err(ImportError::Arg {
                flag: "--sizes",
                message: format!(
                    "{} is a directory of split files, used as they are; --sizes is for one file",
                    source.display()
                ),
            });
        }
        let task = read_labeled_dir(source)?;
        check_format(request, task.format())?;
        let rows = |split| task.split(split).map_or(0, |f| f.len());
        return Ok(Sizes {
            train_label: rows(Split::TrainLabel),
            train_unlabel: rows(Split::TrainUnlabel),
            test: rows(Split::Test),
            test_private: rows(Split::TestPrivate),
            transfer: rows(Split::Transfer),
        });
    }
    let file = read_labeled_file(source)?;
    check_format(request, file.format())?;
    match request.sizes {
        Some(sizes) => Ok(sizes),
        None => pick_sizes(file.examples()).ok_or_else(|| {
            ImportError::Testbed(TestbedError::BadSource {
                path: source.clone(),
                message: format!(
                    "{} rows; an import needs at least {MIN_ROWS} (beyond one group per split) \
                     to deal train_label, train_unlabel, test and test_private",
                    file.len()
                ),
            })
        }),
    }
}

fn check_format(request: &ImportRequest, found: TaskFormat) -> Result<()> {
    match request.format {
        Some(expected) if expected != found => Err(ImportError::Arg {
            flag: "--format",
            message: format!(
                "{} holds {found} rows, not {expected}",
                request.source.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// Sizes a file's rows can give: [`LARGEST_SIZES`], or its proportions (4 : 20 : 5 : 5) of
/// the rows less one group's slack per split; `None` below [`MIN_ROWS`].
pub fn pick_sizes(rows: &[Example]) -> Option<Sizes> {
    let largest_group = grouped(rows.to_vec()).iter().map(Vec::len).max()?;
    let usable = rows.len().checked_sub(4 * (largest_group - 1))?;
    if usable < MIN_ROWS {
        return None;
    }
    let l = LARGEST_SIZES;
    let full = l.train_label + l.train_unlabel + l.test + l.test_private;
    if usable >= full {
        return Some(l);
    }
    let share = |n: usize| usable * n / full;
    let (train_label, test) = (share(l.train_label), share(l.test));
    Some(Sizes {
        train_label,
        train_unlabel: usable - train_label - 2 * test,
        test,
        test_private: test,
        transfer: 0,
    })
}

/// `--weak`: the `cpu` preset's teacher, a bag of words or a frozen model.
fn weak_learner(choice: &LearnerChoice, home: &Path) -> Result<LearnerSpec> {
    match choice {
        LearnerChoice::Default => Ok(Preset::named("cpu")?.weak),
        LearnerChoice::BagOfWords => Ok(LearnerSpec::BagOfWords {
            min_count: 2,
            head: HeadSpec::WEAK,
        }),
        LearnerChoice::Model(model) => frozen_learner("--weak", model, home, HeadSpec::WEAK),
    }
}

/// `--strong`: the `cpu` preset's student or a frozen model.
fn strong_learner(choice: &LearnerChoice, home: &Path) -> Result<LearnerSpec> {
    match choice {
        LearnerChoice::Default => Ok(Preset::named("cpu")?.strong),
        LearnerChoice::BagOfWords => Err(ImportError::Arg {
            flag: "--strong",
            message: "the student must be a pretrained model: a model directory or asset".into(),
        }),
        LearnerChoice::Model(model) => frozen_learner("--strong", model, home, HeadSpec::STUDENT),
    }
}

/// A head on a model's frozen features: pooled by mean for an encoder, at the last token
/// for a decoder (read from `config.json`). Assets keep their name; a directory is made
/// absolute, since the preset is read from other working directories.
pub fn frozen_learner(
    flag: &'static str,
    model: &str,
    home: &Path,
    head: HeadSpec,
) -> Result<LearnerSpec> {
    let asset = aar_assets::manifest::asset(model);
    let (dir, name) = match asset {
        Some(asset) if asset.kind != aar_assets::manifest::AssetKind::Model => {
            return Err(ImportError::Arg {
                flag,
                message: format!("{model:?} is a data asset, not a model"),
            });
        }
        Some(_) => {
            let dir = home.join("assets").join("models").join(model);
            if !dir.is_dir() {
                return Err(ImportError::Arg {
                    flag,
                    message: format!(
                        "the asset {model} is not fetched; run `aar assets fetch --only {model}`"
                    ),
                });
            }
            (dir, model.to_owned())
        }
        None => {
            let dir = std::path::absolute(model).at(Path::new(model))?;
            (dir.clone(), dir.display().to_string())
        }
    };
    let pooling = pooling_of(flag, &dir)?;
    Ok(LearnerSpec::Frozen {
        model: name,
        layer: None,
        pooling,
        max_tokens: MAX_TOKENS,
        pair: false,
        head,
    })
}

/// How a model directory's features are pooled; the error names the missing file.
pub fn pooling_of(flag: &'static str, dir: &Path) -> Result<FeaturePooling> {
    let refuse = |message: String| ImportError::Model {
        flag,
        dir: dir.to_owned(),
        message,
    };
    let files = ModelFiles::locate(dir).map_err(|err| match err {
        EngineError::MissingFile { file, .. } => refuse(format!(
            "missing {file} (a model directory holds config.json, model.safetensors or its \
             index, and tokenizer.json)"
        )),
        other => refuse(other.to_string()),
    })?;
    if files.tokenizer.is_none() {
        return Err(refuse(
            "missing tokenizer.json (frozen features need the model's tokenizer)".into(),
        ));
    }
    match files.architecture().map_err(|e| refuse(e.to_string()))? {
        Architecture::Bert => Ok(FeaturePooling::Mean),
        Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 => {
            Ok(FeaturePooling::LastToken)
        }
    }
}

/// Where the copy of the data goes: `<home>/imports/<name>/data.jsonl`, or `.../data/`
/// for a directory of splits.
fn data_path(request: &ImportRequest) -> PathBuf {
    let dir = request.home.join("imports").join(&request.name);
    dir.join(data_leaf(&request.source))
}

fn data_leaf(source: &Path) -> &'static str {
    if source.is_dir() {
        "data"
    } else {
        "data.jsonl"
    }
}

/// Copies the data to [`data_path`], replacing an earlier import of that name whole, and
/// checks the copy's hash.
fn copy_into_home(request: &ImportRequest, sha256: &str) -> Result<()> {
    let imports = request.home.join("imports");
    let target = imports.join(&request.name);
    let partial = imports.join(format!(".{}.partial", request.name));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).at(&partial)?;
    }
    std::fs::create_dir_all(&partial).at(&partial)?;
    let leaf = data_leaf(&request.source);
    if request.source.is_dir() {
        let dir = partial.join(leaf);
        std::fs::create_dir_all(&dir).at(&dir)?;
        for split in Split::ALL {
            let from = request.source.join(split.file_name());
            if from.is_file() {
                let to = dir.join(split.file_name());
                std::fs::copy(&from, &to).at(&to)?;
            }
        }
    } else {
        let to = partial.join(leaf);
        std::fs::copy(&request.source, &to).at(&to)?;
    }
    let copied = source_sha256(&partial.join(leaf))?;
    if copied != sha256 {
        return Err(ImportError::Testbed(TestbedError::BadSource {
            path: request.source.clone(),
            message: format!("changed while it was copied (sha256 {sha256}, then {copied})"),
        }));
    }
    let sum = partial.join("sha256");
    std::fs::write(&sum, format!("{sha256}  {leaf}\n")).at(&sum)?;
    if target.exists() {
        std::fs::remove_dir_all(&target).at(&target)?;
    }
    std::fs::rename(&partial, &target).at(&target)?;
    Ok(())
}

/// Writes the preset as `aar baselines --show-preset` prints it beside `out` and reads it
/// back through [`Preset::from_file`]; returns the partial file the caller renames.
fn write_partial_preset(preset: &Preset, out: &Path) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(preset).map_err(|source| TestbedError::Json {
        path: out.to_owned(),
        source,
    })?;
    let partial = out.with_extension("json.partial");
    std::fs::write(&partial, text + "\n").at(&partial)?;
    if let Err(err) = Preset::from_file(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(err.into());
    }
    Ok(partial)
}
