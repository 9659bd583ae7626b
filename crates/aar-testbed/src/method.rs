//! Transfer methods: how a student is trained from what an agent may see.
//!
//! **A method sees no gold label by construction**: [`MethodInputs`] holds the student's
//! features of `train_unlabel`, the weak teacher's soft labels on those rows, their group
//! ids and the student's own zero-shot prior, and nothing else. The ceiling, which does
//! train on gold labels, is not a method: it is built by [`crate::baselines`] alone.

use aar_engine::features::{
    FeatureHead, HeadConfig, HeadKind, HeadLoss, Matrix, train_head_on, train_weighted_head_on,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Result, TestbedError};
use crate::features::{pair_cosines, unit};
use crate::preset::HeadSpec;

/// Which method, with its own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodKind {
    /// Train on the weak teacher's hard labels (argmax of its soft labels).
    Vanilla,
    /// Train on the weak teacher's soft labels (cross-entropy against them).
    SoftLabels,
    /// The reference's logconf loss: weak soft labels mixed with the student's own
    /// thresholded predictions.
    Logconf {
        /// Final weight of the student's own predictions.
        #[serde(default = "default_aux_coef")]
        aux_coef: f64,
        /// Fraction of steps over which that weight rises from 0.
        #[serde(default = "default_warmup_frac")]
        warmup_frac: f64,
    },
    /// Drop rows whose weak confidence max(p) lies in `[low, high]`, train on the rest's
    /// hard labels.
    ConfidenceFilter {
        /// Lower bound of the dropped band.
        #[serde(default = "default_low")]
        low: f64,
        /// Upper bound of the dropped band.
        #[serde(default = "default_high")]
        high: f64,
    },
    /// No teacher: the student's zero-shot prior labels the rows, the consistency fix
    /// keeps one true choice per group, the majority label is downsampled to at most
    /// `imbalance_threshold` times the minority (keeping the most confident rows).
    ZeroShot {
        /// Largest allowed majority/minority ratio.
        #[serde(default = "default_imbalance")]
        imbalance_threshold: f64,
    },
}

fn default_aux_coef() -> f64 {
    0.5
}
fn default_warmup_frac() -> f64 {
    0.2
}
fn default_low() -> f64 {
    0.25
}
fn default_high() -> f64 {
    0.75
}
fn default_imbalance() -> f64 {
    1.1
}

/// A method description, as agents write it (`aar run-method --spec FILE`):
/// `{"method": "confidence_filter", "low": 0.3, "high": 0.7, "head": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    /// The method and its settings.
    #[serde(flatten)]
    pub kind: MethodKind,
    /// The student's head; the preset's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
}

impl MethodSpec {
    /// A method with the preset's head.
    pub fn new(kind: MethodKind) -> MethodSpec {
        MethodSpec { kind, head: None }
    }

    /// The baseline methods of the testbed, with their reference settings.
    pub fn baselines() -> Vec<MethodSpec> {
        vec![
            MethodSpec::new(MethodKind::Vanilla),
            MethodSpec::new(MethodKind::SoftLabels),
            MethodSpec::new(MethodKind::Logconf {
                aux_coef: default_aux_coef(),
                warmup_frac: default_warmup_frac(),
            }),
            MethodSpec::new(MethodKind::ConfidenceFilter {
                low: default_low(),
                high: default_high(),
            }),
            MethodSpec::new(MethodKind::ZeroShot {
                imbalance_threshold: default_imbalance(),
            }),
        ]
    }

    /// Whether the method reads the student's zero-shot prior.
    pub fn needs_prior(&self) -> bool {
        matches!(self.kind, MethodKind::ZeroShot { .. })
    }

