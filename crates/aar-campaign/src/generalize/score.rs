//! Scoring the gate's runs against each target's labels and baselines, and the report:
//! `generalization.json` and the Markdown section (also what `aar generalize` prints).

use aar_core::metrics::{FixedBaselines, MeanSe};
use aar_core::noise::{
    CorrectRows, DEFAULT_RESAMPLES, PgrDifference, PgrEstimate, PgrRuns, SIGNIFICANCE_Z,
    pgr_difference, pgr_estimate,
};
use aar_core::text::markdown_cell;
use aar_testbed::SplitOutcomes;
use serde::{Deserialize, Serialize};

use super::targets::{SCORED_SPLIT, Target, TargetGroup};

/// Fixes the bootstrap's resampling (the testbed's table uses the same), so a report is
/// reproducible and vanilla's PGR here is the table's.
pub const BOOTSTRAP_SEED: u64 = 0;

/// The testbed's name of vanilla transfer.
const VANILLA: &str = "vanilla_w2s";

/// A PGR with its error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GatePgr {
    /// PGR of the seed-mean accuracy against the target's W and S.
    pub pgr: f64,
    /// The error to quote: seeds and test rows in quadrature, or seeds only.
    pub se: Option<f64>,
    /// Over the method's seeds.
    pub se_seeds: Option<f64>,
    /// Over the split's rows (paired bootstrap); `None` when seeds only.
    pub se_test: Option<f64>,
    /// Seeds it is over.
    pub seeds: usize,
    /// The error leaves out test noise (the baselines' result files hold no per-row
    /// outcomes).
    pub seeds_only: bool,
}

impl GatePgr {
    fn from_estimate(e: PgrEstimate) -> GatePgr {
        GatePgr {
            pgr: e.pgr,
            se: Some(e.se),
            se_seeds: e.se_seeds,
            se_test: Some(e.se_test),
            seeds: e.seeds,
            seeds_only: false,
        }
    }

    fn from_seeds(m: MeanSe) -> GatePgr {
        GatePgr {
            pgr: m.mean,
            se: m.se,
            se_seeds: m.se,
            se_test: None,
            seeds: m.n,
            seeds_only: true,
        }
    }

    /// `0.412 +- 0.080` (`^` when the error is the seeds' only).
    pub fn cell(&self) -> String {
        let mark = if self.seeds_only { "^" } else { "" };
        match self.se {
            Some(se) => format!("{:.3} +- {se:.3}{mark}", self.pgr),
            None => format!("{:.3}{mark}", self.pgr),
        }
    }
}

/// One declared seed's run on a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedScore {
    /// The seed.
    pub seed: i64,
    /// Accuracy on the scored split.
    pub accuracy: Option<f64>,
    /// Why the run gave no valid predictions.
    pub error: Option<String>,
}

/// One entry on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    /// The target's key.
    pub target: String,
    /// `own_task`, `other_task`, `held_out` or `second_pair`.
    pub kind: String,
    /// Per declared seed.
    pub seeds: Vec<SeedScore>,
    /// The entry's PGR (over the seeds that ran).
    pub pgr: Option<GatePgr>,
    /// Vanilla transfer's PGR on the same target (the testbed's pinned seeds).
    pub vanilla: Option<GatePgr>,
    /// Entry minus vanilla.
    pub vs_vanilla: Option<PgrDifference>,
    /// Why there is no PGR.
    pub note: Option<String>,
}

/// A target as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Its key.
    pub key: String,
    /// Served, held out or second pair.
    pub group: TargetGroup,
    /// The task.
    pub task: String,
    /// The (derived) preset whose testbed built it.
    pub preset: String,
    /// W and S means on the scored split.
    pub weak: Option<f64>,
    /// See `weak`.
    pub ceiling: Option<f64>,
    /// Why nothing runs there.
    pub skipped: Option<String>,
}

impl TargetInfo {
    pub(super) fn of(target: &Target) -> TargetInfo {
        TargetInfo {
            key: target.key.clone(),
            group: target.group,
            task: target.task.clone(),
            preset: target.preset.clone(),
            weak: target.baselines.map(|b| b.0),
            ceiling: target.baselines.map(|b| b.1),
            skipped: target.skipped(),
        }
    }
}

/// One entry's generalization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryGeneralization {
    /// Entry id.
    pub entry_id: i64,
    /// Its author.
    pub researcher: String,
    /// The method's name.
    pub method: String,
    /// The task it was entered on.
    pub task: String,
    /// Declared seeds.
    pub seeds: Vec<i64>,
    /// Private-test PGR from its verification (what picked it).
    pub private_pgr: Option<f64>,
    /// Per target, in the report's target order.
    pub results: Vec<TargetResult>,
    /// Mean PGR over every target with one; its error treats targets as independent.
    pub mean_pgr: Option<GatePgr>,
    /// Targets the mean is over.
    pub mean_over: usize,
}

