//! An entry's PGR per split with an error that includes the test's own sampling
//! noise, and comparisons against vanilla and other entries (admin only).
//!
//! Each verification run keeps its predictions; the server scores them row by row
//! against its labels ([`CorrectRows`]) and hands them, with the pinned baselines'
//! per-row outcomes (`baselines.json`), to `aar_core::noise`. Bootstraps are seeded
//! by the entry ids, so a page shows the same number twice, and cached: an entry's
//! runs never change once stored.

use std::collections::HashMap;
use std::sync::Mutex;

use aar_core::Label;
use aar_core::metrics::{FixedBaselines, MeanSe};
use aar_core::noise::{
    CorrectRows, DEFAULT_RESAMPLES, PgrDifference, PgrEstimate, pgr_difference, pgr_estimate,
};
use aar_store::{EntryRecord, VerificationRun};
use serde::{Deserialize, Serialize};

use crate::tasks::TaskRegistry;
use crate::verify::{MAIN_VARIANT, split_accuracies};

/// The bootstrap seed of an entry's estimates: a fixed function of its id.
pub fn bootstrap_seed(entry_id: i64) -> u64 {
    // Any fixed mixing will do; this one keeps nearby ids' resamplings unrelated.
    (entry_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5_5A5A_0F0F_F0F0
}

/// The bootstrap seed of a comparison between two entries (order matters not).
pub(crate) fn pair_seed(a: i64, b: i64) -> u64 {
    bootstrap_seed(a.min(b)) ^ bootstrap_seed(a.max(b)).rotate_left(17)
}

/// Which rows of `labels` the predictions (0/1, file order) got right; `None` on a
/// length mismatch.
pub fn correct_rows(predictions: &[u8], labels: &[Label]) -> Option<CorrectRows> {
    let predicted: Vec<Label> = predictions.iter().map(|&p| Label::from(p == 1)).collect();
    CorrectRows::score(&predicted, labels).ok()
}

/// Per-row outcomes of the declared seeds' main runs on one split, in seed order;
/// `None` unless every declared seed has predictions of the split's length.
pub fn seed_rows(
    entry: &EntryRecord,
    runs: &[VerificationRun],
    split: &str,
    labels: &[Label],
) -> Option<Vec<CorrectRows>> {
    entry
        .seeds
        .iter()
        .map(|seed| {
            let run = runs.iter().find(|r| {
                r.entry_id == entry.id
                    && r.variant == MAIN_VARIANT
                    && r.split == split
                    && r.seed == *seed
            })?;
            correct_rows(run.predictions.as_deref()?, labels)
        })
        .collect()
}

/// PGR as the admin sees it: `se` includes the test's sampling noise when the split's
/// per-row outcomes are pinned (`se_test` is then set), else only the seeds' spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PgrView {
    /// PGR of the seed-mean accuracy.
    pub mean: f64,
    /// The error to quote: `sqrt(se_seeds^2 + se_test^2)`, or `se_seeds` alone.
    pub se: Option<f64>,
    /// Standard error over the declared seeds (`None` with one seed).
    pub se_seeds: Option<f64>,
    /// Bootstrap standard error over the test rows (`None`: no per-row outcomes).
    pub se_test: Option<f64>,
    /// Seeds.
    pub n: usize,
    /// Test rows the bootstrap resampled.
    pub rows: Option<usize>,
}

impl PgrView {
    /// From the core estimate.
    pub fn from_estimate(e: &PgrEstimate) -> PgrView {
        PgrView {
            mean: e.pgr,
            se: Some(e.se),
            se_seeds: e.se_seeds,
            se_test: Some(e.se_test),
            n: e.seeds,
            rows: Some(e.rows),
        }
    }

    /// Seeds' spread only (no per-row outcomes to resample).
    pub fn seeds_only(m: MeanSe) -> PgrView {
        PgrView {
            mean: m.mean,
            se: m.se,
            se_seeds: m.se,
            se_test: None,
            n: m.n,
            rows: None,
        }
    }
}

/// A comparison as the admin's JSON carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonView {
    /// What the entry is compared with: `vanilla`, a built-in method's name or
    /// `entry <id>`.
    pub against: String,
    /// `pgr(entry) - pgr(against)`, its error and whether it is significant.
    #[serde(flatten)]
    pub difference: PgrDifference,
    /// [`PgrDifference::describe`].
    pub describe: String,
}

impl ComparisonView {
    /// `difference` against what `against` names.
    pub fn new(against: String, difference: PgrDifference) -> ComparisonView {
        ComparisonView {
            against,
            describe: difference.describe(),
            difference,
        }
    }
}

