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

/// A file in the temporary directory that a test writes (a capture, a download), removed when
/// dropped, so a test leaves nothing behind whether it passes or fails.
#[derive(Debug)]
pub struct ScratchFile(PathBuf);

impl ScratchFile {
    /// `name` in the temporary directory; nothing is created yet.
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self(std::env::temp_dir().join(name))
    }
}

impl std::ops::Deref for ScratchFile {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