/// What the gate found: `generalization.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generalization {
    /// The main preset.
    pub preset: String,
    /// The split every target is scored on.
    pub split: String,
    /// Every target.
    pub targets: Vec<TargetInfo>,
    /// Entries ranked by mean PGR across targets (best first).
    pub entries: Vec<EntryGeneralization>,
}

/// The outcomes one target's PGRs are computed from.
pub(super) struct TargetBaselines<'a> {
    target: &'a Target,
}

impl<'a> TargetBaselines<'a> {
    pub(super) fn new(target: &'a Target) -> TargetBaselines<'a> {
        TargetBaselines { target }
    }

    fn table_task(&self) -> Option<&aar_testbed::report::TaskTable> {
        let task = &self.target.task;
        self.target.table.tasks.iter().find(|t| &t.task == task)
    }

    /// Vanilla's PGR as the testbed's table has it (where its rows are missing).
    fn table_vanilla(&self) -> Option<GatePgr> {
        let score = self.table_task()?.method(VANILLA)?.split(SCORED_SPLIT)?;
        match (score.estimate, score.pgr) {
            (Some(estimate), _) => Some(GatePgr::from_estimate(estimate)),
            (None, Some(pgr)) => Some(GatePgr::from_seeds(pgr)),
            (None, None) => None,
        }
    }

    /// Per-row outcomes of W, S and vanilla on the scored split, when every result file
    /// of the target's baselines holds them.
    fn baseline_rows(&self) -> Option<&'a SplitOutcomes> {
        self.target.table.outcomes(&self.target.task, SCORED_SPLIT)
    }

    /// The entry's PGR, vanilla's and their difference from the entry's per-seed rows
    /// (with test noise) or, where the baselines' result files hold no per-row outcomes
    /// (an old cache), from mean accuracies with the seeds' errors only (marked `^`).
    pub(super) fn score(
        &self,
        kind: &str,
        seeds: Vec<SeedScore>,
        rows: &[CorrectRows],
    ) -> TargetResult {
        let mut result = TargetResult {
            target: self.target.key.clone(),
            kind: kind.to_owned(),
            seeds,
            pgr: None,
            vanilla: None,
            vs_vanilla: None,
            note: None,
        };
        if let Some(why) = self.target.skipped() {
            result.note = Some(why);
            return result;
        }
        if rows.is_empty() {
            result.note = Some("no seed gave valid predictions".into());
            return result;
        }
        match self.baseline_rows() {
            Some(b) => self.score_rows(&mut result, b, rows),
            None => self.score_means(&mut result, rows),
        }
        result
    }

    fn score_rows(&self, result: &mut TargetResult, b: &SplitOutcomes, rows: &[CorrectRows]) {
        let runs = PgrRuns {
            weak: &b.weak,
            ceiling: &b.ceiling,
        };
        let vanilla = &b.vanilla;
        match pgr_estimate(&runs, rows, DEFAULT_RESAMPLES, BOOTSTRAP_SEED) {
            Ok(e) => result.pgr = Some(GatePgr::from_estimate(e)),
            Err(e) => result.note = Some(format!("no PGR: {e}")),
        }
        if vanilla.is_empty() {
            result.vanilla = self.table_vanilla();
            return;
        }
        result.vanilla = pgr_estimate(&runs, vanilla, DEFAULT_RESAMPLES, BOOTSTRAP_SEED)
            .ok()
            .map(GatePgr::from_estimate);
        result.vs_vanilla =
            pgr_difference(&runs, rows, vanilla, DEFAULT_RESAMPLES, BOOTSTRAP_SEED).ok();
    }

    fn score_means(&self, result: &mut TargetResult, rows: &[CorrectRows]) {
        let Some((weak, ceiling)) = self.table_task().and_then(|t| t.baseline(SCORED_SPLIT)) else {
            result.note = Some(format!("no {SCORED_SPLIT} baselines"));
            return;
        };
        let accuracies: Vec<f64> = rows.iter().map(CorrectRows::accuracy).collect();
        match (FixedBaselines { weak, ceiling }).pgr_over_seeds(&accuracies) {
            Ok(m) => result.pgr = Some(GatePgr::from_seeds(m)),
            Err(e) => result.note = Some(format!("no PGR: {e}")),
        }
        result.vanilla = self.table_vanilla();
        result.vs_vanilla = match (result.pgr, result.vanilla) {
            (Some(a), Some(b)) => Some(seeds_only_difference(a, b)),
            _ => None,
        };
    }
}

