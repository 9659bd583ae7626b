//! Load benchmark of a whole team: N simulated researchers (real API clients, no LLM),
//! each on its own connection with its own token, doing what researchers do in a mix
//! (evaluate, read and search the forum, post, read the leaderboard, upload a snapshot)
//! against one real server on PostgreSQL (or SQLite), for a fixed time.
//!
//! ```text
//! cargo build --release -p aar-server --bin aar-research-server --example researchers
//! target/release/examples/researchers [--researchers 100] [--seconds 30] [--db postgres|sqlite]
//! ```
//!
//! Prints requests per second, p50 and p99 per endpoint, and where the time went: CPU
//! seconds of the server process, of the PostgreSQL processes and of the clients
//! against the wall time (on a 2-core machine all three share the same cores, so the
//! split says which part to make cheaper). `--db postgres` starts a throwaway
//! PostgreSQL (as the process tests do; `scripts/setup.sh --test` installs it).

#[path = "../tests/it/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Http, Postgres, issue_agent, tiny_archive, write_task};

const TEST_ROWS: usize = 1300;

/// What one researcher does, in proportion: most calls read, a few write.
const MIX: [Action; 10] = [
    Action::Evaluate,
    Action::Search,
    Action::Evaluate,
    Action::ReadPosts,
    Action::Leaderboard,
    Action::Evaluate,
    Action::Post,
    Action::Search,
    Action::Upload,
    Action::Me,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Evaluate,
    Search,
    ReadPosts,
    Post,
    Leaderboard,
    Upload,
    Me,
}

impl Action {
    fn endpoint(self) -> &'static str {
        match self {
            Action::Evaluate => "POST /api/evaluate",
            Action::Search => "GET /api/posts?q=",
            Action::ReadPosts => "GET /api/posts",
            Action::Post => "POST /api/posts",
            Action::Leaderboard => "GET /api/leaderboard",
            Action::Upload => "POST /api/snapshots",
            Action::Me => "GET /api/me",
        }
    }
}

struct Args {
    researchers: usize,
    seconds: u64,
    postgres: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        researchers: 100,
        seconds: 30,
        postgres: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--researchers" => {
                args.researchers = value()?
                    .parse()
                    .map_err(|e| format!("--researchers: {e}"))?
            }
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--db" => {
                args.postgres = match value()?.as_str() {
                    "postgres" => true,
                    "sqlite" => false,
                    other => return Err(format!("--db {other}: expected postgres or sqlite")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Per-endpoint outcomes of one researcher.
#[derive(Default)]
struct Tally {
    latencies: BTreeMap<Action, Vec<Duration>>,
    limited: BTreeMap<Action, usize>,
    errors: BTreeMap<Action, usize>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (a, l) in other.latencies {
            self.latencies.entry(a).or_default().extend(l);
        }
        for (a, n) in other.limited {
            *self.limited.entry(a).or_default() += n;
        }
        for (a, n) in other.errors {
            *self.errors.entry(a).or_default() += n;
        }
    }
}

/// One researcher's loop until `deadline`.
fn researcher(
    index: usize,
    addr: SocketAddr,
    token: String,
    labels: Vec<u8>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let Ok(mut http) = Http::connect(addr) else {
        *tally.errors.entry(Action::Me).or_default() += 1;
        return tally;
    };
    let mut step = index; // researchers start at different points of the mix
    while Instant::now() < deadline {
        let action = MIX[step % MIX.len()];
        let sent = Instant::now();
        let status = call(&mut http, action, index, step, &token, &labels);
        match status {
            Ok(s) if (200..300).contains(&s) => tally
                .latencies
                .entry(action)
                .or_default()
                .push(sent.elapsed()),
            Ok(429) => *tally.limited.entry(action).or_default() += 1,
            Ok(s) => {
                let errors = tally.errors.entry(action).or_default();
                *errors += 1;
                if *errors == 1 {
                    eprintln!("researcher {index}: {} answered {s}", action.endpoint());
                }
            }
            Err(e) => {
                eprintln!("researcher {index}: connection error: {e}");
                *tally.errors.entry(action).or_default() += 1;
                match Http::connect(addr) {
                    Ok(fresh) => http = fresh,
                    Err(_) => return tally,
                }
            }
        }
        step += 1;
    }
    tally
}

fn call(
    http: &mut Http,
    action: Action,
    index: usize,
    step: usize,
    token: &str,
    labels: &[u8],
) -> std::io::Result<u16> {
    let token = Some(token);
    let status = match action {
        Action::Evaluate => {
            // Distinct predictions every time: never a deduplicated repeat.
            let predictions: Vec<u8> = labels
                .iter()
                .enumerate()
                .map(|(i, &l)| {
                    if i < 24 {
                        l ^ u8::from((step >> i) & 1 == 1)
                    } else {
                        l
                    }
                })
                .collect();
            let body = json!({ "task": "loadtest", "predictions": predictions });
            http.json("POST", "/api/evaluate", token, Some(&body))?.0
        }
        Action::Search => {
            http.json("GET", "/api/posts?q=weak%20labels", token, None)?
                .0
        }
        Action::ReadPosts => http.json("GET", "/api/posts", token, None)?.0,
        Action::Post => {
            let body = json!({
                "kind": "result",
                "title": format!("researcher {index}, step {step}"),
                "body": "confidence-weighted weak labels with a temperature of 2 beat vanilla",
                "task": "loadtest",
            });
            http.json("POST", "/api/posts", token, Some(&body))?.0
        }
        Action::Leaderboard => {
            http.json("GET", "/api/leaderboard?task=loadtest", token, None)?
                .0
        }
        Action::Upload => {
            let archive = tiny_archive(&format!("researcher {index} step {step}"));
            http.request(
                "POST",
                "/api/snapshots?message=load",
                token,
                Some(("application/gzip", &archive)),
            )?
            .0
        }
        Action::Me => http.json("GET", "/api/me", token, None)?.0,
    };
    Ok(status)
}

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux the project runs on.
    100.0
}

