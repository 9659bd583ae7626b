use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use aar_core::metrics::MetricError;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// An error reading a result cache. Each names the file or directory involved.
#[derive(Debug, Error)]
pub enum ResultsError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path holds no `seed_N.json` file in the cache layout.
    #[error("{}: no seed_N.json files in the layout <dataset>_<method>/<config>/seed_N.json", path.display())]
    NoResults {
        /// The cache that was opened.
        path: PathBuf,
    },
    /// A seed file is not the JSON it should be.
    #[error("{file}: {message}")]
    BadRecord {
        /// The file, as named in the cache.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A pinned baseline seed has no file.
    #[error("dataset {dataset}: pinned seed {seed} has no {method} file in {config}")]
    MissingSeed {
        /// The data set.
        dataset: String,
        /// `weak_artifacts` or `train_ceiling`.
        method: String,
        /// The config directory searched.
        config: String,
        /// The missing seed.
        seed: u64,
    },
    /// No baseline runs for a data set that has method results.
    #[error("dataset {dataset}: no {method} results, so PGR cannot be computed")]
    MissingBaseline {
        /// The data set.
        dataset: String,
        /// `weak_artifacts` or `train_ceiling`.
        method: String,
    },
    /// Several baseline configurations and no way to tell which is the fixed one.
    #[error(
        "dataset {dataset}: {method} has results under several configs ({configs}); expected one"
    )]
    AmbiguousBaseline {
        /// The data set.
        dataset: String,
        /// `weak_artifacts` or `train_ceiling`.
        method: String,
        /// The candidates.
        configs: String,
    },
    /// A metric could not be computed.
    #[error("{context}: {source}")]
    Metric {
        /// What was being computed.
        context: String,
        /// Why it failed.
        source: MetricError,
    },
    /// A seed set could not be parsed.
    #[error("invalid seed set {0:?}: expected e.g. 42-57 or 42,43,44")]
    BadSeedSet(String),
}

/// One `seed_N.json` file of a cache.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// Data set name (`chat`, `math`, ...).
    pub dataset: String,
    /// Method (`weak_artifacts`, `train_ceiling`, `vanilla_w2s`, ...).
    pub method: String,
    /// The hyperparameter config directory.
    pub config_key: String,
    /// The seed, from the file name.
    pub seed: u64,
    /// The file's path inside the cache, for messages.
    pub name: String,
    bytes: Vec<u8>,
}

impl CacheEntry {
    /// Parses the file as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ResultsError> {
        serde_json::from_slice(&self.bytes).map_err(|e| ResultsError::BadRecord {
            file: self.name.clone(),
            message: e.to_string(),
        })
    }

    /// A message when the seed recorded inside the file differs from its name
    /// (the name is authoritative; several of the reference's hand-copied
    /// `ue_zeroshot` files disagree).
    pub fn seed_mismatch(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.bytes).ok()?;
        let recorded = value.get("seed")?.as_u64()?;
        (recorded != self.seed).then(|| {
            format!(
                "records seed {recorded} but is named seed_{}.json",
                self.seed
            )
        })
    }
}

/// Per-seed result files, read from a cache directory or a `.tar.gz` of one.
#[derive(Debug, Clone)]
pub struct ResultCache {
    entries: Vec<CacheEntry>,
}

impl ResultCache {
    /// Opens a cache directory, or a `.tar.gz`/`.tgz` archive of one.
    ///
    /// The cache root is the shallowest directory holding the layout; copies
    /// nested deeper (the reference archive has a stale `cache_results/cache_results`)
    /// are not read.
    pub fn open(path: &Path) -> Result<ResultCache, ResultsError> {
        let io = |source| ResultsError::Io {
            path: path.to_owned(),
            source,
        };
        let files = if path.is_dir() {
            let mut files = Vec::new();
            read_dir_files(path, path, &mut files)?;
            files
        } else {
            let file = std::fs::File::open(path).map_err(io)?;
            read_tar_gz(file).map_err(io)?
        };
        ResultCache::from_files(files, path)
    }

    /// Reads a `.tar.gz` archive held in memory; `name` is used in messages.
    pub fn from_archive_bytes(bytes: &[u8], name: &Path) -> Result<ResultCache, ResultsError> {
        let files = read_tar_gz(bytes).map_err(|source| ResultsError::Io {
            path: name.to_owned(),
            source,
        })?;
        ResultCache::from_files(files, name)
    }

    fn from_files(files: Vec<(String, Vec<u8>)>, path: &Path) -> Result<ResultCache, ResultsError> {
        let candidates: Vec<(Vec<String>, Vec<u8>)> = files
            .into_iter()
            .filter_map(|(name, bytes)| {
                let parts: Vec<String> = name
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                let is_seed_file =
                    parts.len() >= 3 && parse_seed_file_name(&parts[parts.len() - 1]).is_some();
                is_seed_file.then_some((parts, bytes))
            })
            .collect();
        let root_depth = candidates
            .iter()
            .map(|(parts, _)| parts.len())
            .min()
            .ok_or_else(|| ResultsError::NoResults {
                path: path.to_owned(),
            })?;
        let mut entries = Vec::new();
        for (parts, bytes) in candidates
            .into_iter()
            .filter(|(p, _)| p.len() == root_depth)
        {
            let n = parts.len();
            let (group, config_key, file) = (&parts[n - 3], &parts[n - 2], &parts[n - 1]);
            let Some((dataset, method)) = group.split_once('_') else {
                continue;
            };
            let Some(seed) = parse_seed_file_name(file) else {
                continue;
            };
            entries.push(CacheEntry {
                dataset: dataset.to_owned(),
                method: method.to_owned(),
                config_key: config_key.clone(),
                seed,
                name: parts.join("/"),
                bytes,
            });
        }
        entries.sort_by(|a, b| {
            (&a.dataset, &a.method, &a.config_key, a.seed).cmp(&(
                &b.dataset,
                &b.method,
                &b.config_key,
                b.seed,
            ))
        });
        Ok(ResultCache { entries })
    }

    /// Every seed file, sorted by data set, method, config and seed.
    pub fn entries(&self) -> &[CacheEntry] {
        &self.entries
    }

    /// The data sets that have any result.
    pub fn datasets(&self) -> BTreeSet<&str> {
        self.entries.iter().map(|e| e.dataset.as_str()).collect()
    }

    /// The methods of a data set, baselines included.
    pub fn methods(&self, dataset: &str) -> BTreeSet<&str> {
        self.entries
            .iter()
            .filter(|e| e.dataset == dataset)
            .map(|e| e.method.as_str())
            .collect()
    }

    /// Seed files of one method, grouped by config key, then seed.
    pub fn runs(&self, dataset: &str, method: &str) -> BTreeMap<&str, BTreeMap<u64, &CacheEntry>> {
        let mut runs: BTreeMap<&str, BTreeMap<u64, &CacheEntry>> = BTreeMap::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.dataset == dataset && e.method == method)
        {
            runs.entry(e.config_key.as_str())
                .or_default()
                .insert(e.seed, e);
        }
        runs
    }
}

fn parse_seed_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("seed_")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn read_dir_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), ResultsError> {
    let io = |path: &Path, source| ResultsError::Io {
        path: path.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io(&path, e))?;
        if kind.is_dir() {
            read_dir_files(root, &path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((name, bytes));
        }
    }
    Ok(())
}

fn read_tar_gz(file: impl Read) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes)?;
        out.push((name, bytes));
    }
    Ok(out)
}
