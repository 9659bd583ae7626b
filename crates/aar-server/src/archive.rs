//! Safe handling of workspace archives (`.tar.gz`): checked on upload, and
//! extracted by the same rules.
//!
//! Accepted entries are regular files and directories with relative paths made
//! only of normal components: no absolute paths, no `..`, no symlinks or hard
//! links (so nothing can point out), no device files, FIFOs or other kinds. The
//! number of entries and the unpacked size are bounded, counted from the
//! actual bytes read, not from the headers' claims.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::{Archive, EntryType};

/// Limits on an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most entries.
    pub max_entries: usize,
    /// Largest total unpacked size, in bytes.
    pub max_unpacked_bytes: u64,
}

/// Why an archive is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    /// Not a readable gzip-compressed tar.
    #[error("not a valid .tar.gz: {0}")]
    Malformed(String),
    /// An entry's path is absolute, has `..`, or is otherwise not a plain relative path.
    #[error("unsafe path {0:?}: only relative paths without `..` are allowed")]
    UnsafePath(String),
    /// A symlink, hard link, device, FIFO or other non-regular entry.
    #[error("entry {path:?} is a {kind}; only regular files and directories are allowed")]
    ForbiddenEntry {
        /// Entry path.
        path: String,
        /// Its kind.
        kind: String,
    },
    /// Too many entries.
    #[error("more than {0} entries")]
    TooManyEntries(usize),
    /// Too large once unpacked.
    #[error("more than {0} bytes once unpacked")]
    TooLarge(u64),
    /// Writing the extracted files failed.
    #[error("extraction failed: {0}")]
    Io(String),
}

/// What a checked archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Regular files.
    pub files: usize,
    /// Total unpacked bytes.
    pub unpacked_bytes: u64,
}

fn safe_relative_path(raw: &[u8]) -> Result<PathBuf, ArchiveError> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let path = Path::new(&text);
    if text.is_empty() || text.contains('\0') || text.contains('\\') {
        return Err(ArchiveError::UnsafePath(text));
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::UnsafePath(text));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(ArchiveError::UnsafePath(text));
    }
    Ok(clean)
}

/// Walks every entry, checking it; `sink` receives each accepted entry.
fn walk(
    bytes: &[u8],
    limits: ArchiveLimits,
    mut sink: impl FnMut(&Path, bool, &[u8]) -> Result<(), ArchiveError>,
) -> Result<ArchiveSummary, ArchiveError> {
    let mut archive = Archive::new(GzDecoder::new(bytes));
    let entries = archive
        .entries()
        .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
    let mut summary = ArchiveSummary {
        files: 0,
        unpacked_bytes: 0,
    };
    let mut count = 0;
    let mut buffer = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::Malformed(e.to_string()))?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries(limits.max_entries));
        }
        let raw_path = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let is_dir = match kind {
            EntryType::Regular | EntryType::Continuous => false,
            EntryType::Directory => true,
            // PAX and GNU long-name headers are consumed by the tar reader itself.
            other => {
                return Err(ArchiveError::ForbiddenEntry {
                    path: String::from_utf8_lossy(&raw_path).into_owned(),
                    kind: format!("{other:?}"),
                });
            }
        };
        let path = safe_relative_path(&raw_path)?;
        buffer.clear();
        if !is_dir {
            let budget = limits.max_unpacked_bytes - summary.unpacked_bytes;
            let read = (&mut entry)
                .take(budget + 1)
                .read_to_end(&mut buffer)
                .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
            summary.unpacked_bytes += read as u64;
            if summary.unpacked_bytes > limits.max_unpacked_bytes {
                return Err(ArchiveError::TooLarge(limits.max_unpacked_bytes));
            }
            summary.files += 1;
        }
        sink(&path, is_dir, &buffer)?;
    }
    Ok(summary)
}

/// Checks an archive without writing anything.
pub fn inspect(bytes: &[u8], limits: ArchiveLimits) -> Result<ArchiveSummary, ArchiveError> {
    walk(bytes, limits, |_, _, _| Ok(()))
}

/// One file of an archive, for reading in the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Its text when it is UTF-8 and at most the asked size; `None` otherwise.
    pub text: Option<String>,
}

/// The archive's regular files (checked by the same rules as extraction), with
/// the text of those that are UTF-8 and at most `max_text_bytes` long.
pub fn files(
    bytes: &[u8],
    limits: ArchiveLimits,
    max_text_bytes: usize,
) -> Result<Vec<ArchiveFile>, ArchiveError> {
    let mut out = Vec::new();
    walk(bytes, limits, |path, is_dir, data| {
        if !is_dir {
            let text = (data.len() <= max_text_bytes)
                .then(|| std::str::from_utf8(data).ok().map(str::to_owned))
                .flatten();
            out.push(ArchiveFile {
                path: path.to_string_lossy().into_owned(),
                size: data.len() as u64,
                text,
            });
        }
        Ok(())
    })?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Checks the whole archive, then extracts it into `dest`, which must not exist
/// yet (so no pre-existing link inside it can redirect a write).
pub fn extract(
    bytes: &[u8],
    dest: &Path,
    limits: ArchiveLimits,
) -> Result<ArchiveSummary, ArchiveError> {
    inspect(bytes, limits)?;
    let io = |e: std::io::Error| ArchiveError::Io(e.to_string());
    std::fs::create_dir(dest).map_err(io)?;
    walk(bytes, limits, |path, is_dir, data| {
        let target = dest.join(path);
        if is_dir {
            std::fs::create_dir_all(&target).map_err(io)
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            // create_new: never follow or overwrite something already there.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(io)?;
            std::io::Write::write_all(&mut file, data).map_err(io)
        }
    })
}