    /// The `{dataset}_{idea}` idea name of the reference's result layout.
    pub fn idea_name(&self) -> &'static str {
        match self.kind {
            MethodKind::Vanilla => "vanilla_w2s",
            MethodKind::SoftLabels => "soft_labels",
            MethodKind::Logconf { .. } => "logconf",
            MethodKind::ConfidenceFilter { .. } => "train_only_on_confident_labels",
            MethodKind::ZeroShot { .. } => "ue_zeroshot",
        }
    }

    /// Extra config-key parts, sorted `k+v` as the reference writes them.
    pub fn key_extras(&self) -> String {
        match self.kind {
            MethodKind::Vanilla | MethodKind::SoftLabels => String::new(),
            MethodKind::Logconf {
                aux_coef,
                warmup_frac,
            } => format!("_aux_coef{aux_coef}_warmup_frac{warmup_frac}"),
            MethodKind::ConfidenceFilter { low, high } => {
                format!("_conf_high{high}_conf_low{low}")
            }
            MethodKind::ZeroShot {
                imbalance_threshold,
            } => format!("_imbalance{imbalance_threshold}"),
        }
    }

    /// Whether training this spec has a bounded cost, for code that runs agent-written
    /// specs outside a sandbox (the campaign's transfer-set scoring): an agent chooses the
    /// head's epochs and width. The error names the offending field.
    pub fn check_cost_bounds(&self) -> std::result::Result<(), String> {
        self.head
            .as_ref()
            .map_or(Ok(()), HeadSpec::check_cost_bounds)
    }

    /// Whether the method needs the weak teacher's labels.
    pub fn uses_teacher(&self) -> bool {
        !matches!(self.kind, MethodKind::ZeroShot { .. })
    }
}

/// Everything a method may see (the student's own view of the rows, features or prompts,
/// is given to whatever trains the student on the method's plan).
#[derive(Debug, Clone, Copy)]
pub struct MethodInputs<'a> {
    /// Number of `train_unlabel` rows.
    pub rows: usize,
    /// The weak teacher's `[p0, p1]` per `train_unlabel` row.
    pub weak_soft: &'a [[f32; 2]],
    /// Group (consistency) id per `train_unlabel` row.
    pub groups: &'a [String],
    /// The student's zero-shot `p(label 1)` per `train_unlabel` row, where it has one.
    pub prior: Option<&'a [f32]>,
}

/// A trained student and what its method recorded (rows kept, label balance, ...).
#[derive(Debug)]
pub struct Student {
    head: FeatureHead,
    /// Method statistics for the result file.
    pub stats: Map<String, Value>,
}

impl Student {
    /// `[p0, p1]` per feature row.
    pub fn predict(&self, features: &Matrix) -> Result<Vec<[f32; 2]>> {
        Ok(self.head.predict_matrix(features)?)
    }
}

/// The engine's head configuration for a head spec.
pub fn head_config(head: &HeadSpec, seed: u64, loss: HeadLoss) -> HeadConfig {
    HeadConfig {
        kind: if head.hidden > 0 {
            HeadKind::Mlp {
                hidden: head.hidden,
            }
        } else {
            HeadKind::Linear
        },
        epochs: head.epochs,
        batch_size: head.batch_size,
        learning_rate: head.learning_rate,
        weight_decay: head.weight_decay,
        l2: head.l2,
        seed,
        loss,
    }
}

/// One-hot of the larger probability (ties go to label 0).
pub fn hard(p: [f32; 2]) -> [f32; 2] {
    if p[1] > p[0] { [0.0, 1.0] } else { [1.0, 0.0] }
}

/// What a method trains its student on: rows of `train_unlabel`, their targets, the loss.
#[derive(Debug, Clone)]
pub struct TrainingPlan {
    /// Row indices into `train_unlabel`, ascending.
    pub indices: Vec<usize>,
    /// `[p0, p1]` target per kept row.
    pub targets: Vec<[f32; 2]>,
    /// The loss.
    pub loss: HeadLoss,
    /// A weight per kept row (`None`: all 1).
    pub weights: Option<Vec<f32>>,
    /// Method statistics for the result file.
    pub stats: Map<String, Value>,
}

