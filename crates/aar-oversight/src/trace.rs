//! The execution monitor: every program a verification run starts, recorded by
//! `strace -f -e trace=execve` around the method's entrypoint, and the rule that
//! tells the method's own code and the system's tools from programs the run made
//! or took from the task (the execute-to-label hack: run the code pack's programs
//! against their tests and read the labels off).

use serde::Serialize;

/// What the monitor cannot see; said in every execution flag.
pub const BLIND_SPOTS: &str = "the monitor sees every program start (execve) inside the sandbox; \
     it cannot see code run without a new program file (eval/exec inside an interpreter, code \
     passed as text with `-c` or on standard input, a module imported from a file the method \
     wrote, a method that interprets task text itself), nor what an executed program computed, \
     nor the working directory a relative script was started from; a method can add lines to \
     the trace but not remove them";

/// One program start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exec {
    /// The executed file.
    pub path: String,
    /// Its arguments (`argv`, as strace printed them, possibly abbreviated).
    pub argv: Vec<String>,
}

/// Parses strace's `execve` lines (`[pid  7] execve("/usr/bin/python3", ["python3", "x.py"], ...) = 0`);
/// failed calls (`= -1 ENOENT`, the shell's PATH search) are not program starts.
///
/// When processes run at once, strace splits a call in two: `[pid 7] execve(... <unfinished ...>`
/// and later `[pid 7] <... execve resumed>) = 0`. Such a call counts unless its
/// resumption says it failed; one never resumed (or resumed under another pid, as when a
/// thread other than the leader execs) counts too: a start the trace cannot rule out.
pub fn parse_trace(text: &str) -> Vec<Exec> {
    let mut execs = Vec::new();
    let mut pending: std::collections::BTreeMap<Option<u32>, Exec> = Default::default();
    for line in text.lines() {
        let (pid, rest) = split_pid(line);
        if let Some(result) = rest.strip_prefix("<... execve resumed>") {
            if let Some(exec) = pending.remove(&pid)
                && result.trim_end().ends_with("= 0")
            {
                execs.push(exec);
            }
        } else if rest.trim_end().ends_with("<unfinished ...>") {
            if let Some(exec) = parse_call(rest) {
                execs.extend(pending.insert(pid, exec));
            }
        } else if rest.trim_end().ends_with("= 0") {
            execs.extend(parse_call(rest));
        }
    }
    execs.extend(pending.into_values());
    execs
}

/// The pid prefix strace writes with `-f` (`[pid  7] ` on stderr, `7  ` with `-o`), if any.
fn split_pid(line: &str) -> (Option<u32>, &str) {
    let (digits, rest) = match line.strip_prefix("[pid") {
        Some(tail) => match tail.split_once(']') {
            Some((digits, rest)) => (digits, rest),
            None => return (None, line),
        },
        None => match line.split_once(' ') {
            Some((digits, rest)) if digits.bytes().all(|b| b.is_ascii_digit()) => (digits, rest),
            _ => return (None, line),
        },
    };
    match digits.trim().parse() {
        Ok(pid) => (Some(pid), rest.trim_start()),
        Err(_) => (None, line),
    }
}

/// One `execve(path, [argv...], ...` call, whatever its ending.
fn parse_call(line: &str) -> Option<Exec> {
    let start = line.find("execve(")? + "execve(".len();
    let rest = &line[start..];
    let (path, after) = quoted(rest)?;
    let open = after.find('[')?;
    let mut argv = Vec::new();
    let mut cursor = &after[open + 1..];
    while let Some((arg, next)) = quoted(cursor) {
        argv.push(arg);
        let next = next.trim_start();
        if let Some(stripped) = next.strip_prefix(',') {
            cursor = stripped;
        } else {
            break;
        }
        if cursor.trim_start().starts_with(']') {
            break;
        }
    }
    Some(Exec { path, argv })
}

