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

/// Writes `bytes` to `path` with mode 0600 (tokens, specs and configs that name secrets
/// or labeled data): a temporary sibling (private from its creation), fsync, rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// The token in `path` (a researcher's or a verification worker's), which others
/// must not be able to read: a token readable by the group or by everyone may already
/// be someone else's. Errors name the file and what to do.
pub fn read_private_token(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("token file {}: {e}", path.display()))
    };
    let mode = std::fs::metadata(path).map_err(named)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "token file {}: readable by other users (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    let token = std::fs::read_to_string(path).map_err(named)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(std::io::Error::other(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_owned())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::read_private_token;

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("token");
        std::fs::write(&path, "worker-token-0123456789\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = read_private_token(&path).map_err(|e| e.to_string());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("readable by other users") && e.contains("640")),
            "{refused:?}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_private_token(&path).map_err(|e| e.to_string()),
            Ok("worker-token-0123456789".to_owned())
        );
        std::fs::write(&path, " \n").unwrap_or_else(|e| panic!("{e}"));
        let empty = read_private_token(&path).map_err(|e| e.to_string());
        assert!(empty.is_err_and(|e| e.contains("is empty")));
        let missing = read_private_token(&dir.path().join("nope")).map_err(|e| e.to_string());
        assert!(missing.is_err_and(|e| e.contains("token file") && e.contains("nope")));
    }
}
