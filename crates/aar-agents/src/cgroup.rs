//! A control group per sandboxed command: one memory limit over all its processes
//! (their pages, and the sandbox's tmpfs `/tmp` with them), one process limit, one
//! CPU share.
//!
//! Resource limits (`prlimit`) hold per process: two processes of one sandbox could
//! each take the whole address-space limit. A control group holds them together. aar
//! uses cgroup v2 where the machine delegates its `memory` and `pids` controllers to
//! aar's own group, otherwise cgroup v1's `memory` and `pids` hierarchies (with
//! `cpu` when mounted) under aar's own groups there, and otherwise says so once and
//! falls back to the per-process limits. Groups are made under the group aar
//! itself runs in, so whatever limit that group has still holds over every sandbox.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where aar can make control groups, found once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// A cgroup v2 group whose children get `memory` and `pids` (and `cpu` when
    /// `cpu` is true).
    V2 {
        /// The group new groups are made in.
        parent: PathBuf,
        /// Whether the `cpu` controller is enabled for children.
        cpu: bool,
    },
    /// cgroup v1: the groups of this process in the `memory` and `pids` hierarchies,
    /// and in `cpu` when it is mounted and writable.
    V1 {
        /// This process's group in the memory hierarchy.
        memory: PathBuf,
        /// This process's group in the pids hierarchy.
        pids: PathBuf,
        /// This process's group in the cpu hierarchy.
        cpu: Option<PathBuf>,
    },
}

