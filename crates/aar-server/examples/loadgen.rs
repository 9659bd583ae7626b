//! Load benchmark on loopback: evaluation requests of 1,300 predictions against
//! the real server in a separate process, with the audit log durable
//! (SQLite, WAL, `synchronous=FULL`, acknowledged after commit).
//!
//! ```text
//! cargo build --release -p aar-server --bin aar-research-server --example loadgen
//! target/release/examples/loadgen [--connections 32] [--requests 20000] [--seconds 20] [--url http://127.0.0.1:PORT]
//! ```
//!
//! Without `--url` it starts `aar-research-server` (next to this example's
//! directory) on a fresh SQLite database in a temporary directory. Bounded by
//! both the request count and the time limit; only 127.0.0.1.

#[path = "../tests/it/support.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Http, ServerProcess, issue_agent, write_task};

/// The issue's targets on this 2-core machine.
const TARGET_RPS: f64 = 1000.0;
const TARGET_P99_MS: f64 = 25.0;

struct Args {
    connections: usize,
    requests: usize,
    seconds: u64,
    url: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        connections: 32,
        requests: 20_000,
        seconds: 20,
        url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--requests" => {
                args.requests = value()?.parse().map_err(|e| format!("--requests: {e}"))?
            }
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--url" => args.url = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    const N: usize = 1300;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let labels = write_task(&dir.path().join("tasks"), "loadtest", N);
    let (_server, addr): (Option<ServerProcess>, SocketAddr) = match &args.url {
        Some(url) => {
            let host = url.trim_start_matches("http://").trim_end_matches('/');
            let addr: SocketAddr = host.parse().map_err(|e| format!("--url: {e}"))?;
            if !addr.ip().is_loopback() {
                return Err("only loopback addresses".into());
            }
            (None, addr)
        }
        None => {
            let db = format!("sqlite://{}", dir.path().join("aar.db").display());
            let server = support::start_unbudgeted(&dir.path().join("tasks"), &db)?;
            let addr = server.addr;
            (Some(server), addr)
        }
    };
    let tokens: Vec<String> = (0..args.connections)
        .map(|i| issue_agent(addr, &format!("load-{i}")))
        .collect();
    let load_before = load_average();
    let issued = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let threads: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let (issued, labels) = (issued.clone(), labels.clone());
            let limit = args.requests;
            std::thread::spawn(move || -> (Vec<Duration>, usize) {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let Ok(mut http) = Http::connect(addr) else {
                    return (latencies, 1);
                };
                // The body is built once; each request rewrites the first 32
                // predictions in place (a digit each), so the client spends
                // its CPU on sending, not on formatting.
                let prefix = "{\"task\":\"loadtest\",\"predictions\":[";
                let digits: Vec<String> = labels.iter().map(u8::to_string).collect();
                let mut body = format!("{prefix}{}]}}", digits.join(",")).into_bytes();
                loop {
                    let k = issued.fetch_add(1, Ordering::Relaxed);
                    if k >= limit || Instant::now() >= deadline {
                        return (latencies, errors);
                    }
                    // Distinct predictions every time: no request is a deduplicated repeat.
                    for (bit, &label) in labels.iter().take(32).enumerate() {
                        let p = label ^ u8::from(k >> bit & 1 == 1);
                        body[prefix.len() + 2 * bit] = b'0' + p;
                    }
                    let sent = Instant::now();
                    match http.request(
                        "POST",
                        "/api/evaluate",
                        Some(&token),
                        Some(("application/json", &body)),
                    ) {
                        Ok((200, _)) => latencies.push(sent.elapsed()),
                        Ok((status, body)) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("status {status}: {}", support::text(&body));
                            }
                        }
                        Err(e) => {
                            eprintln!("connection error: {e}");
                            return (latencies, errors + 1);
                        }
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (l, e) = t.join().map_err(|_| "a load thread panicked")?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let rps = latencies.len() as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (pct(0.50).as_secs_f64() * 1e3, pct(0.99).as_secs_f64() * 1e3);
    println!(
        "loadgen: {} ok, {} errors, {} connections, {:.2} s, load average {} -> {}",
        latencies.len(),
        errors,
        args.connections,
        elapsed.as_secs_f64(),
        load_before,
        load_average(),
    );
    println!(
        "loadgen: {rps:.0} requests/s, p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    let pass = errors == 0 && rps >= TARGET_RPS && p99 < TARGET_P99_MS;
    println!(
        "loadgen: {} (targets: >= {TARGET_RPS:.0} requests/s, p99 < {TARGET_P99_MS:.0} ms, no errors)",
        if pass { "PASS" } else { "MISS" }
    );
    Ok(())
}

/// The 1, 5 and 15 minute load averages, to judge how quiet the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}
