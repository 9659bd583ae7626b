//! Runs a preset's baselines from a preset name or a preset JSON file (for searching
//! configurations without rebuilding): `cargo run --release -p aar-testbed --example
//! baselines -- PRESET_OR_FILE [AAR_HOME] [WORK_DIR]`. The product command is `aar baselines`.

use std::path::PathBuf;

use aar_testbed::{BaselineTable, Preset, RunOptions, run_baselines};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .init();
    aar_engine::device::best_device();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [preset, rest @ ..] = &args[..] else {
        return Err("usage: baselines PRESET_OR_FILE [AAR_HOME] [WORK_DIR]".into());
    };
    let preset: Preset = if preset.ends_with(".json") {
        serde_json::from_str(&std::fs::read_to_string(preset)?)?
    } else {
        Preset::named(preset)?
    };
    let home = PathBuf::from(rest.first().map_or(".aar", String::as_str));
    let mut options = RunOptions::new(&preset, &home);
    if let Some(work) = rest.get(1) {
        options.work_dir = PathBuf::from(work);
    }
    let summary = run_baselines(&preset, &options)?;
    let table = BaselineTable::read(&options.results_dir(), &preset.seeds)?;
    print!("{table}");
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