impl Hierarchy {
    /// The hierarchy this machine offers, or `None` (with one warning per process
    /// saying why) when commands fall back to per-process limits.
    pub fn get() -> Option<&'static Hierarchy> {
        static FOUND: OnceLock<Option<Hierarchy>> = OnceLock::new();
        FOUND
            .get_or_init(|| match Hierarchy::detect() {
                Ok(found) => {
                    tracing::debug!(?found, "sandboxes get a control group per command");
                    Some(found)
                }
                Err(why) => {
                    tracing::warn!(
                        "no control groups for sandboxes ({why}): memory and process limits \
                         hold per process (prlimit), not per sandbox"
                    );
                    None
                }
            })
            .as_ref()
    }

    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup` and probes the groups.
    pub fn detect() -> Result<Hierarchy, String> {
        let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
        let mounts = parse_mountinfo(&read("/proc/self/mountinfo")?);
        let memberships = parse_proc_cgroup(&read("/proc/self/cgroup")?);
        let v2 = match own_group(&mounts, &memberships, None) {
            Some(dir) => match prepare_v2(&dir) {
                Ok(h) => return Ok(h),
                Err(why) => format!("cgroup v2 at {}: {why}", dir.display()),
            },
            None => "no cgroup v2 mount".to_owned(),
        };
        let v1 = |controller| {
            own_group(&mounts, &memberships, Some(controller))
                .filter(|dir| probe(dir).is_ok())
                .ok_or(controller)
        };
        match (v1("memory"), v1("pids")) {
            (Ok(memory), Ok(pids)) => Ok(Hierarchy::V1 {
                memory,
                pids,
                cpu: v1("cpu").ok(),
            }),
            (Err(missing), _) | (_, Err(missing)) => Err(format!(
                "{v2}; cgroup v1 `{missing}` is not mounted or not writable"
            )),
        }
    }
}

/// A mounted cgroup hierarchy: where it is mounted, the hierarchy path its root
/// shows, and its controllers (empty for v2).
#[derive(Debug)]
struct CgroupMount {
    mount_point: PathBuf,
    root: String,
    v2: bool,
    controllers: Vec<String>,
}

/// The cgroup mounts of a `/proc/self/mountinfo`.
fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next().unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(CgroupMount {
                mount_point: PathBuf::from(unescape_octal(left.get(4)?)),
                root: unescape_octal(left.get(3)?),
                v2,
                controllers: options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape_octal(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out += &rest[..at];
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out + rest
}

/// `(controllers, path)` of each line of `/proc/self/cgroup`; v2's line has no
/// controllers.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some((controllers, path.to_owned()))
        })
        .collect()
}

/// The directory of this process's own group: in the v2 hierarchy (`controller`
/// `None`) or in the v1 hierarchy that has `controller`.
fn own_group(
    mounts: &[CgroupMount],
    memberships: &[(Vec<String>, String)],
    controller: Option<&str>,
) -> Option<PathBuf> {
    let owns = |controllers: &[String]| match controller {
        None => controllers.is_empty(),
        Some(c) => controllers.iter().any(|x| x == c),
    };
    let mount = mounts
        .iter()
        .find(|m| m.v2 == controller.is_none() && (m.v2 || owns(&m.controllers)))?;
    let (_, path) = memberships.iter().find(|(c, _)| owns(c))?;
    let relative = path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(path);
    Some(mount.mount_point.join(relative.trim_start_matches('/')))
}

/// Whether a child group can be made (and removed) in `dir`.
fn probe(dir: &Path) -> std::io::Result<()> {
    let child = dir.join(format!("aar-probe-{}", std::process::id()));
    std::fs::create_dir(&child)?;
    std::fs::remove_dir(&child)
}

/// Enables `memory` and `pids` (and `cpu` if offered) for the children of `dir`.
/// A v2 group that holds processes cannot hand controllers to children; when this
/// process is the only one in it, it moves into a leaf of its own first.
fn prepare_v2(dir: &Path) -> Result<Hierarchy, String> {
    let offered = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("cgroup.controllers: {e}"))?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    for needed in ["memory", "pids"] {
        if !offered.contains(&needed) {
            return Err(format!("the `{needed}` controller is not delegated"));
        }
    }
    let cpu = offered.contains(&"cpu");
    let wanted = if cpu {
        "+memory +pids +cpu"
    } else {
        "+memory +pids"
    };
    let control = dir.join("cgroup.subtree_control");
    if std::fs::write(&control, wanted).is_err() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
            .map_err(|e| format!("cgroup.procs: {e}"))?;
        let me = std::process::id().to_string();
        if procs.split_whitespace().any(|pid| pid != me) {
            return Err("other processes share aar's group, so it cannot delegate \
                        controllers (run aar in a group of its own, e.g. \
                        `systemd-run --scope -p Delegate=yes`)"
                .to_owned());
        }
        let leaf = dir.join("aar-host");
        std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
        std::fs::write(leaf.join("cgroup.procs"), &me)
            .map_err(|e| format!("moving aar into {}: {e}", leaf.display()))?;
        std::fs::write(&control, wanted).map_err(|e| format!("{}: {e}", control.display()))?;
    }
    probe(dir).map_err(|e| format!("making a group: {e}"))?;
    Ok(Hierarchy::V2 {
        parent: dir.to_owned(),
        cpu,
    })
}

/// The limits a command's group enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Memory of all its processes together, tmpfs pages included, in bytes.
    pub memory_bytes: u64,
    /// Most processes and threads at once.
    pub processes: u64,
}

/// The control group of one running command; removed (its remaining processes
/// killed first) by [`CommandGroup::remove`] or on drop.
#[derive(Debug)]
pub struct CommandGroup {
    /// The group's directories, one per hierarchy (one on v2).
    dirs: Vec<PathBuf>,
    /// The file whose `oom_kill` line counts the processes killed at the limit.
    oom_file: PathBuf,
}

impl CommandGroup {
    /// Makes a fresh group in `hierarchy` with `limits`.
    pub fn create(hierarchy: &Hierarchy, limits: GroupLimits) -> std::io::Result<CommandGroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "aar-sandbox-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut group = CommandGroup {
            dirs: Vec::new(),
            oom_file: PathBuf::new(),
        };
        let make = |group: &mut CommandGroup, parent: &Path| -> std::io::Result<PathBuf> {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir)?;
            group.dirs.push(dir.clone());
            Ok(dir)
        };
        match hierarchy {
            Hierarchy::V2 { parent, .. } => {
                let dir = make(&mut group, parent)?;
                write(&dir, "memory.max", limits.memory_bytes)?;
                // Swap would let a balloon outgrow the limit slowly instead of dying.
                let _ = write(&dir, "memory.swap.max", 0);
                write(&dir, "pids.max", limits.processes)?;
                group.oom_file = dir.join("memory.events");
            }
            Hierarchy::V1 { memory, pids, cpu } => {
                let dir = make(&mut group, memory)?;
                write(&dir, "memory.limit_in_bytes", limits.memory_bytes)?;
                // Present only with swap accounting; the memory limit alone holds then.
                let _ = write(&dir, "memory.memsw.limit_in_bytes", limits.memory_bytes);
                group.oom_file = dir.join("memory.oom_control");
                let dir = make(&mut group, pids)?;
                write(&dir, "pids.max", limits.processes)?;
                if let Some(cpu) = cpu {
                    make(&mut group, cpu)?;
                }
            }
        }
        Ok(group)
    }

    /// The `cgroup.procs` files a process writes its pid to, to join the group.
    pub fn procs_files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.dirs.iter().map(|d| d.join("cgroup.procs"))
    }

    /// How many processes the kernel killed at the memory limit.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(&self.oom_file)
            .ok()
            .and_then(|text| {
                text.lines()
                    .filter_map(|l| l.split_once(' '))
                    .find(|(key, _)| *key == "oom_kill")
                    .and_then(|(_, n)| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Kills what is left in the group and removes it, retrying while the kernel
    /// finishes reaping.
    pub async fn remove(mut self) {
        for _ in 0..50 {
            self.kill_members();
            self.dirs.retain(|dir| std::fs::remove_dir(dir).is_err());
            if self.dirs.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(dirs = ?self.dirs, "control groups still busy; left in place");
        self.dirs.clear();
    }

    fn kill_members(&self) {
        for file in self.procs_files() {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for pid in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

impl Drop for CommandGroup {
    fn drop(&mut self) {
        // Best effort when `remove` was not awaited (a cancelled call).
        self.kill_members();
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn write(dir: &Path, file: &str, value: u64) -> std::io::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value.to_string())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw
";
    const PROC_CGROUP: &str = "\
8:pids:/
4:memory:/outer/api/abc
1:cpu,cpuacct:/x
0::/user.slice
";

    #[test]
    fn finds_own_groups_in_each_hierarchy() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        let cg = parse_proc_cgroup(PROC_CGROUP);
        let group = |c| own_group(&mounts, &cg, c);
        assert_eq!(
            group(Some("memory")),
            Some(PathBuf::from("/sys/fs/cgroup/memory/api/abc")),
            "the mount's root is stripped from the path"
        );
        assert_eq!(
            group(Some("pids")),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
        assert_eq!(
            group(Some("cpu")),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/x"))
        );
        assert_eq!(group(Some("blkio")), None);
        assert_eq!(
            group(None),
            Some(PathBuf::from("/sys/fs/cgroup/uni fied/user.slice"))
        );
    }

    #[test]
    fn oom_kills_are_read_from_either_version() {
        let dir = tempfile::tempdir().unwrap();
        let group = CommandGroup {
            dirs: Vec::new(),
            oom_file: dir.path().join("memory.oom_control"),
        };
        std::fs::write(
            &group.oom_file,
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(group.oom_kills(), 3, "v1 memory.oom_control");
        std::fs::write(&group.oom_file, "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n").unwrap();
        assert_eq!(group.oom_kills(), 2, "v2 memory.events");
        std::fs::write(&group.oom_file, "oom_kill_disable 0\n").unwrap();
        assert_eq!(group.oom_kills(), 0, "a kernel without the count");
    }

    /// On a machine with control groups: a process put in a group is killed and the
    /// group's directories are gone after `remove`.
    #[tokio::test]
    async fn remove_kills_what_is_left_and_deletes_the_group() {
        let Some(hierarchy) = Hierarchy::get() else {
            panic!("this machine kind offers control groups (cgroup v1 memory and pids)");
        };
        let limits = GroupLimits {
            memory_bytes: 64 << 20,
            processes: 8,
        };
        let group = CommandGroup::create(hierarchy, limits).unwrap();
        let dirs = group.dirs.clone();
        let files: Vec<PathBuf> = group.procs_files().collect();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo $$ > \"$1\" && exec sleep 100", "sh"])
            .arg(&files[0])
            .spawn()
            .unwrap();
        let members = || std::fs::read_to_string(&files[0]).unwrap();
        for _ in 0..100 {
            if !members().trim().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(members().trim(), child.id().to_string());
        let reaper = std::thread::spawn(move || child.wait().unwrap());
        group.remove().await;
        assert!(!reaper.join().unwrap().success(), "sleep was killed");
        for dir in dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }
}
