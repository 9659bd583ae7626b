//! Readers that turn each fetched source into [`Group`]s (one question, its
//! correct and incorrect candidates). Code sources are labeled by running them.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use super::{Group, Runner, SeededRng};
use crate::error::{AssetError, IoContext, Result};

fn bad(path: &Path, message: impl Into<String>) -> AssetError {
    AssetError::BadSource {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|source| AssetError::Json {
        path: path.to_owned(),
        source,
    })
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).at(path)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.at(path)?;
        if line.trim().is_empty() {
            continue;
        }
        rows.push(
            serde_json::from_str(&line).map_err(|e| bad(path, format!("line {}: {e}", i + 1)))?,
        );
    }
    Ok(rows)
}

fn str_field<'a>(row: &'a Value, field: &str, path: &Path) -> Result<&'a str> {
    row.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(path, format!("a row lacks the string field {field:?}")))
}

/// One BIG-bench multiple-choice row: the input, options scored 1, options scored 0.
type ScoredOptions = (String, Vec<String>, Vec<String>);

/// BIG-bench multiple-choice rows: `{input, target_scores{option: 0|1}}`.
fn bigbench_examples(path: &Path) -> Result<Vec<ScoredOptions>> {
    let doc = read_json(path)?;
    let examples = doc
        .get("examples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(path, "no examples"))?;
    examples
        .iter()
        .map(|e| {
            let input = str_field(e, "input", path)?.trim().to_owned();
            let scores = e
                .get("target_scores")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(path, "no target_scores"))?;
            let (mut positives, mut negatives) = (Vec::new(), Vec::new());
            for (option, score) in scores {
                if score.as_f64().unwrap_or(0.0) > 0.0 {
                    positives.push(option.trim().to_owned());
                } else {
                    negatives.push(option.trim().to_owned());
                }
            }
            Ok((input, positives, negatives))
        })
        .collect()
}

