//! What a researcher's workspace starts with: `README-aar.md` (features as `.npy`,
//! training plans, methods as entries) and `method-template/`, a working method to copy.
//! Written once; a researcher's own edits are never overwritten on a resumed campaign.

use std::path::Path;

use aar_agents::sandbox::RunAs;

use crate::error::{CampaignError, Result};

/// The workbench guide's file name in each workspace.
pub const README_FILE: &str = "README-aar.md";
/// The method template's directory in each workspace.
pub const TEMPLATE_DIR: &str = "method-template";

const README: &str = include_str!("workbench/README-aar.md");

/// Writes the guide and the template into `workspace` where they are missing, owned by
/// the sandbox's uid so the researcher can edit them.
pub fn furnish(workspace: &Path, run_as: RunAs) -> Result<()> {
    let readme = workspace.join(README_FILE);
    if !readme.exists() {
        std::fs::write(&readme, README).map_err(CampaignError::io(&readme))?;
        hand_over(&readme, run_as)?;
    }
    let template = workspace.join(TEMPLATE_DIR);
    if !template.exists() {
        aar_oversight::template::write_template(&template).map_err(CampaignError::io(&template))?;
        hand_over(&template, run_as)?;
        for (name, _) in aar_oversight::template::TEMPLATE_FILES {
            hand_over(&template.join(name), run_as)?;
        }
    }
    Ok(())
}

fn hand_over(path: &Path, run_as: RunAs) -> Result<()> {
    if let RunAs::Uid { uid, gid } = run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(CampaignError::io(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_gets_the_guide_and_the_template_once() {
        let dir = tempfile::tempdir().unwrap();
        furnish(dir.path(), RunAs::Current).unwrap();
        let readme = std::fs::read_to_string(dir.path().join(README_FILE)).unwrap();
        assert!(readme.contains("aar run-method --task /data/<task> --plan"));
        assert!(dir.path().join(TEMPLATE_DIR).join("method.py").is_file());
        // A researcher's edit survives a resumed campaign.
        std::fs::write(dir.path().join(README_FILE), "my notes").unwrap();
        furnish(dir.path(), RunAs::Current).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(README_FILE)).unwrap(),
            "my notes"
        );
    }
}
