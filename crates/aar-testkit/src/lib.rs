//! Real services for tests, started in a temporary directory and stopped on drop: a
//! PostgreSQL server ([`Postgres`]) and a single-node Slurm cluster ([`SlurmCluster`]).
//! They panic with what to install when a service is missing: a test that needs one
//! fails, it never passes by skipping.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is the report

mod postgres;
mod slurm;

pub use postgres::Postgres;
pub use slurm::SlurmCluster;

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}
