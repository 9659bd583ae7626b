//! Small file-system helpers: atomic writes, directory sizes, effective uid.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary sibling, fsync, rename,
/// fsync of the directory.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Total size in bytes of the regular files under `dir` (symbolic links are
/// not followed and count as nothing).
pub(crate) fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                // Allocated blocks, so sparse files cannot hide their size the other way round.
                total = total.saturating_add(meta.len().max(meta.blocks().saturating_mul(512)));
            }
        }
    }
    Ok(total)
}

/// The effective uid of this process (the owner of `/proc/self`).
pub(crate) fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}
