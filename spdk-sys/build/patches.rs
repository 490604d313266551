//! The vendored patches (`vendor/patches/*.patch`): which, in which order,
//! and applying them to a fresh copy of the source.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::make::run_cmd;

/// The patches in `dir`, in the order of their names (`0001-...`).
pub(crate) fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut patches: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    Ok(patches)
}

/// Applies `patches` to the tree at `root`, each logged to `log`.
pub(crate) fn apply(root: &Path, patches: &[PathBuf], log: &Path) -> Result<(), String> {
    for patch in patches {
        let file = File::open(patch).map_err(|e| format!("{}: {e}", patch.display()))?;
        run_cmd(
            Command::new("patch")
                .args(["-p1", "--forward", "--batch"])
                .current_dir(root)
                .stdin(file),
            &format!("applying {}", patch.display()),
            Some(log),
        )?;
    }
    Ok(())
}
