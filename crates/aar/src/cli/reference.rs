use std::io::Write;
use std::path::{Path, PathBuf};

use aar_results::{ReferenceReport, ResultCache, SeedSet};
use anyhow::Context;
use clap::Subcommand;

/// The reference's published baseline cache (MIT), embedded so the report runs anywhere.
const EMBEDDED_CACHE: &[u8] = include_bytes!("../../../../fixtures/reference/cache_results.tar.gz");

#[derive(Debug, Subcommand)]
pub enum ReferenceCommand {
    /// Per data set: fixed W and S over pinned seeds, and each method's PGR mean +- SE.
    Report {
        /// A cache directory or .tar.gz in the reference layout (default: the
        /// reference's published cache, embedded in aar).
        path: Option<PathBuf>,
        /// Seeds the fixed baselines are computed from, e.g. 42-57 or 42,43,44.
        #[arg(long, default_value = "42-57")]
        seeds: SeedSet,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: ReferenceCommand) -> anyhow::Result<()> {
    match command {
        ReferenceCommand::Report { path, seeds, json } => {
            let cache = match &path {
                Some(path) => ResultCache::open(path)?,
                None => ResultCache::from_archive_bytes(
                    EMBEDDED_CACHE,
                    Path::new("<embedded reference cache>"),
                )?,
            };
            let report = ReferenceReport::build(&cache, &seeds).context("building the report")?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{report}")?;
            }
            Ok(())
        }
    }
}
