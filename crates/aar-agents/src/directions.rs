//! Built-in starting directions: one per agent, vague on purpose. They cover
//! the themes of the reference's idea list; none prescribes a workflow.

/// A starting direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// Short name (used in file names and reports).
    pub name: &'static str,
    /// The direction as the agent reads it.
    pub text: &'static str,
}

/// The built-in list.
pub const DIRECTIONS: &[Direction] = &[
    Direction {
        name: "unsupervised-elicitation",
        text: "Consider whether the strong model already knows the answers without being told: \
               ways to elicit its latent knowledge without labels (consistency across paraphrases \
               or negations, confidence, agreement between prompts), and how that can correct or \
               replace the weak labels.",
    },
    Direction {
        name: "data-reweighting",
        text: "Consider which weak labels deserve trust: reweighting or filtering training \
               examples by the teacher's confidence, the student's agreement, or other signals, \
               and how the weights change during training.",
    },
    Direction {
        name: "noisy-channel",
        text: "Consider treating the weak labels as a noisy channel over the truth: estimating the \
               teacher's error structure and training the student on posteriors instead of the \
               raw labels.",
    },
    Direction {
        name: "distillation",
        text: "Consider the tricks of distillation: soft targets, temperature, auxiliary \
               confidence losses, early stopping, and letting the student disagree with its \
               teacher where it is confident.",
    },
    Direction {
        name: "simplicity-bias",
        text: "Consider the student's inductive biases: which simple functions of its features \
               explain the labels, and whether restricting capacity or regularising towards \
               simple solutions keeps it from imitating the teacher's mistakes.",
    },
    Direction {
        name: "data-selection",
        text: "Consider which unlabeled examples to train on at all: selecting by difficulty, \
               diversity, the teacher's competence region or the student's uncertainty.",
    },
    Direction {
        name: "evolutionary-search",
        text: "Consider searching over whole method configurations: populations of recipes, \
               mutation and recombination of the ones that score best, with care for how many \
               evaluations the search spends.",
    },
    Direction {
        name: "interpretability-probes",
        text: "Consider looking inside the student: probes on its representations, directions \
               that separate correct from incorrect answers, and whether they beat training on \
               the weak labels directly.",
    },
    Direction {
        name: "open",
        text: "Consider the problem afresh: read what the others have found, look for what \
               nobody has tried, and test the claims that matter most.",
    },
];

/// The direction of agent number `index` (cycling through the list).
pub fn for_agent(index: usize) -> Direction {
    DIRECTIONS[index % DIRECTIONS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_agents_get_nine_different_directions() {
        let names: std::collections::BTreeSet<_> = (0..9).map(|i| for_agent(i).name).collect();
        assert_eq!(names.len(), 9);
    }
}
