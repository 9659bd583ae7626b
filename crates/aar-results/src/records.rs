use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A weak teacher's per-seed artifact: its test accuracy and its soft labels on `train_unlabel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeakArtifactRecord {
    /// Weak teacher accuracy on the test split.
    pub weak_acc: f64,
    /// `[p(label 0), p(label 1)]` for every `train_unlabel` row.
    #[serde(default)]
    pub soft_labels: Vec<[f64; 2]>,
    /// Accuracy of argmax(soft_labels) on `train_unlabel`.
    #[serde(default)]
    pub hard_label_acc: Option<f64>,
    /// The seed, where the file records it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A ceiling run: the strong model trained on gold labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CeilingRecord {
    /// Test accuracy (`strong_gt_acc` in some reference files).
    #[serde(alias = "strong_gt_acc")]
    pub strong_acc: f64,
    /// The seed, where the file records it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A transfer run of a method: the strong student trained on weak supervision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// Test accuracy of the student.
    pub transfer_acc: f64,
    /// The method's name as the file records it.
    #[serde(default)]
    pub idea_name: Option<String>,
    /// The seed, where the file records it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Every other field, kept verbatim (the PGR a file reports is not trusted:
    /// PGR is recomputed from fixed baselines).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
