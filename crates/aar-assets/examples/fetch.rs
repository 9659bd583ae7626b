//! Runs `fetch_assets` from the command line until the binary wires it:
//! `cargo run -p aar-assets --example fetch -- [ASSETS_DIR] [NAME...]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".aar/assets".into());
    let mut options = aar_assets::FetchOptions::new(std::path::Path::new(&dir));
    options.only = args.collect();
    for outcome in aar_assets::fetch_assets(&options)? {
        println!(
            "{:<30} {:?} {} bytes {:.0} s",
            outcome.name, outcome.status, outcome.bytes, outcome.seconds
        );
    }
    Ok(())
}
