//! aar-engine's integration tests: parity with PyTorch/transformers/PEFT on fixtures that
//! `tests/fixtures/make_fixtures.py` generates at test time, prompts, training and bad input.

// Test helpers outside #[test] functions may unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod features;
mod gpu;
mod parity;
mod prompts;
mod support;
mod training;