/// Trains the student `spec` describes: a head on `train` (the student's features of
/// `train_unlabel`) fitted to the method's [`plan_training`].
pub fn train_student(
    spec: &MethodSpec,
    train: &Matrix,
    inputs: &MethodInputs<'_>,
    default_head: &HeadSpec,
    seed: u64,
) -> Result<Student> {
    if train.rows() != inputs.rows {
        return Err(TestbedError::BadMethod {
            method: spec.idea_name().into(),
            message: format!("{} feature rows for {} rows", train.rows(), inputs.rows),
        });
    }
    let plan = plan_training(spec, inputs)?;
    fit_plan(plan, train, &spec.head.unwrap_or(*default_head), seed)
}

/// Trains a head of `head`'s settings on the plan's rows of `train`, its targets, weights
/// and loss.
pub fn fit_plan(plan: TrainingPlan, train: &Matrix, head: &HeadSpec, seed: u64) -> Result<Student> {
    let features = train.select(&plan.indices)?;
    let config = head_config(head, seed, plan.loss);
    let head = match &plan.weights {
        None => train_head_on(&features, &plan.targets, &config)?,
        Some(weights) => train_weighted_head_on(&features, &plan.targets, weights, &config)?,
    };
    Ok(Student {
        head,
        stats: plan.stats,
    })
}

/// The rows, targets and loss `spec` trains a student on, from what a method may see.
pub fn plan_training(spec: &MethodSpec, inputs: &MethodInputs<'_>) -> Result<TrainingPlan> {
    let rows = inputs.rows;
    let bad = |message: String| TestbedError::BadMethod {
        method: spec.idea_name().into(),
        message,
    };
    if spec.uses_teacher() && inputs.weak_soft.len() != rows {
        return Err(bad(format!(
            "{} weak labels for {rows} train_unlabel rows",
            inputs.weak_soft.len()
        )));
    }
    let mut stats = Map::new();
    let (indices, targets, loss): (Vec<usize>, Vec<[f32; 2]>, HeadLoss) = match spec.kind {
        MethodKind::Vanilla => (
            (0..rows).collect(),
            inputs.weak_soft.iter().map(|p| hard(*p)).collect(),
            HeadLoss::CrossEntropy,
        ),
        MethodKind::SoftLabels => (
            (0..rows).collect(),
            inputs.weak_soft.to_vec(),
            HeadLoss::CrossEntropy,
        ),
        MethodKind::Logconf {
            aux_coef,
            warmup_frac,
        } => {
            if !(warmup_frac > 0.0 && (0.0..=1.0).contains(&aux_coef)) {
                return Err(bad("warmup_frac must be > 0 and aux_coef in [0, 1]".into()));
            }
            (
                (0..rows).collect(),
                inputs.weak_soft.to_vec(),
                HeadLoss::LogConf {
                    aux_coef,
                    warmup_frac,
                },
            )
        }
        MethodKind::ConfidenceFilter { low, high } => {
            let kept: Vec<usize> = (0..rows)
                .filter(|&i| {
                    let confidence = f64::from(inputs.weak_soft[i][0].max(inputs.weak_soft[i][1]));
                    !(low..=high).contains(&confidence)
                })
                .collect();
            stats.insert(
                "filter_stats".into(),
                json!({"kept": kept.len(), "total": rows,
                       "retention": kept.len() as f64 / rows.max(1) as f64}),
            );
            stats.insert("confidence_thresholds".into(), json!([low, high]));
            let targets = kept.iter().map(|&i| hard(inputs.weak_soft[i])).collect();
            (kept, targets, HeadLoss::CrossEntropy)
        }
        MethodKind::ZeroShot {
            imbalance_threshold,
        } => {
            let prior = inputs.prior.ok_or_else(|| {
                bad("the student has no zero-shot prior for this task (no verbalizers)".into())
            })?;
            if prior.len() != rows || inputs.groups.len() != rows {
                return Err(bad(format!(
                    "{} prior values and {} group ids for {rows} rows",
                    prior.len(),
                    inputs.groups.len()
                )));
            }
            let (kept, labels) = zero_shot_labels(prior, inputs.groups, imbalance_threshold);
            let ones = labels.iter().filter(|&&l| l).count();
            stats.insert(
                "labeling_logs".into(),
                json!({"kept": kept.len(), "total": rows, "label_one": ones}),
            );
            let targets = labels
                .iter()
                .map(|&l| if l { [0.0, 1.0] } else { [1.0, 0.0] })
                .collect();
            (kept, targets, HeadLoss::CrossEntropy)
        }
    };
    if indices.is_empty() {
        return Err(bad("no training rows left".into()));
    }
    Ok(TrainingPlan {
        indices,
        targets,
        loss,
        weights: None,
        stats,
    })
}

