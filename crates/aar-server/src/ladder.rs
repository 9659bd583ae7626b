//! The Ladder (Blum and Hardt, 2015): a leaderboard answer that leaks almost
//! nothing about the labels under repeated queries.
//!
//! For each (agent, task) the server keeps the best accuracy it has released.
//! A new submission is released only when it beats that best by at least one
//! `step`, and then rounded to a multiple of `step`; otherwise the previous
//! best is answered again. Flipping one of `n` predictions moves accuracy by
//! `1/n`, far below a step of 0.01 for any real test split, so the answer does
//! not change and the flip tells nothing. Nothing is released until a
//! submission clears the floor (the weak baseline, or chance) by a step, so
//! constant predictions do not reveal the class balance either.

/// The Ladder's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LadderConfig {
    /// Significance margin and rounding precision, in accuracy (default 0.01).
    pub step: f64,
}

impl Default for LadderConfig {
    fn default() -> LadderConfig {
        LadderConfig { step: 0.01 }
    }
}

/// What the Ladder answers for one submission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LadderAnswer {
    /// The best released accuracy after this submission (`None`: nothing released yet).
    pub released: Option<f64>,
    /// Whether this submission set a new released best.
    pub improved: bool,
}

/// Rounds to the nearest multiple of `step`, cleaned of float noise.
pub fn round_to_step(value: f64, step: f64) -> f64 {
    let rounded = (value / step).round() * step;
    (rounded * 1e6).round() / 1e6
}

/// The Ladder step: `previous` is the agent's best released accuracy, `floor` the
/// bar before anything was released, `accuracy` the exact score of this submission.
pub fn ladder_answer(
    config: LadderConfig,
    previous: Option<f64>,
    floor: f64,
    accuracy: f64,
) -> LadderAnswer {
    let bar = previous.unwrap_or(floor);
    if accuracy >= bar + config.step {
        let released = round_to_step(accuracy, config.step).max(previous.unwrap_or(f64::MIN));
        LadderAnswer {
            released: Some(released),
            improved: true,
        }
    } else {
        LadderAnswer {
            released: previous,
            improved: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: LadderConfig = LadderConfig { step: 0.01 };

    #[test]
    fn nothing_is_released_below_the_floor() {
        assert_eq!(
            ladder_answer(CONFIG, None, 0.6, 0.605),
            LadderAnswer {
                released: None,
                improved: false
            }
        );
    }

    #[test]
    fn a_significant_gain_is_released_rounded() {
        assert_eq!(
            ladder_answer(CONFIG, None, 0.6, 0.6234),
            LadderAnswer {
                released: Some(0.62),
                improved: true
            }
        );
        assert_eq!(
            ladder_answer(CONFIG, Some(0.62), 0.6, 0.6351),
            LadderAnswer {
                released: Some(0.64),
                improved: true
            }
        );
    }

    #[test]
    fn a_small_gain_repeats_the_previous_best() {
        assert_eq!(
            ladder_answer(CONFIG, Some(0.62), 0.6, 0.629),
            LadderAnswer {
                released: Some(0.62),
                improved: false
            }
        );
        assert_eq!(
            ladder_answer(CONFIG, Some(0.62), 0.6, 0.3),
            LadderAnswer {
                released: Some(0.62),
                improved: false
            }
        );
    }
}
