//! The main job (`aar up`): a research campaign. The testbed's tasks and baselines
//! (cached), the research server in-process, N researchers each in its own sandbox
//! (the offline researcher by default, an LLM when configured), live progress, and a
//! report (Markdown, JSON, self-contained HTML, a PNG of PGR over time).
//!
//! Map:
//! - [`campaign`]: set-up, identities, researchers, progress, Ctrl-C, resume;
//! - [`decoys`]: the researchers' `/data` (agent copies) with planted decoy label files;
//! - [`executor`]: where researchers and verifications run (this process, or Slurm jobs);
//! - [`generalize`]: the generalization gate (top entries on other tasks, held-out tasks
//!   and a second model pair);
//! - [`offline`]: the built-in researcher that needs no LLM;
//! - `oversight`: the verifier that re-runs entries (`aar-oversight`), wired and warmed up;
//! - [`report`]: what the campaign found, from the server's records and the ledger;
//! - [`report_html`]: the report as one HTML file (inline CSS and SVG, no scripts);
//! - [`researcher`]: one researcher built from its spec, here or as a job (`aar researcher`).
//!
//! Invariant: the orchestrator is the only part that holds the admin token; the
//! researchers hold agent tokens and see the label-free task copies only.
#![deny(missing_docs)]

pub mod campaign;
pub mod decoys;
mod error;
pub mod executor;
pub mod generalize;
pub mod offline;
mod oversight;
mod relay;
pub mod report;
pub mod report_html;
pub mod researcher;
pub mod workbench;

pub use campaign::{CampaignConfig, Researchers, run_campaign};
pub use error::{CampaignError, Result};
pub use report::Report;