/// CPU seconds of every process whose command name is `postgres`.
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let labels = write_task(&dir.path().join("tasks"), "loadtest", TEST_ROWS);
    let postgres = args.postgres.then(Postgres::start);
    let database_url = match &postgres {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", dir.path().join("aar.db").display()),
    };
    let server = support::start_unbudgeted(&dir.path().join("tasks"), &database_url)?;
    let tokens: Vec<String> = (0..args.researchers)
        .map(|i| issue_agent(server.addr, &format!("researcher-{i}")))
        .collect();
    let pg_cpu_now = || {
        if args.postgres {
            postgres_cpu_seconds()
        } else {
            0.0
        }
    };
    let (server_cpu, pg_cpu) = (cpu_seconds(server.pid()), pg_cpu_now());
    let client_cpu = cpu_seconds(std::process::id());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let addr = server.addr;
    let threads: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let labels = labels.clone();
            std::thread::spawn(move || researcher(i, addr, token, labels, deadline))
        })
        .collect();
    let mut tally = Tally::default();
    for t in threads {
        tally.merge(t.join().map_err(|_| "a researcher thread panicked")?);
    }
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(server.pid()) - server_cpu;
    let pg_cpu = pg_cpu_now() - pg_cpu;
    let client_cpu = cpu_seconds(std::process::id()) - client_cpu;
    report(&args, &tally, wall, [server_cpu, pg_cpu, client_cpu]);
    Ok(())
}

fn report(args: &Args, tally: &Tally, wall: f64, [server, pg, client]: [f64; 3]) {
    let db = if args.postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "researchers: {} simulated researchers, {wall:.1} s, {db}, load average {}",
        args.researchers,
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    println!(
        "| endpoint | ok | requests/s | p50 ms | p99 ms | max ms | 429 | errors |\n|---|---|---|---|---|---|---|---|"
    );
    let mut total = 0;
    for (action, latencies) in &tally.latencies {
        let mut sorted = latencies.clone();
        sorted.sort();
        total += sorted.len();
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
            action.endpoint(),
            sorted.len(),
            sorted.len() as f64 / wall,
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            percentile(&sorted, 1.0),
            tally.limited.get(action).copied().unwrap_or(0),
            tally.errors.get(action).copied().unwrap_or(0),
        );
    }
    let errors: usize = tally.errors.values().sum();
    println!(
        "all: {total} ok, {:.0} requests/s, {errors} errors",
        total as f64 / wall
    );
    // SQLite runs inside the server process: its time is the server's.
    let database = if args.postgres {
        format!("PostgreSQL {pg:.1} s ({:.0}%)", 100.0 * pg / wall)
    } else {
        "SQLite inside the server".to_owned()
    };
    println!(
        "CPU over the run: server {server:.1} s ({:.0}% of one core), {database}, clients \
         {client:.1} s ({:.0}%)",
        100.0 * server / wall,
        100.0 * client / wall,
    );
}
