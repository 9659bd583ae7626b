use std::collections::BTreeSet;
use std::fmt;

use aar_core::metrics::{FixedBaselines, MeanSe};
use serde::Serialize;

use crate::cache::{ResultCache, ResultsError};
use crate::records::{CeilingRecord, TransferRecord, WeakArtifactRecord};

const WEAK: &str = "weak_artifacts";
const CEILING: &str = "train_ceiling";

/// The pinned seeds fixed baselines are computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedSet(BTreeSet<u64>);

impl SeedSet {
    /// The reference's baseline seeds, 42 to 57.
    pub fn reference() -> SeedSet {
        SeedSet((42..=57).collect())
    }

    /// The seeds, ascending.
    pub fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }
}

impl std::str::FromStr for SeedSet {
    type Err = ResultsError;

    /// `42-57`, `42,43,50` or a mix (`42-45,50`).
    fn from_str(text: &str) -> Result<SeedSet, ResultsError> {
        let bad = || ResultsError::BadSeedSet(text.to_owned());
        let mut seeds = BTreeSet::new();
        for part in text.split(',').map(str::trim) {
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi): (u64, u64) = (
                        lo.trim().parse().map_err(|_| bad())?,
                        hi.trim().parse().map_err(|_| bad())?,
                    );
                    if lo > hi || hi - lo > 100_000 {
                        return Err(bad());
                    }
                    seeds.extend(lo..=hi);
                }
                None => {
                    seeds.insert(part.parse().map_err(|_| bad())?);
                }
            }
        }
        if seeds.is_empty() {
            return Err(bad());
        }
        Ok(SeedSet(seeds))
    }
}

/// W, S and every method's PGR, per data set.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceReport {
    /// The pinned baseline seeds.
    pub baseline_seeds: SeedSet,
    /// One entry per data set, by name.
    pub datasets: Vec<DatasetReport>,
}

/// One data set's baselines and methods.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    /// Data set name.
    pub dataset: String,
    /// Config directory of the weak teacher runs used.
    pub weak_config: String,
    /// Config directory of the ceiling runs used.
    pub ceiling_config: String,
    /// Fixed W and S over the pinned seeds.
    pub baselines: FixedBaselines,
    /// Every method and config with results.
    pub methods: Vec<MethodReport>,
}

/// One method under one config.
#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    /// Method name (cache directory).
    pub method: String,
    /// Config directory.
    pub config_key: String,
    /// Seeds with a result file.
    pub seeds: Vec<u64>,
    /// Student test accuracy over those seeds.
    pub transfer_acc: MeanSe,
    /// PGR per seed against the fixed baselines, aggregated.
    pub pgr: MeanSe,
    /// Inconsistencies in the files that did not stop the computation.
    pub warnings: Vec<String>,
}

impl ReferenceReport {
    /// Builds the report: fixed baselines from `baseline_seeds`, PGR recomputed for every method.
    pub fn build(
        cache: &ResultCache,
        baseline_seeds: &SeedSet,
    ) -> Result<ReferenceReport, ResultsError> {
        let datasets = cache
            .datasets()
            .into_iter()
            .map(|dataset| dataset_report(cache, dataset, baseline_seeds))
            .collect::<Result<_, _>>()?;
        Ok(ReferenceReport {
            baseline_seeds: baseline_seeds.clone(),
            datasets,
        })
    }

    /// A data set's section, by name.
    pub fn dataset(&self, name: &str) -> Option<&DatasetReport> {
        self.datasets.iter().find(|d| d.dataset == name)
    }
}

impl DatasetReport {
    /// The first config of a method (most methods have one).
    pub fn method(&self, name: &str) -> Option<&MethodReport> {
        self.methods.iter().find(|m| m.method == name)
    }
}