/// The first C-style quoted string in `s` and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let open = s.find('"')?;
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in s[open + 1..].char_indices() {
        if escaped {
            out.push(match c {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            let end = open + 1 + i + 1;
            // strace marks an abbreviated string with `...` after the quote.
            let rest = s[end..].strip_prefix("...").unwrap_or(&s[end..]);
            return Some((out, rest));
        } else {
            out.push(c);
        }
    }
    None
}

/// Interpreters whose first operand is a program to run.
const INTERPRETERS: &[&str] = &[
    "python", "python3", "sh", "bash", "dash", "node", "perl", "ruby", "lua", "Rscript",
];

/// Where the method's own code and trusted tools live, as the sandbox shows them.
#[derive(Debug, Clone)]
pub struct TrustedPaths {
    /// The unpacked snapshot (the method's own code).
    pub method_dir: String,
    /// The snapshot's own files, relative to `method_dir` (`run.py`, `src/train.py`).
    /// The run may write in its directory, so a program or script there that is not
    /// one of these was made by the run; so is a relative script run from another
    /// working directory (`cd /tmp && python3 p.py`), which resolves to no snapshot file.
    pub method_files: std::collections::BTreeSet<String>,
    /// System and aar directories (`/usr`, `/bin`, `/opt/aar`, libtorch, ...).
    pub system: Vec<String>,
}

impl TrustedPaths {
    fn is_trusted(&self, path: &str) -> bool {
        self.is_method_file(path) || self.system.iter().any(|p| under(path, p))
    }

    fn is_method_file(&self, path: &str) -> bool {
        let Some(relative) = path
            .strip_prefix(self.method_dir.trim_end_matches('/'))
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            return false;
        };
        let mut parts = Vec::new();
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => return false,
                part => parts.push(part),
            }
        }
        self.method_files.contains(&parts.join("/"))
    }
}

fn under(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/') || dir.ends_with('/'))
}

/// The program starts that ran something other than the method's own code or a
/// system tool: a binary outside the trusted directories, or an interpreter given a
/// script outside the method's directory (relative scripts resolve against the
/// method directory, the run's working directory).
pub fn foreign_execs(execs: &[Exec], trusted: &TrustedPaths) -> Vec<Exec> {
    execs
        .iter()
        .filter(|exec| {
            if !trusted.is_trusted(&exec.path) {
                return true;
            }
            let name = exec.path.rsplit('/').next().unwrap_or(&exec.path);
            let interpreter = INTERPRETERS.iter().any(|i| {
                name == *i
                    || name.starts_with(&format!("{i}."))
                    || (name.starts_with("python3") && i == &"python3")
            });
            if !interpreter {
                return false;
            }
            match script_operand(&exec.argv) {
                Some(script) if script.starts_with('/') => !trusted.is_trusted(&script),
                Some(script) => {
                    let joined = format!("{}/{}", trusted.method_dir.trim_end_matches('/'), script);
                    script.contains("..") || !trusted.is_trusted(&joined)
                }
                None => false,
            }
        })
        .cloned()
        .collect()
}