/// The zero-shot pipeline of the reference's `ue_zeroshot` on prior `p(label 1)` values:
/// label = prior > 0.5; within each group of several rows only the row with the highest
/// prior keeps label 1; then the majority label is downsampled to
/// `floor(minority * threshold)` rows, keeping the most confident. Returns the kept row
/// indices (ascending) and their labels.
pub fn zero_shot_labels(
    prior: &[f32],
    groups: &[String],
    imbalance_threshold: f64,
) -> (Vec<usize>, Vec<bool>) {
    let mut labels: Vec<bool> = prior.iter().map(|&p| p > 0.5).collect();
    let mut by_group: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, g) in groups.iter().enumerate() {
        by_group.entry(g.as_str()).or_default().push(i);
    }
    for members in by_group.values().filter(|m| m.len() > 1) {
        let best =
            members.iter().copied().fold(
                members[0],
                |best, i| {
                    if prior[i] > prior[best] { i } else { best }
                },
            );
        for &i in members {
            labels[i] = i == best;
        }
    }
    let confidence = |i: usize| if labels[i] { prior[i] } else { 1.0 - prior[i] };
    let (ones, zeros): (Vec<usize>, Vec<usize>) = (0..prior.len()).partition(|&i| labels[i]);
    let (minority, mut majority) = if ones.len() <= zeros.len() {
        (ones, zeros)
    } else {
        (zeros, ones)
    };
    let cap = ((minority.len() as f64 * imbalance_threshold) as usize).max(minority.len());
    if majority.len() > cap {
        majority.sort_by(|&a, &b| confidence(b).total_cmp(&confidence(a)).then(a.cmp(&b)));
        majority.truncate(cap);
    }
    let mut kept: Vec<usize> = minority.into_iter().chain(majority).collect();
    kept.sort_unstable();
    let kept_labels = kept.iter().map(|&i| labels[i]).collect();
    (kept, kept_labels)
}

/// The student's zero-shot prior from frozen features: each row's cosine similarity to the
/// label-1 description minus that to the label-0 description, as `sigmoid(scale * diff)`.
pub fn zero_shot_prior(features: &Matrix, verbalizers: &Matrix, scale: f32) -> Result<Vec<f32>> {
    if verbalizers.rows() != 2 || verbalizers.cols() != features.cols() {
        return Err(TestbedError::BadMethod {
            method: "ue_zeroshot".into(),
            message: format!(
                "verbalizer features are {}x{}, expected 2x{}",
                verbalizers.rows(),
                verbalizers.cols(),
                features.cols()
            ),
        });
    }
    let (v0, v1) = (unit(verbalizers.row(0)), unit(verbalizers.row(1)));
    Ok((0..features.rows())
        .map(|i| {
            let x = unit(features.row(i));
            let diff: f32 = x
                .iter()
                .zip(v1.iter().zip(&v0))
                .map(|(a, (b, c))| a * (b - c))
                .sum();
            1.0 / (1.0 + (-scale * diff).exp())
        })
        .collect())
}

/// The zero-shot prior of a pair learner: each row's cosine between its two texts minus the
/// median cosine over the rows, as `sigmoid(scale * diff)` (a cosine has no natural
/// threshold; within a group the consistency fix only compares rows anyway).
pub fn pair_prior(features: &Matrix, scale: f32) -> Result<Vec<f32>> {
    let cosines = pair_cosines(features)?;
    let mut sorted = cosines.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    Ok(cosines
        .iter()
        .map(|c| 1.0 / (1.0 + (-scale * (c - median)).exp()))
        .collect())
}