fn dataset_report(
    cache: &ResultCache,
    dataset: &str,
    seeds: &SeedSet,
) -> Result<DatasetReport, ResultsError> {
    let (weak_config, weak) = pinned_accuracies(cache, dataset, WEAK, seeds, |e| {
        e.parse::<WeakArtifactRecord>().map(|r| r.weak_acc)
    })?;
    let (ceiling_config, ceiling) = pinned_accuracies(cache, dataset, CEILING, seeds, |e| {
        e.parse::<CeilingRecord>().map(|r| r.strong_acc)
    })?;
    let baselines = FixedBaselines::from_seed_accuracies(&weak, &ceiling).map_err(|source| {
        ResultsError::Metric {
            context: format!("dataset {dataset}: fixed baselines"),
            source,
        }
    })?;

    let mut methods = Vec::new();
    for method in cache
        .methods(dataset)
        .into_iter()
        .filter(|m| *m != WEAK && *m != CEILING)
    {
        for (config_key, runs) in cache.runs(dataset, method) {
            let transfer = runs
                .values()
                .map(|e| e.parse::<TransferRecord>().map(|r| r.transfer_acc))
                .collect::<Result<Vec<_>, _>>()?;
            let warnings = runs
                .values()
                .filter_map(|e| e.seed_mismatch().map(|m| format!("{}: {m}", e.name)))
                .collect();
            let context = || format!("dataset {dataset}, method {method} ({config_key})");
            let pgr =
                baselines
                    .pgr_over_seeds(&transfer)
                    .map_err(|source| ResultsError::Metric {
                        context: context(),
                        source,
                    })?;
            let transfer_acc =
                MeanSe::from_values(&transfer).map_err(|source| ResultsError::Metric {
                    context: context(),
                    source,
                })?;
            methods.push(MethodReport {
                method: method.to_owned(),
                config_key: config_key.to_owned(),
                seeds: runs.keys().copied().collect(),
                transfer_acc,
                pgr,
                warnings,
            });
        }
    }
    Ok(DatasetReport {
        dataset: dataset.to_owned(),
        weak_config,
        ceiling_config,
        baselines,
        methods,
    })
}

/// Accuracies of a baseline method at exactly the pinned seeds.
fn pinned_accuracies(
    cache: &ResultCache,
    dataset: &str,
    method: &str,
    seeds: &SeedSet,
    accuracy: impl Fn(&crate::CacheEntry) -> Result<f64, ResultsError>,
) -> Result<(String, Vec<f64>), ResultsError> {
    let runs = cache.runs(dataset, method);
    let mut configs = runs.iter();
    let (config, files) = match (configs.next(), configs.next()) {
        (None, _) => {
            return Err(ResultsError::MissingBaseline {
                dataset: dataset.to_owned(),
                method: method.to_owned(),
            });
        }
        (Some(only), None) => only,
        (Some(_), Some(_)) => {
            return Err(ResultsError::AmbiguousBaseline {
                dataset: dataset.to_owned(),
                method: method.to_owned(),
                configs: runs.keys().copied().collect::<Vec<_>>().join(", "),
            });
        }
    };
    let values = seeds
        .seeds()
        .map(|seed| {
            let entry = files.get(&seed).ok_or_else(|| ResultsError::MissingSeed {
                dataset: dataset.to_owned(),
                method: method.to_owned(),
                config: (*config).to_owned(),
                seed,
            })?;
            // Baselines fix everyone's PGR: an inconsistent file is an error here, not a warning.
            if let Some(message) = entry.seed_mismatch() {
                return Err(ResultsError::BadRecord {
                    file: entry.name.clone(),
                    message,
                });
            }
            accuracy(entry)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(((*config).to_owned(), values))
}

fn se(m: &MeanSe) -> String {
    m.se.map_or_else(|| "-".to_owned(), |se| format!("{se:.3}"))
}

impl fmt::Display for ReferenceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seeds: Vec<u64> = self.baseline_seeds.seeds().collect();
        let (first, last) = (
            seeds.first().copied().unwrap_or(0),
            seeds.last().copied().unwrap_or(0),
        );
        writeln!(
            f,
            "Fixed baselines over {} pinned seeds ({first}..{last}); PGR per seed, mean +- SE.",
            seeds.len()
        )?;
        for d in &self.datasets {
            let b = &d.baselines;
            writeln!(f)?;
            writeln!(
                f,
                "{}: W {:.4} +- {} (n={})   S {:.4} +- {} (n={})   gap {:.4}",
                d.dataset,
                b.weak.mean,
                se(&b.weak),
                b.weak.n,
                b.ceiling.mean,
                se(&b.ceiling),
                b.ceiling.n,
                b.ceiling.mean - b.weak.mean
            )?;
            writeln!(
                f,
                "  {:<32} {:>8} {:>7} {:>9} {:>6}  config",
                "method", "PGR", "+- SE", "transfer", "seeds"
            )?;
            for m in &d.methods {
                writeln!(
                    f,
                    "  {:<32} {:>8.3} {:>7} {:>9.4} {:>6}  {}",
                    m.method,
                    m.pgr.mean,
                    se(&m.pgr),
                    m.transfer_acc.mean,
                    m.seeds.len(),
                    m.config_key
                )?;
                for warning in &m.warnings {
                    writeln!(f, "    warning: {warning}")?;
                }
            }
        }
        Ok(())
    }
}
