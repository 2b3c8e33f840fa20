//! Where the workspace and its build outputs are, for the tasks, checks and benchmarks that run
//! the built binaries.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate).
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testbed lives inside the workspace")
        .to_path_buf()
}

/// The workspace's target directory (`CARGO_TARGET_DIR` or `target/`), shared by all builds.
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}