/// One split of one entry, scored.
#[derive(Debug, Clone, Default)]
pub struct SplitScore {
    /// Per-row outcomes of the declared seeds, where every run kept its predictions.
    pub rows: Option<Vec<CorrectRows>>,
    /// PGR with its error.
    pub pgr: Option<PgrView>,
    /// Against vanilla transfer on the same split.
    pub vs_vanilla: Option<ComparisonView>,
    /// Against every other built-in method pinned with per-row outcomes, by name.
    pub vs_builtins: Vec<ComparisonView>,
}

/// What is cached: the bootstrap's results.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Estimate(i64, String),
    VsVanilla(i64, String),
    VsBuiltin(i64, String, String),
    VsEntry(i64, i64, String),
}

#[derive(Debug, Clone, Copy)]
enum Cached {
    Estimate(PgrEstimate),
    Difference(PgrDifference),
}

/// Bootstrap results by entry and split. An entry's runs are written once, in one
/// transaction, and the baselines are fixed while the server runs, so an answer
/// computed from complete runs never goes stale.
#[derive(Debug, Default)]
pub struct PgrCache {
    cached: Mutex<HashMap<Key, Cached>>,
}

impl PgrCache {
    fn get_or(&self, key: Key, compute: impl FnOnce() -> Option<Cached>) -> Option<Cached> {
        if let Some(hit) = self.lock().get(&key) {
            return Some(*hit);
        }
        let value = compute()?;
        self.lock().insert(key, value);
        Some(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        // A panic while holding the lock leaves a map of whole entries: keep using it.
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Scores one split of one entry: per-row outcomes, PGR (with test noise where the
/// baselines' rows are pinned, else over seeds) and the comparison with vanilla.
pub fn score_split(
    tasks: &TaskRegistry,
    cache: &PgrCache,
    entry: &EntryRecord,
    runs: &[VerificationRun],
    split: &str,
) -> SplitScore {
    let baselines = tasks.baselines(&entry.task, split);
    let rows = tasks
        .labels(&entry.task, split)
        .and_then(|labels| seed_rows(entry, runs, split, labels));
    let pinned = tasks.outcomes(&entry.task, split);
    let (Some(rows), Some(pinned), Some(_)) = (rows, pinned, baselines) else {
        return SplitScore {
            pgr: seeds_only(entry, runs, split, baselines),
            ..SplitScore::default()
        };
    };
    let seed = bootstrap_seed(entry.id);
    let estimate = cache.get_or(Key::Estimate(entry.id, split.to_owned()), || {
        pgr_estimate(&pinned.runs(), &rows, DEFAULT_RESAMPLES, seed)
            .ok()
            .map(Cached::Estimate)
    });
    let against = |key: Key, reference: &[CorrectRows], name: &str| {
        let found = cache.get_or(key, || {
            if reference.is_empty() {
                return None;
            }
            pgr_difference(&pinned.runs(), &rows, reference, DEFAULT_RESAMPLES, seed)
                .ok()
                .map(Cached::Difference)
        });
        match found {
            Some(Cached::Difference(d)) => Some(ComparisonView::new(name.to_owned(), d)),
            _ => None,
        }
    };
    let vs_vanilla = against(
        Key::VsVanilla(entry.id, split.to_owned()),
        &pinned.vanilla,
        "vanilla",
    );
    let vs_builtins = pinned
        .builtins
        .iter()
        .filter_map(|(method, reference)| {
            let key = Key::VsBuiltin(entry.id, method.clone(), split.to_owned());
            against(key, reference, method)
        })
        .collect();
    SplitScore {
        pgr: match estimate {
            Some(Cached::Estimate(e)) => Some(PgrView::from_estimate(&e)),
            _ => seeds_only(entry, runs, split, baselines),
        },
        vs_vanilla,
        vs_builtins,
        rows: Some(rows),
    }
}

fn seeds_only(
    entry: &EntryRecord,
    runs: &[VerificationRun],
    split: &str,
    baselines: Option<FixedBaselines>,
) -> Option<PgrView> {
    let values = split_accuracies(entry, runs, split)?;
    baselines?
        .pgr_over_seeds(&values)
        .ok()
        .map(PgrView::seeds_only)
}

/// `pgr(entry) - pgr(other)` on one split, from both entries' per-row outcomes.
pub fn compare_entries(
    tasks: &TaskRegistry,
    cache: &PgrCache,
    task: &str,
    split: &str,
    (entry, rows): (i64, &[CorrectRows]),
    (other, other_rows): (i64, &[CorrectRows]),
) -> Option<ComparisonView> {
    let pinned = tasks.outcomes(task, split)?;
    let key = Key::VsEntry(entry, other, split.to_owned());
    let found = cache.get_or(key, || {
        let seed = pair_seed(entry, other);
        pgr_difference(&pinned.runs(), rows, other_rows, DEFAULT_RESAMPLES, seed)
            .ok()
            .map(Cached::Difference)
    });
    match found {
        Some(Cached::Difference(d)) => Some(ComparisonView::new(format!("entry {other}"), d)),
        _ => None,
    }
}