/// truthful_qa `questions.json`: each question's true and false answers.
pub fn truthful_qa_groups(path: &Path) -> Result<Vec<Group>> {
    let doc = read_json(path)?;
    let examples = doc
        .get("examples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(path, "no examples"))?;
    let strings = |e: &Value, field: &str| -> Vec<String> {
        e.get(field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(Group {
                id: format!("truthful_qa-{i:04}"),
                question: str_field(e, "Question", path)?.trim().to_owned(),
                positives: strings(e, "True answers"),
                negatives: strings(e, "False answers"),
                subset: format!(
                    "truthful_qa/{}",
                    e.get("Category")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                ),
                paired: false,
            })
        })
        .collect()
}

/// hhh_alignment: each of the four subtasks' (better, worse) reply pairs.
pub fn hhh_groups(dir: &Path) -> Result<Vec<Group>> {
    let mut groups = Vec::new();
    for subset in ["harmless", "helpful", "honest", "other"] {
        let path = dir.join(subset).join("task.json");
        for (i, (input, positives, negatives)) in bigbench_examples(&path)?.into_iter().enumerate()
        {
            groups.push(Group {
                id: format!("hhh-{subset}-{i:03}"),
                question: input,
                positives,
                negatives,
                subset: format!("hhh_alignment/{subset}"),
                paired: true,
            });
        }
    }
    Ok(groups)
}

/// elementary_math_qa (MathQA): the correct option and the wrong ones.
pub fn mathqa_groups(path: &Path) -> Result<Vec<Group>> {
    Ok(bigbench_examples(path)?
        .into_iter()
        .enumerate()
        .map(|(i, (question, positives, negatives))| Group {
            id: format!("mathqa-{i:05}"),
            question,
            positives,
            negatives,
            subset: "elementary_math_qa".into(),
            paired: false,
        })
        .collect())
}

/// GSM8K test: the final answer (after `####`) and a seeded perturbation of it.
pub fn gsm8k_groups(path: &Path, seed: u64) -> Result<Vec<Group>> {
    let mut rng = SeededRng::new(seed, "gsm8k-perturb");
    let mut groups = Vec::new();
    for (i, row) in read_jsonl(path)?.iter().enumerate() {
        let answer = str_field(row, "answer", path)?;
        let Some(final_answer) = answer
            .rsplit("####")
            .next()
            .map(|s| s.trim().replace(',', ""))
        else {
            continue;
        };
        let Ok(value) = final_answer.parse::<i64>() else {
            continue; // non-integer finals are rare; skip rather than guess a format
        };
        groups.push(Group {
            id: format!("gsm8k-{i:04}"),
            question: str_field(row, "question", path)?.trim().to_owned(),
            positives: vec![value.to_string()],
            negatives: vec![perturb_integer(value, &mut rng).to_string()],
            subset: "gsm8k".into(),
            paired: false,
        });
    }
    Ok(groups)
}

/// A plausible wrong answer: off by a small amount, doubled or halved; never the value itself.
pub fn perturb_integer(value: i64, rng: &mut SeededRng) -> i64 {
    loop {
        let candidate = match rng.below(4) {
            0 => value + 1 + rng.below(10) as i64,
            1 => value - 1 - rng.below(10) as i64,
            2 => value * 2,
            _ => value / 2,
        };
        if candidate != value && (value < 0 || candidate >= 0) {
            return candidate;
        }
    }
}

/// Runs a CodeI/O program on two generated inputs (and the first again) and prints JSON.
const CODEIO_HARNESS: &str = r#"
import json, random, sys
spec = json.load(sys.stdin)
def fresh_seed():
    random.seed(0)
    try:
        import numpy
        numpy.random.seed(0)
    except Exception:
        pass
program = {}
exec(spec["code"], program)
generator = {"Random": random.Random}
exec("from random import Random\n" + spec["generator"], generator)
rng = random.Random(spec["seed"])
inputs = [generator["generate_inputs"](rng) for _ in range(2)]
outputs = []
for inp in [inputs[0], inputs[1], inputs[0]]:
    fresh_seed()
    outputs.append(json.dumps(program["main_solution"](**inp), sort_keys=True))
print(json.dumps({"input": json.dumps(inputs[0], sort_keys=True), "outputs": outputs}))
"#;

/// CodeI/O programs, in a seeded order, until `want` groups: question = program and
/// input, correct claim = the output of running it, incorrect claim = the output
/// for another generated input. The program runs again on the first input and the
/// claims are labeled by comparing with that run; programs that fail, time out,
/// are not deterministic, or give one output for both inputs are left out.
pub fn codeio_groups(path: &Path, runner: &Runner, seed: u64, want: usize) -> Result<Vec<Group>> {
    let rows = &read_jsonl(path)?;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    SeededRng::new(seed, "codeio-order").shuffle(&mut order);
    let mut groups = Vec::new();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    for batch in order.chunks(workers * 4) {
        if groups.len() >= want {
            break;
        }
        // Run a batch in parallel; results are taken in order, so the pack stays deterministic.
        let results: Vec<Result<Option<Group>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .chunks(4)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&i| codeio_group(&rows[i], i, runner, seed, path))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec![Err(AssetError::Runner("worker panicked".into()))])
                })
                .collect()
        });
        for result in results {
            if let Some(group) = result?
                && groups.len() < want
            {
                groups.push(group);
            }
        }
    }
    tracing::info!(groups = groups.len(), "CodeI/O programs labeled by running");
    Ok(groups)
}

