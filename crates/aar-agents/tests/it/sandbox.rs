//! The sandbox's walls, each tested by trying to get through it. Where a
//! test could pass for the wrong reason, it first shows the same action works
//! outside the sandbox or inside its own workspace.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use aar_agents::sandbox::{Limits, WORKSPACE_MOUNT};

use crate::support::{limits, mkdir, sandbox, tempdir};

#[tokio::test]
async fn labeled_data_outside_the_binds_cannot_be_read() {
    let root = tempdir();
    let labels = mkdir(root.path(), "labeled");
    let secret = labels.join("test_labels.jsonl");
    std::fs::write(&secret, "{\"label\": 1, \"marker\": \"GOLD-LABEL-7731\"}\n").unwrap();
    let sb = sandbox(root.path(), 0, limits());
    std::fs::write(
        root.path().join("data/test.jsonl"),
        "{\"question\": \"q0\"}\n",
    )
    .unwrap();

    let out = sb
        .run(
            &format!("cat /data/test.jsonl; cat {}; ls /", secret.display()),
            None,
        )
        .await
        .unwrap();
    assert!(out.stdout.contains("q0"), "task data is visible: {out:?}");
    assert!(!out.stdout.contains("GOLD-LABEL"), "labels leaked: {out:?}");
    assert!(out.stderr.contains("No such file"), "{out:?}");
    // Nothing of the host's top level beyond the sandbox's own mounts.
    let top: Vec<&str> = out.stdout.lines().skip(1).collect();
    for name in ["root", "work", "home", "var", "old_root", "farm"] {
        assert!(!top.contains(&name), "/{name} is visible: {top:?}");
    }
    let out = sb
        .run("grep -rl GOLD-LABEL / --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr 2>/dev/null; true", None)
        .await
        .unwrap();
    assert_eq!(
        out.stdout, "",
        "the labels file is reachable somewhere: {out:?}"
    );
}

#[tokio::test]
async fn no_network_not_even_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let probe =
        format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED >&3 && echo connected");
    // Outside the sandbox the same probe connects: the test can see a leak.
    let host = tokio::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .await
        .unwrap();
    assert!(
        host.status.success(),
        "probe does not work on the host: {host:?}"
    );
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_nonblocking(false).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "CONNECTED\n");

    let root = tempdir();
    let sb = sandbox(root.path(), 0, limits());
    let out = sb.run(&probe, None).await.unwrap();
    assert!(!out.success(), "connected from the sandbox: {out:?}");
    assert!(!out.stdout.contains("connected"), "{out:?}");
    assert!(listener.accept().is_err(), "the listener got a connection");
    let out = sb
        .run("cat /sys/class/net/*/operstate 2>/dev/null; ls /sys/class/net 2>/dev/null; getent hosts example.com; echo done", None)
        .await
        .unwrap();
    assert!(
        !out.stdout.contains("eth"),
        "a host interface is visible: {out:?}"
    );
}

