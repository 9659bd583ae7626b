//! A throwaway PostgreSQL server (`initdb` + `pg_ctl` of Debian's `postgresql`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::free_port;

/// A throwaway PostgreSQL server in a temporary directory, stopped on drop.
pub struct Postgres {
    _dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    data: PathBuf,
    as_postgres_user: bool,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
}

fn find_pg_bin(name: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .collect();
    candidates.sort();
    candidates.reverse();
    candidates.extend(
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|p| p.join(name)),
    );
    candidates.into_iter().find(|p| p.is_file())
}

fn pg_command(as_postgres_user: bool, program: &Path) -> Command {
    if as_postgres_user {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// initdb + start on a free port; panics (loudly) when PostgreSQL is not installed.
    pub fn start() -> Postgres {
        let initdb = find_pg_bin("initdb").unwrap_or_else(|| {
            panic!("PostgreSQL is not installed (no initdb): run scripts/setup.sh --test, or apt-get install postgresql")
        });
        let pg_ctl = initdb.with_file_name("pg_ctl");
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root: CI runs as root, so run it as `postgres`.
        let as_postgres_user = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        if as_postgres_user {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the PostgreSQL temp dir failed");
        }
        let data = dir.path().join("data");
        let out = pg_command(as_postgres_user, &initdb)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.path().display()
        );
        let out = pg_command(as_postgres_user, &pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        Postgres {
            _dir: dir,
            pg_ctl,
            data,
            as_postgres_user,
            url,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command(self.as_postgres_user, &self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