/// The script an interpreter's argv names: the first operand after the options
/// (`None` for `-c`/`-e`/`-m` code, which is the method's own, or no operand).
fn script_operand(argv: &[String]) -> Option<String> {
    for arg in argv.iter().skip(1) {
        match arg.as_str() {
            "-c" | "-e" | "-m" | "--eval" => return None,
            "-" => return None,
            a if a.starts_with('-') => continue,
            a => return Some(a.to_owned()),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedPaths {
        TrustedPaths {
            method_dir: "/workspace/method".into(),
            method_files: ["method.sh", "m.py", "src/train.py"]
                .map(String::from)
                .into(),
            system: vec!["/usr".into(), "/bin".into(), "/opt/aar".into()],
        }
    }

    #[test]
    fn parses_execve_lines_and_skips_failed_ones() {
        let text = r#"12 execve("/usr/bin/sh", ["sh", "run.sh"], 0x7ffd /* 5 vars */) = 0
13 execve("/usr/local/bin/python3", ["python3", "x.py"], 0x1 /* 5 vars */) = -1 ENOENT (No such file or directory)
13 execve("/usr/bin/python3", ["python3", "/tmp/prog \"7\".py", "--x"], 0x1 /* 5 vars */) = 0
14 +++ exited with 0 +++"#;
        let execs = parse_trace(text);
        assert_eq!(execs.len(), 2);
        assert_eq!(execs[0].argv, vec!["sh", "run.sh"]);
        assert_eq!(execs[1].path, "/usr/bin/python3");
        assert_eq!(execs[1].argv, vec!["python3", "/tmp/prog \"7\".py", "--x"]);
    }

    #[test]
    fn calls_split_by_concurrent_processes_are_counted_unless_they_failed() {
        // strace's own output for programs started at once (stderr format, `[pid N]`).
        let text = r#"execve("/usr/bin/sh", ["sh", "-c", "run"], 0x7ffd /* 4 vars */) = 0
[pid    41] execve("/usr/bin/python3", ["python3", "/tmp/p_1.py"], 0x55 /* 4 vars */ <unfinished ...>
[pid    42] execve("/usr/bin/python3", ["python3", "/tmp/p_2.py"], 0x55 /* 4 vars */ <unfinished ...>
[pid    43] execve("/opt/aar/bin/python3", ["python3", "/tmp/p_3.py"], 0x55 /* 4 vars */ <unfinished ...>
[pid    41] <... execve resumed>)       = 0
[pid    43] <... execve resumed>)       = -1 ENOENT (No such file or directory)
[pid    44] execve("/usr/bin/python3", ["python3", "/tmp/p_4.py"], 0x55 /* 4 vars */ <unfinished ...>
[pid    42] <... execve resumed>)       = 0
44  execve("/usr/bin/python3", ["python3", "/tmp/p_5.py"], 0x55 /* 4 vars */) = 0"#;
        let scripts: Vec<String> = parse_trace(text)
            .iter()
            .map(|e| e.argv.last().cloned().unwrap_or_default())
            .collect();
        // p_3 failed; p_4 was never resumed: counted, a start the trace cannot rule out.
        assert_eq!(
            scripts,
            vec![
                "run",
                "/tmp/p_1.py",
                "/tmp/p_2.py",
                "/tmp/p_5.py",
                "/tmp/p_4.py"
            ]
        );
    }

    #[test]
    fn own_code_and_tools_are_trusted_and_task_programs_are_not() {
        let exec = |path: &str, argv: &[&str]| Exec {
            path: path.into(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        };
        let execs = vec![
            exec("/usr/bin/sh", &["sh", "method.sh"]),
            exec("/opt/aar/bin/aar", &["aar", "run-method"]),
            exec("/usr/bin/python3", &["python3", "-c", "print(1)"]),
            exec(
                "/usr/bin/python3.11",
                &["python3", "/workspace/method/m.py"],
            ),
            exec("/usr/bin/python3", &["python3", "/tmp/row_17.py"]),
            exec("/workspace/scratch/a.out", &["./a.out"]),
            exec("/usr/bin/bash", &["bash", "../escape.sh"]),
            exec("/usr/bin/python3", &["python3", "./src//train.py"]),
            exec("/workspace/method/src/train.py", &["src/train.py"]),
            // Written by the run into its own (writable) directory, or run from elsewhere.
            exec("/usr/bin/python3", &["python3", "p_3.py"]),
            exec("/usr/bin/python3", &["python3", "/workspace/method/gen.py"]),
            exec("/workspace/method/a.out", &["/workspace/method/a.out"]),
        ];
        let foreign = foreign_execs(&execs, &trusted());
        let paths: Vec<&str> = foreign
            .iter()
            .map(|e| e.argv.last().map_or("", |a| a.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![
                "/tmp/row_17.py",
                "./a.out",
                "../escape.sh",
                "p_3.py",
                "/workspace/method/gen.py",
                "/workspace/method/a.out"
            ]
        );
    }
}
