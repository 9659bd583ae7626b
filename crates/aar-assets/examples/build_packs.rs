//! Builds the three task packs until the binary wires `aar tasks build`:
//! `cargo run -p aar-assets --example build_packs -- ASSETS_DIR OUT_DIR PRESET [PYTHON]`.

use aar_assets::{PackKind, PackOptions, PackSizes, build_task_pack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [assets, out, preset, rest @ ..] = &args[..] else {
        return Err("usage: build_packs ASSETS_DIR OUT_DIR PRESET [PYTHON]".into());
    };
    let sizes = PackSizes::preset(preset).ok_or("unknown preset")?;
    let mut options = PackOptions::default();
    if let Some(python) = rest.first() {
        options.runner.python = python.into();
    }
    for kind in PackKind::ALL {
        let started = std::time::Instant::now();
        let stats = build_task_pack(
            kind,
            assets.as_ref(),
            &std::path::Path::new(out).join(kind.name()),
            &sizes,
            0,
            &options,
        )?;
        for (split, (rows, ones)) in &stats.splits {
            println!(
                "{:<5} {:<14} rows {rows:>5}  label=1 {ones:>5}",
                kind.name(),
                split.name()
            );
        }
        println!(
            "{} built in {:.0} s",
            kind.name(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
