//! Oversight: a leaderboard entry is a method, never a number. This crate holds
//! the method contract (`method`), the verifier that re-runs an entry's snapshot
//! in fresh sandboxes on label-free copies of data its author never saw and
//! scores it (`verifier`, `inputs`), the execution monitor (`trace`) and the
//! probes for the known reward hacks (`probes`). The research server drives it
//! through `aar_server::verify::Verifier`, in its own process or, in cluster mode,
//! through remote workers on other machines (`worker`).
#![deny(missing_docs)]

pub mod error;
pub mod inputs;
pub mod logs;
pub mod method;
pub mod probes;
pub mod template;
pub mod trace;
pub mod verifier;
pub mod worker;

pub use error::{OversightError, Result};
pub use verifier::{SandboxedVerifier, SnapshotChecker, VerifierConfig};
pub use worker::{WorkerConfig, WorkerOptions, WorkerSummary, run_worker};