fn codeio_group(
    row: &Value,
    index: usize,
    runner: &Runner,
    seed: u64,
    path: &Path,
) -> Result<Option<Group>> {
    let code = str_field(row, "code_sample", path)?;
    let spec = serde_json::json!({
        "code": code,
        "generator": str_field(row, "input_generator", path)?,
        "seed": seed.wrapping_add(index as u64) % (1 << 31),
    });
    let run = runner.run(CODEIO_HARNESS, &spec.to_string())?;
    if !run.success {
        return Ok(None);
    }
    let Ok(result) = serde_json::from_str::<Value>(run.stdout.trim()) else {
        return Ok(None);
    };
    let input = result
        .get("input")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let outputs: Vec<&str> = result
        .get("outputs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let [first, other, verified] = outputs[..] else {
        return Ok(None);
    };
    // Short claims only: the question must fit a small model's context.
    if first != verified
        || first == other
        || input.len() > 1000
        || first.len() > 300
        || other.len() > 300
    {
        return Ok(None);
    }
    let claims = [first, other];
    let (positives, negatives): (Vec<&str>, Vec<&str>) =
        claims.iter().partition(|claim| **claim == verified);
    Ok(Some(Group {
        id: format!("codeio-{index:04}"),
        question: format!(
            "What does this program return for the input below?\n\n```python\n{}\n```\n\nInput: {input}",
            code.trim_end()
        ),
        positives: positives.into_iter().map(String::from).collect(),
        negatives: negatives.into_iter().map(String::from).collect(),
        subset: "codeio".into(),
        paired: false,
    }))
}

/// Text mutations tried on HumanEval's canonical solutions, in seeded order.
const MUTATIONS: &[(&str, &str)] = &[
    ("<=", "<"),
    (">=", ">"),
    (" < ", " <= "),
    (" > ", " >= "),
    ("==", "!="),
    ("!=", "=="),
    (" + 1", " + 2"),
    (" - 1", " - 2"),
    (" + ", " - "),
    (" - ", " + "),
    ("True", "False"),
    ("False", "True"),
    (" and ", " or "),
    (" or ", " and "),
    ("[1:]", "[2:]"),
    ("[::-1]", ""),
    ("(0)", "(1)"),
    (" 0", " 1"),
    ("return ", "return not "),
];

/// HumanEval problems, in a seeded order, until `want` groups: the canonical
/// solution and one mutant, each labeled by running the problem's tests. A problem
/// whose canonical solution fails, or for which no tried mutant fails, is left out.
pub fn human_eval_groups(
    path: &Path,
    runner: &Runner,
    seed: u64,
    want: usize,
) -> Result<Vec<Group>> {
    let rows = read_jsonl(path)?;
    let mut rng = SeededRng::new(seed, "human-eval");
    let mut order: Vec<usize> = (0..rows.len()).collect();
    rng.shuffle(&mut order);
    let mut groups = Vec::new();
    for i in order {
        if groups.len() >= want {
            break;
        }
        let row = &rows[i];
        let prompt = str_field(row, "prompt", path)?;
        let canonical = str_field(row, "canonical_solution", path)?;
        let test = str_field(row, "test", path)?;
        let entry_point = str_field(row, "entry_point", path)?;
        let passes = |solution: &str| -> Result<bool> {
            let program = format!("{prompt}{solution}\n\n{test}\n\ncheck({entry_point})\n");
            Ok(runner.run(&program, "")?.success)
        };
        if !passes(canonical)? {
            continue;
        }
        let mut mutations: Vec<&(&str, &str)> = MUTATIONS
            .iter()
            .filter(|(from, _)| canonical.contains(from))
            .collect();
        rng.shuffle(&mut mutations);
        let mut negative = None;
        for (from, to) in mutations.into_iter().take(6) {
            let mutant = canonical.replacen(from, to, 1);
            if !passes(&mutant)? {
                negative = Some(mutant);
                break;
            }
        }
        let Some(negative) = negative else { continue };
        groups.push(Group {
            id: format!("humaneval-{i:03}"),
            question: prompt.to_owned(),
            positives: vec![canonical.to_owned()],
            negatives: vec![negative],
            subset: "humaneval".into(),
            paired: false,
        });
    }
    tracing::info!(
        groups = groups.len(),
        "HumanEval problems labeled by running their tests"
    );
    Ok(groups)
}