/// `a - b` with the seeds' errors in quadrature: all there is without per-row outcomes.
fn seeds_only_difference(a: GatePgr, b: GatePgr) -> PgrDifference {
    let difference = a.pgr - b.pgr;
    let se = (a.se.unwrap_or(0.0).powi(2) + b.se.unwrap_or(0.0).powi(2)).sqrt();
    PgrDifference {
        difference,
        se,
        significant: difference.abs() > SIGNIFICANCE_Z * se,
    }
}

/// The mean over targets with a PGR; its error is `sqrt(sum se^2) / n` (targets are
/// different tasks and pairs: independent runs on independent rows).
pub(super) fn mean_over_targets(results: &[TargetResult]) -> (Option<GatePgr>, usize) {
    let pgrs: Vec<GatePgr> = results.iter().filter_map(|r| r.pgr).collect();
    if pgrs.is_empty() {
        return (None, 0);
    }
    let n = pgrs.len() as f64;
    let variance: f64 = pgrs.iter().map(|p| p.se.unwrap_or(0.0).powi(2)).sum();
    let mean = GatePgr {
        pgr: pgrs.iter().map(|p| p.pgr).sum::<f64>() / n,
        se: Some(variance.sqrt() / n),
        se_seeds: None,
        se_test: None,
        seeds: pgrs.iter().map(|p| p.seeds).min().unwrap_or(0),
        seeds_only: pgrs.iter().any(|p| p.seeds_only),
    };
    (Some(mean), pgrs.len())
}