#[tokio::test]
async fn writes_land_only_in_the_workspace() {
    let root = tempdir();
    let outside = mkdir(root.path(), "outside");
    let sb = sandbox(root.path(), 0, limits());
    let target = outside.join("planted.txt");
    let out = sb
        .run(
            &format!(
                "echo ok > in-ws.txt; echo x > /data/x.txt; echo x > /usr/x.txt; echo x > /etc/x.txt; echo x > {}; echo x > /x.txt; true",
                target.display()
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(sb.workspace().join("in-ws.txt")).unwrap(),
        "ok\n",
        "{out:?}"
    );
    assert!(!target.exists(), "wrote to a host path");
    assert!(
        !root.path().join("data/x.txt").exists(),
        "wrote into the read-only task data"
    );
    assert!(!std::path::Path::new("/usr/x.txt").exists());
    assert!(!std::path::Path::new("/etc/x.txt").exists());
    assert!(!std::path::Path::new("/x.txt").exists());
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
}

#[tokio::test]
async fn another_agents_workspace_is_invisible() {
    let root = tempdir();
    let a = sandbox(root.path(), 0, limits());
    let b = sandbox(root.path(), 1, limits());
    let out = b.run("echo b-private > notes.txt", None).await.unwrap();
    assert!(out.success(), "{out:?}");
    let b_file = b.workspace().join("notes.txt");
    assert!(b_file.exists());
    let out = a
        .run(
            &format!(
                "cat {}; ls {WORKSPACE_MOUNT}; ls {}",
                b_file.display(),
                b.workspace().display()
            ),
            None,
        )
        .await
        .unwrap();
    assert!(!out.stdout.contains("b-private"), "{out:?}");
    assert!(!out.stdout.contains("notes.txt"), "{out:?}");
}

#[tokio::test]
async fn host_environment_and_home_are_invisible() {
    // Cargo runs tests with CARGO_* variables set: none may reach the sandbox.
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO_")));
    let root = tempdir();
    let sb = sandbox(root.path(), 0, limits());
    let out = sb
        .run("env; ls /root; cat /proc/1/environ | tr '\\0' '\\n'", None)
        .await
        .unwrap();
    let names: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &names {
        assert!(
            ["PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "OLDPWD"].contains(name),
            "unexpected variable {name} in {out:?}"
        );
    }
    assert!(names.contains(&"HOME"));
    assert!(out.stdout.contains(&format!("HOME={WORKSPACE_MOUNT}")));
    assert!(!out.stdout.contains("CARGO"), "{out:?}");
    assert!(
        out.stderr.contains("/root"),
        "ls /root should fail: {out:?}"
    );
}

#[tokio::test]
async fn wall_time_kills_the_command_and_its_children() {
    let root = tempdir();
    let sb = sandbox(
        root.path(),
        0,
        Limits {
            wall_time: Duration::from_secs(1),
            ..limits()
        },
    );
    let started = std::time::Instant::now();
    let out = sb
        .run(
            "(sleep 41.5; touch late-child) & sleep 40; touch late",
            None,
        )
        .await
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    assert!(!out.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(out.report(&sb.config().limits).contains("wall-time limit"));
    // No process of the sandbox survives.
    let survivors = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains("41.5"))
        .count();
    assert_eq!(survivors, 0, "a child outlived the sandbox");
    // And a short per-call timeout overrides the configured one.
    let out = sb
        .run("sleep 5", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(out.timed_out);
}

#[tokio::test]
async fn output_is_capped_and_says_so() {
    let root = tempdir();
    let sb = sandbox(
        root.path(),
        0,
        Limits {
            output_bytes: 1000,
            ..limits()
        },
    );
    let out = sb
        .run("head -c 100000 /dev/zero | tr '\\0' a; echo err >&2", None)
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert_eq!(out.stdout_bytes, 100_000);
    assert!(out.stdout_truncated);
    assert!(!out.stderr_truncated);
    assert_eq!(out.stderr, "err\n");
    let report = out.report(&sb.config().limits);
    assert!(
        report.contains("stdout truncated: showing the first 1000 of 100000 bytes"),
        "{report}"
    );
}

#[tokio::test]
async fn memory_limit_stops_a_hog() {
    let root = tempdir();
    let sb = sandbox(
        root.path(),
        0,
        Limits {
            memory_bytes: 512 << 20,
            ..limits()
        },
    );
    // A modest allocation works, so the failure below is the limit's doing.
    let small = sb.run(&touch_megabytes(64, 0), None).await.unwrap();
    assert!(small.success(), "{small:?}");
    let hog = sb.run(&touch_megabytes(2048, 0), None).await.unwrap();
    assert!(!hog.success(), "{hog:?}");
    assert_eq!(hog.oom_kills, 1, "{hog:?}");
    assert!(hog.report(&sb.config().limits).contains("memory limit"));
}

/// A Python one-liner that writes `mb` megabytes (so the pages are really used), holds
/// them for `hold_s` seconds and prints "held".
fn touch_megabytes(mb: u64, hold_s: u64) -> String {
    format!(
        "python3 -c 'import time; x = b\"1\" * ({mb} << 20); time.sleep({hold_s}); print(\"held\")'"
    )
}

/// Two processes of one command each stay under the limit but not together: the control
/// group holds them as one, kills one, and says so; a neighbour sandbox running the
/// same balloon alone at the same time is untouched.
#[tokio::test]
async fn a_memory_balloon_across_processes_is_held_as_one() {
    assert!(
        aar_agents::cgroup::Hierarchy::get().is_some(),
        "this machine kind offers control groups (cgroup v1 memory and pids)"
    );
    let root = tempdir();
    let small = Limits {
        memory_bytes: 320 << 20,
        wall_time: Duration::from_secs(60),
        ..limits()
    };
    let balloon = sandbox(root.path(), 0, small);
    let neighbour = sandbox(root.path(), 1, small);
    let two = format!(
        "{} & {} & wait; wait",
        touch_megabytes(200, 3),
        touch_megabytes(200, 3)
    );
    let one = touch_megabytes(200, 3);
    let (both, alone) = tokio::join!(balloon.run(&two, None), neighbour.run(&one, None));
    let (both, alone) = (both.unwrap(), alone.unwrap());
    assert_eq!(both.oom_kills, 1, "{both:?}");
    assert_eq!(both.stdout.matches("held").count(), 1, "{both:?}");
    assert!(!both.success());
    let report = both.report(&small);
    assert!(
        report.contains("1 process(es) at the sandbox's memory limit of 335544320 bytes"),
        "{report}"
    );
    assert!(
        alone.success() && alone.stdout.contains("held"),
        "{alone:?}"
    );
    assert_eq!(alone.oom_kills, 0);
}

/// The sandbox's `/tmp` is memory (a tmpfs): filling it counts against the command's
/// memory limit even where its own size cap is larger.
#[tokio::test]
async fn tmp_counts_against_the_memory_limit() {
    let root = tempdir();
    let limits = Limits {
        memory_bytes: 160 << 20,
        tmp_bytes: 1 << 30,
        ..limits()
    };
    let sb = sandbox(root.path(), 0, limits);
    let fits = sb
        .run("head -c 50M /dev/zero > /tmp/fill && echo wrote", None)
        .await
        .unwrap();
    assert!(fits.success() && fits.stdout.contains("wrote"), "{fits:?}");
    let fill = sb
        .run("head -c 400M /dev/zero > /tmp/fill && echo wrote", None)
        .await
        .unwrap();
    assert!(!fill.success(), "{fill:?}");
    assert!(!fill.stdout.contains("wrote"), "{fill:?}");
}

#[tokio::test]
async fn workspace_over_its_cap_is_reported() {
    let root = tempdir();
    let sb = sandbox(
        root.path(),
        0,
        Limits {
            workspace_bytes: 1 << 20,
            ..limits()
        },
    );
    let out = sb
        .run("head -c 2000000 /dev/zero > big", None)
        .await
        .unwrap();
    assert!(out.workspace_over_cap, "{out:?}");
    assert!(!out.success());
    assert!(out.report(&sb.config().limits).contains("over its cap"));
    let out = sb.run("rm big", None).await.unwrap();
    assert!(out.success(), "{out:?}");
}

#[tokio::test]
async fn configured_variables_reach_the_sandbox_and_nothing_else_does() {
    let root = tempdir();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = aar_agents::sandbox::SandboxConfig::new(root.path().join("ws"), 0);
    config.task_data = Some(data);
    config.limits = limits();
    config.env = vec![("AAR_HOME".into(), "/some/home".into())];
    let sb = aar_agents::sandbox::Sandbox::new(config).unwrap();
    let out = sb.run("env", None).await.unwrap();
    assert!(out.stdout.contains("AAR_HOME=/some/home"), "{out:?}");
    assert!(!out.stdout.contains("CARGO"), "{out:?}");
}

/// A disk fill inside one command is stopped while it runs, not after: the command is
/// killed within about a second of the workspace passing its cap.
#[tokio::test]
async fn a_disk_fill_is_killed_while_the_command_runs() {
    let root = tempdir();
    let sb = sandbox(
        root.path(),
        0,
        Limits {
            workspace_bytes: 20 << 20,
            ..limits()
        },
    );
    // 10 MB every 0.2 s for 20 s: 1 GB if nothing stops it.
    let out = sb
        .run(
            "for i in $(seq 1 100); do head -c 10000000 /dev/zero > f$i; sleep 0.2; done",
            None,
        )
        .await
        .unwrap();
    assert!(out.workspace_killed, "{out:?}");
    assert!(!out.success() && !out.timed_out);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "killed after {:?}",
        out.elapsed
    );
    assert!(
        out.workspace_bytes < 200 << 20,
        "{} bytes",
        out.workspace_bytes
    );
    assert!(
        out.report(&sb.config().limits)
            .contains("grew past its cap of 20971520 bytes while the command ran"),
        "{}",
        out.report(&sb.config().limits)
    );
}

/// The sandbox's own root (bubblewrap's tmpfs, which no limit counts) takes no writes;
/// the workspace and `/tmp` do.
#[tokio::test]
async fn the_sandbox_root_is_read_only() {
    let root = tempdir();
    let sb = sandbox(root.path(), 0, limits());
    let out = sb
        .run(
            "echo x > /tmp/ok && echo x > ok && (mkdir /new-dir; echo x > /x.txt) 2>&1; true",
            None,
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout.matches("Read-only file system").count(),
        2,
        "{out:?}"
    );
    assert!(sb.workspace().join("ok").is_file());
}

/// A fork bomb in one sandbox hits its process limit and dies with its wall time, while
/// another researcher's sandbox (its own uid) goes on running commands.
#[tokio::test]
async fn a_fork_bomb_is_contained_and_the_neighbour_keeps_working() {
    let root = tempdir();
    let bomb = sandbox(
        root.path(),
        0,
        Limits {
            processes: 64,
            wall_time: Duration::from_secs(5),
            ..limits()
        },
    );
    let neighbour = sandbox(root.path(), 1, limits());
    let bombing = tokio::spawn(async move { bomb.run("f() { f | f & }; f; sleep 30", None).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let out = neighbour.run("echo alive", None).await.unwrap();
    assert!(out.success() && out.stdout.contains("alive"), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the neighbour waited {:?}",
        started.elapsed()
    );
    let bombed = bombing.await.unwrap().unwrap();
    assert!(bombed.timed_out, "{bombed:?}");
    // It was the process limit that held it, not the machine running out.
    assert!(
        bombed.stderr.contains("Resource temporarily unavailable"),
        "{bombed:?}"
    );
}
