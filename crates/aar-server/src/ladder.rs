//! The Ladder (Blum and Hardt, 2015): a leaderboard answer that leaks almost
//! nothing about the labels under repeated queries.
//!
//! For each (agent, task) the server keeps the best accuracy it has released.
//! A new submission is released only when it beats that best by at least one
//! step, and then rounded to a multiple of the step; otherwise the previous
//! best is answered again. Nothing is released until a submission clears the
//! floor (the weak baseline, or chance) by a step, so constant predictions do
//! not reveal the class balance either.
//!
//! **The step grows with the test split's sampling noise.** A fixed step of
//! 0.01 is not enough on a small split: on 64 rows one flipped prediction
//! moves accuracy by 1/64 = 0.0156, more than the step, so flipping one
//! prediction per query would read labels. Each task's step is
//!
//! ```text
//! step_for(n) = max(base_step, 0.5 / sqrt(n), 2 / n), rounded up to a multiple of 0.005
//! ```
//!
//! (`n` test rows, `base_step` 0.01 by default): `2 / n` keeps one flip (and
//! two) strictly below a step on any split, `0.5 / sqrt(n)` (the largest
//! standard error of an accuracy on `n` rows) keeps the released value from
//! resolving differences that are noise anyway, and the 0.005 grid keeps the
//! released values readable. On 1,300 rows the step is 0.015, on 64 rows 0.065.

/// The Ladder's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LadderConfig {
    /// Smallest margin and rounding precision, in accuracy (default 0.01);
    /// a task's own step is [`step_for`] its test split's size.
    pub step: f64,
}

impl Default for LadderConfig {
    fn default() -> LadderConfig {
        LadderConfig { step: 0.01 }
    }
}

/// The grid every step is rounded up to.
const STEP_GRID: f64 = 0.005;

/// The Ladder step of a task with `n_test` public test rows (see the module
/// docs): `max(base, 0.5/sqrt(n), 2/n)` rounded up to a multiple of 0.005.
pub fn step_for(config: LadderConfig, n_test: usize) -> f64 {
    let n = n_test.max(1) as f64;
    let raw = config.step.max(0.5 / n.sqrt()).max(2.0 / n);
    // The tolerance keeps an exact multiple (0.01 / 0.005 = 2.0000000000000004) on its grid point.
    let cells = (raw / STEP_GRID - 1e-9).ceil();
    round_to_step(cells * STEP_GRID, STEP_GRID)
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

/// The Ladder's answer: `step` is the task's ([`step_for`]), `previous` the
/// agent's best released accuracy, `floor` the bar before anything was
/// released, `accuracy` the exact score of this submission.
pub fn ladder_answer(step: f64, previous: Option<f64>, floor: f64, accuracy: f64) -> LadderAnswer {
    let bar = previous.unwrap_or(floor);
    if accuracy >= bar + step {
        // A step that does not divide 1 could round a perfect score past 1.
        let released = round_to_step(accuracy, step)
            .min(1.0)
            .max(previous.unwrap_or(f64::MIN));
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

    const CONFIG: f64 = 0.01;

    #[test]
    fn one_flip_is_always_below_the_step() {
        let config = LadderConfig::default();
        for n in 1..=20_000 {
            let step = step_for(config, n);
            let flip = 1.0 / n as f64;
            assert!(
                flip < step,
                "n = {n}: one flip {flip} is not below the step {step}"
            );
            assert!(step >= config.step, "n = {n}: step {step} below the base");
            let cells = step / STEP_GRID;
            assert!(
                (cells - cells.round()).abs() < 1e-9,
                "n = {n}: {step} is off the grid"
            );
        }
    }

    #[test]
    fn a_release_never_passes_one() {
        let step = step_for(LadderConfig::default(), 1300);
        assert_eq!(round_to_step(1.0, step), 1.005);
        assert_eq!(
            ladder_answer(step, Some(0.9), 0.5, 1.0),
            LadderAnswer {
                released: Some(1.0),
                improved: true
            }
        );
    }

    #[test]
    fn the_step_follows_the_split_size() {
        let base = LadderConfig::default();
        assert_eq!(step_for(base, 64), 0.065);
        assert_eq!(step_for(base, 1300), 0.015);
        assert_eq!(step_for(base, 2500), 0.01);
        assert_eq!(step_for(base, 1_000_000), 0.01);
        assert_eq!(step_for(LadderConfig { step: 0.02 }, 1_000_000), 0.02);
        assert_eq!(step_for(LadderConfig { step: 0.012 }, 1_000_000), 0.015);
        assert_eq!(step_for(base, 0), step_for(base, 1));
    }

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