/// Best mean PGR first; entries without one last, by id.
pub(super) fn rank(entries: &mut [EntryGeneralization]) {
    entries.sort_by(|a, b| {
        let key = |e: &EntryGeneralization| e.mean_pgr.map(|m| m.pgr);
        match (key(a), key(b)) {
            (Some(x), Some(y)) => y.total_cmp(&x).then(a.entry_id.cmp(&b.entry_id)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.entry_id.cmp(&b.entry_id),
        }
    });
}

fn group_name(group: TargetGroup) -> &'static str {
    match group {
        TargetGroup::Served => "served task",
        TargetGroup::HeldOut => "held-out task",
        TargetGroup::SecondPair => "second model pair",
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

impl Generalization {
    /// The report's "Generalization" section (Markdown; agent text escaped).
    pub fn markdown(&self) -> String {
        let mut out = String::from("## Generalization\n\n");
        out += &format!(
            "The verifier re-ran each entry's method, every declared seed in a fresh sandbox, on \
             every served task of preset `{}`, its held-out tasks (never served) and its tasks \
             under a second model pair, each scored on `{}` against that target's own W and S. \
             PGR +- error (seeds and the test rows' noise; `^`: seeds only), vanilla transfer \
             beside it, and entry minus vanilla (paired bootstrap). The ranking that counts is \
             the mean PGR across all targets.\n\n",
            markdown_cell(&self.preset),
            self.split
        );
        out += &self.targets_table();
        out += &self.ranking_table();
        for entry in &self.entries {
            out += &self.entry_table(entry);
        }
        out
    }

    fn targets_table(&self) -> String {
        let mut out = String::from(
            "| target | kind | task | preset | W | S | note |\n|---|---|---|---|---|---|---|\n",
        );
        for t in &self.targets {
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                markdown_cell(&t.key),
                group_name(t.group),
                markdown_cell(&t.task),
                markdown_cell(&t.preset),
                opt(t.weak),
                opt(t.ceiling),
                markdown_cell(t.skipped.as_deref().unwrap_or("-")),
            );
        }
        out + "\n"
    }

    fn ranking_table(&self) -> String {
        let mut out = String::from(
            "| rank | entry | researcher | method | entered on | private PGR (verifier) | mean PGR across targets | targets |\n|---|---|---|---|---|---|---|---|\n",
        );
        for (i, e) in self.entries.iter().enumerate() {
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                i + 1,
                e.entry_id,
                markdown_cell(&e.researcher),
                markdown_cell(&e.method),
                markdown_cell(&e.task),
                opt(e.private_pgr),
                e.mean_pgr.map_or_else(|| "-".into(), |m| m.cell()),
                e.mean_over,
            );
        }
        out + "\n"
    }

    fn entry_table(&self, e: &EntryGeneralization) -> String {
        let mut out = format!(
            "### Entry {}: {} ({}, entered on {}, seeds {:?})\n\n",
            e.entry_id,
            markdown_cell(&e.method),
            markdown_cell(&e.researcher),
            markdown_cell(&e.task),
            e.seeds
        );
        out += "| target | kind | PGR | vanilla PGR | entry - vanilla | seeds run |\n|---|---|---|---|---|---|\n";
        for r in &e.results {
            let ran = r.seeds.iter().filter(|s| s.accuracy.is_some()).count();
            let pgr = match (&r.pgr, &r.note) {
                (Some(p), _) => p.cell(),
                (None, Some(note)) => format!("n/a ({note})"),
                (None, None) => "-".into(),
            };
            out += &format!(
                "| {} | {} | {} | {} | {} | {ran}/{} |\n",
                markdown_cell(&r.target),
                r.kind.replace('_', " "),
                markdown_cell(&pgr),
                r.vanilla.map_or_else(|| "-".into(), |v| v.cell()),
                r.vs_vanilla.map_or_else(|| "-".into(), |d| d.describe()),
                r.seeds.len(),
            );
        }
        out + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pgr(value: f64, se: f64) -> GatePgr {
        GatePgr {
            pgr: value,
            se: Some(se),
            se_seeds: None,
            se_test: Some(se),
            seeds: 3,
            seeds_only: false,
        }
    }

    fn result(p: Option<GatePgr>) -> TargetResult {
        TargetResult {
            target: "t".into(),
            kind: "held_out".into(),
            seeds: Vec::new(),
            pgr: p,
            vanilla: None,
            vs_vanilla: None,
            note: None,
        }
    }

    #[test]
    fn row_outcomes_give_the_entry_vanilla_and_their_difference_against_the_targets_w_and_s() {
        let rows = |right: usize| CorrectRows::new((0..100).map(|i| i < right).collect());
        let target = Target {
            key: "heldout.fever".into(),
            task: "fever".into(),
            preset: "tiny-heldout".into(),
            group: TargetGroup::HeldOut,
            labeled: "/nowhere".into(),
            agent_copy: "/nowhere".into(),
            table: std::sync::Arc::new(aar_testbed::BaselineTable { tasks: Vec::new() }),
            baselines: Some((0.5, 0.9)),
        };
        let baselines = SplitOutcomes {
            weak: vec![rows(50)],
            ceiling: vec![rows(90)],
            vanilla: vec![rows(60)],
            methods: Default::default(),
        };
        let mut result = result(None);
        let scorer = TargetBaselines::new(&target);
        scorer.score_rows(&mut result, &baselines, &[rows(70), rows(70)]);
        // By hand: (0.7 - 0.5) / 0.4 = 0.5, vanilla (0.6 - 0.5) / 0.4 = 0.25.
        let pgr = result.pgr.unwrap();
        assert!((pgr.pgr - 0.5).abs() < 1e-12, "{pgr:?}");
        assert!(!pgr.seeds_only && pgr.se_test.unwrap() > 0.0);
        assert!((result.vanilla.unwrap().pgr - 0.25).abs() < 1e-12);
        let difference = result.vs_vanilla.unwrap();
        assert!((difference.difference - 0.25).abs() < 1e-12);
    }

    #[test]
    fn the_mean_over_targets_averages_pgrs_and_adds_errors_in_quadrature() {
        let results = [
            result(Some(pgr(0.2, 0.3))),
            result(None),
            result(Some(pgr(0.6, 0.4))),
        ];
        let (mean, n) = mean_over_targets(&results);
        let mean = mean.unwrap();
        assert_eq!(n, 2);
        // (0.2 + 0.6) / 2 and sqrt(0.09 + 0.16) / 2 = 0.25 by hand.
        assert!((mean.pgr - 0.4).abs() < 1e-12);
        assert!((mean.se.unwrap() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn entries_rank_by_mean_pgr_and_those_without_one_come_last() {
        let entry = |id: i64, mean: Option<f64>| EntryGeneralization {
            entry_id: id,
            researcher: "r".into(),
            method: "m".into(),
            task: "t".into(),
            seeds: vec![0],
            private_pgr: None,
            results: Vec::new(),
            mean_pgr: mean.map(|m| pgr(m, 0.1)),
            mean_over: 1,
        };
        let mut entries = vec![entry(1, None), entry(2, Some(0.1)), entry(3, Some(0.5))];
        rank(&mut entries);
        let ids: Vec<i64> = entries.iter().map(|e| e.entry_id).collect();
        assert_eq!(ids, [3, 2, 1]);
    }

    #[test]
    fn a_seeds_only_difference_is_significant_only_beyond_both_errors() {
        let d = seeds_only_difference(pgr(0.5, 0.03), pgr(0.3, 0.04));
        assert!((d.difference - 0.2).abs() < 1e-12);
        assert!((d.se - 0.05).abs() < 1e-12);
        assert!(d.significant);
        assert!(!seeds_only_difference(pgr(0.35, 0.03), pgr(0.3, 0.04)).significant);
    }
}
