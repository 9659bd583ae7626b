use serde::{Deserialize, Serialize};

/// A class index in a two-way task, as the reference encodes it.
///
/// Comparison tasks: `Zero` means the first answer ("A") is better. Binary tasks:
/// `One` means the proposed answer is correct ("True").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Label {
    /// Class 0: "A" (comparison) or "False" (binary).
    Zero,
    /// Class 1: "B" (comparison) or "True" (binary).
    One,
}

impl Label {
    /// The class index, 0 or 1.
    pub fn index(self) -> usize {
        match self {
            Label::Zero => 0,
            Label::One => 1,
        }
    }

    /// The other class.
    pub fn flipped(self) -> Label {
        match self {
            Label::Zero => Label::One,
            Label::One => Label::Zero,
        }
    }
}

impl From<Label> for u8 {
    fn from(label: Label) -> u8 {
        label.index() as u8
    }
}

impl TryFrom<u8> for Label {
    type Error = String;
    fn try_from(value: u8) -> Result<Label, String> {
        match value {
            0 => Ok(Label::Zero),
            1 => Ok(Label::One),
            other => Err(format!("a label is 0 or 1, got {other}")),
        }
    }
}

impl From<bool> for Label {
    fn from(value: bool) -> Label {
        if value { Label::One } else { Label::Zero }
    }
}

/// The two row formats of the reference's task files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFormat {
    /// `prompt`, `first`, `second`; label "A" or "B" (which answer is better).
    Comparison,
    /// `question`, `choice`; label true or false (is the proposed answer correct).
    Binary,
}

impl TaskFormat {
    /// The fields every row of this format must carry as strings.
    pub fn input_fields(self) -> &'static [&'static str] {
        match self {
            TaskFormat::Comparison => &["prompt", "first", "second"],
            TaskFormat::Binary => &["question", "choice"],
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            TaskFormat::Comparison => "comparison",
            TaskFormat::Binary => "binary",
        }
    }
}

impl std::fmt::Display for TaskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
