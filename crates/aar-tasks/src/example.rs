use aar_core::{Label, TaskFormat};
use serde_json::{Map, Value};

use crate::error::{RowProblem, json_type_name};
use crate::ids::IdKey;

/// Fields besides the format's inputs that an agent may see. Everything else
/// (the label, `subset`, `difficulty`, any field a future data set adds) stays
/// on the server. Group ids are inputs: consistency methods need them, and they
/// say which choices belong to one question, not which is right. All of them are
/// identifiers, so an agent sees each only as an opaque id ([`IdKey::opaque`]): source
/// ids reveal source order, and source order can carry labels.
pub const AGENT_EXTRA_FIELDS: &[&str] = &["id", "group_id", "consistency_id", "consistency_key"];

/// The input text of one example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    /// Which of two answers to a prompt is better.
    Comparison {
        /// The question or conversation.
        prompt: String,
        /// Answer A.
        first: String,
        /// Answer B.
        second: String,
    },
    /// Is a proposed answer to a question correct.
    Binary {
        /// The question.
        question: String,
        /// The proposed answer.
        choice: String,
    },
}

impl Inputs {
    /// The format these inputs belong to.
    pub fn format(&self) -> TaskFormat {
        match self {
            Inputs::Comparison { .. } => TaskFormat::Comparison,
            Inputs::Binary { .. } => TaskFormat::Binary,
        }
    }
}

/// One row of a task file: inputs, an optional label, and every other field kept as is.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The input text.
    pub inputs: Inputs,
    /// The gold label, where this copy of the data has one.
    pub label: Option<Label>,
    /// Fields beyond inputs and label (subset, group ids, ...), kept verbatim.
    pub extra: Map<String, Value>,
}

impl Example {
    /// The `subset` field, if present and a string.
    pub fn subset(&self) -> Option<&str> {
        self.extra.get("subset").and_then(Value::as_str)
    }

    /// Parses one JSON object; the format is detected from its fields.
    pub(crate) fn from_object(mut object: Map<String, Value>) -> Result<Example, RowProblem> {
        let has = |k: &str| object.contains_key(k);
        let format = match (
            has("prompt") || has("first") || has("second"),
            has("question") || has("choice"),
        ) {
            (true, true) => return Err(RowProblem::AmbiguousFormat),
            (true, false) => TaskFormat::Comparison,
            (false, true) => TaskFormat::Binary,
            (false, false) => return Err(RowProblem::UnknownFormat),
        };
        let inputs = match format {
            TaskFormat::Comparison => Inputs::Comparison {
                prompt: take_string(&mut object, "prompt")?,
                first: take_string(&mut object, "first")?,
                second: take_string(&mut object, "second")?,
            },
            TaskFormat::Binary => Inputs::Binary {
                question: take_string(&mut object, "question")?,
                choice: take_string(&mut object, "choice")?,
            },
        };
        let label = object
            .remove("label")
            .map(|value| parse_label(format, &value))
            .transpose()?;
        Ok(Example {
            inputs,
            label,
            extra: object,
        })
    }

    /// The row as a JSON object, label and extras included.
    pub fn to_object(&self) -> Map<String, Value> {
        let mut object = Map::new();
        match &self.inputs {
            Inputs::Comparison {
                prompt,
                first,
                second,
            } => {
                object.insert("prompt".into(), prompt.clone().into());
                object.insert("first".into(), first.clone().into());
                object.insert("second".into(), second.clone().into());
            }
            Inputs::Binary { question, choice } => {
                object.insert("question".into(), question.clone().into());
                object.insert("choice".into(), choice.clone().into());
            }
        }
        if let Some(label) = self.label {
            object.insert("label".into(), label_value(self.inputs.format(), label));
        }
        for (k, v) in &self.extra {
            object.insert(k.clone(), v.clone());
        }
        object
    }

    /// The copy an agent may see: inputs plus the allow-listed extra fields, each value
    /// replaced by its opaque id under `key`, no label.
    pub fn for_agents(&self, key: &IdKey) -> Example {
        let extra = self
            .extra
            .iter()
            .filter(|(k, _)| AGENT_EXTRA_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Value::String(key.opaque(k, v))))
            .collect();
        Example {
            inputs: self.inputs.clone(),
            label: None,
            extra,
        }
    }
}

fn take_string(object: &mut Map<String, Value>, field: &'static str) -> Result<String, RowProblem> {
    match object.remove(field) {
        None => Err(RowProblem::MissingField(field)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(RowProblem::WrongType {
            field: field.to_owned(),
            expected: "a string",
            found: json_type_name(&other),
        }),
    }
}

fn parse_label(format: TaskFormat, value: &Value) -> Result<Label, RowProblem> {
    match (format, value) {
        (TaskFormat::Comparison, Value::String(s)) => match s.as_str() {
            "A" => Ok(Label::Zero),
            "B" => Ok(Label::One),
            _ => Err(RowProblem::LabelOutOfDomain {
                expected: "\"A\" or \"B\"",
                found: value.to_string(),
            }),
        },
        (TaskFormat::Binary, Value::Bool(b)) => Ok(Label::from(*b)),
        (TaskFormat::Comparison, other) => Err(RowProblem::WrongType {
            field: "label".into(),
            expected: "\"A\" or \"B\"",
            found: json_type_name(other),
        }),
        (TaskFormat::Binary, other) => Err(RowProblem::WrongType {
            field: "label".into(),
            expected: "true or false",
            found: json_type_name(other),
        }),
    }
}

fn label_value(format: TaskFormat, label: Label) -> Value {
    match (format, label) {
        (TaskFormat::Comparison, Label::Zero) => "A".into(),
        (TaskFormat::Comparison, Label::One) => "B".into(),
        (TaskFormat::Binary, l) => Value::Bool(l == Label::One),
    }
}
