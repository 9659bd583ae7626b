//! Opaque identifiers for agent-facing copies.
//!
//! Source ids say where a row came from, and source order can carry labels (Rotten
//! Tomatoes is grouped by film: neighbouring source rows share a label far more often
//! than chance). So every identifier an agent sees is a keyed hash of the labeled
//! value: equal values stay equal within a copy (groups survive), nothing else about
//! the value, its order or its neighbours can be recovered without the key.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::TaskError;

/// Domain separation: a hash made here is never confused with any other use of the key.
const DOMAIN: &[u8] = b"aar-tasks/opaque-id/1";

/// A secret key for opaque ids: 32 random bytes. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct IdKey([u8; IdKey::LEN]);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// A key from given bytes (tests, or a key kept elsewhere).
    pub fn from_bytes(bytes: [u8; IdKey::LEN]) -> IdKey {
        IdKey(bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn random() -> Result<IdKey, TaskError> {
        let path = Path::new("/dev/urandom");
        let mut bytes = [0u8; IdKey::LEN];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|source| TaskError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(IdKey(bytes))
    }

    /// The key kept at `path` (mode 0600), created there on first use. A key file of the
    /// wrong length, or one other users may read, is an error rather than replaced: ids
    /// already handed to agents were made with it.
    pub fn load_or_create(path: &Path) -> Result<IdKey, TaskError> {
        match std::fs::read(path) {
            Ok(bytes) => return IdKey::checked(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TaskError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let key = IdKey::random()?;
        key.create(path)?;
        // Whoever created the file first wins; everyone then uses the file's key.
        let bytes = std::fs::read(path).map_err(|source| TaskError::Io {
            path: path.to_owned(),
            source,
        })?;
        IdKey::checked(path, &bytes)
    }

    fn checked(path: &Path, bytes: &[u8]) -> Result<IdKey, TaskError> {
        let bad = |message: String| TaskError::BadKey {
            path: path.to_owned(),
            message,
        };
        let mode = std::fs::metadata(path)
            .map_err(|source| TaskError::Io {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "readable by other users (mode {:o}); it must be 0600",
                mode & 0o777
            )));
        }
        let bytes: [u8; IdKey::LEN] = bytes.try_into().map_err(|_| {
            bad(format!(
                "holds {} bytes, expected {}",
                bytes.len(),
                IdKey::LEN
            ))
        })?;
        Ok(IdKey(bytes))
    }

    /// Writes the key to a private temporary file and links it into place, so `path`
    /// appears whole or not at all and an existing key is never overwritten.
    fn create(&self, path: &Path) -> Result<(), TaskError> {
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| TaskError::Io { path: p, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io(&partial))?;
        file.write_all(&self.0).map_err(io(&partial))?;
        file.sync_all().map_err(io(&partial))?;
        let linked = std::fs::hard_link(&partial, path);
        std::fs::remove_file(&partial).map_err(io(&partial))?;
        match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(path)(e)),
            _ => Ok(()),
        }
    }

    /// The opaque id of `value` in `field`: `g` and 16 hex digits of
    /// SHA-256(domain, key, field, value) (lengths prefixed, so no two inputs share an
    /// encoding). The key is a fixed-length prefix and the digest is cut to 64 bits, so
    /// length extension buys nothing; 64 bits keep collisions out of copies of millions
    /// of rows.
    pub fn opaque(&self, field: &str, value: &Value) -> String {
        let value = value.to_string();
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update(self.0);
        for part in [field.as_bytes(), value.as_bytes()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("g{hex}")
    }
}
