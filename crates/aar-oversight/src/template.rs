//! The method template every researcher's workspace starts with (`aar method new`): a
//! manifest and a Python method that reproduces vanilla through a training plan, so a new
//! idea starts from code that already passes `aar method check` and the verifier.

use std::path::Path;

/// The template's files: (name, contents).
pub const TEMPLATE_FILES: [(&str, &str); 2] = [
    (
        crate::method::MANIFEST_FILE,
        include_str!("template/aar-method.json"),
    ),
    ("method.py", include_str!("template/method.py")),
];

/// Writes the template into `dir` (created if missing). An existing file is never
/// overwritten: the error names it.
pub fn write_template(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, contents) in TEMPLATE_FILES {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std::io::Write::write_all(&mut file, contents.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_manifest_is_valid_and_names_its_script() {
        let dir = tempfile::tempdir().unwrap();
        write_template(dir.path()).unwrap();
        let manifest = crate::method::Manifest::read(dir.path()).unwrap();
        assert_eq!(
            manifest.entrypoint,
            crate::method::Entrypoint::Command(vec!["python3".into(), "method.py".into()])
        );
        let again = write_template(dir.path()).unwrap_err().to_string();
        assert!(again.contains("aar-method.json"), "{again}");
    }
}
