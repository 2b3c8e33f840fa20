//! Replacing files safely: what `gen-certs` and `install-seccomp-profile` write.

use std::{fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Writes `contents` to a new file beside `path` created with `mode` (`O_EXCL`: never an existing
/// file or link), then renames it over `path`: readers see the old file or the new one, never a
/// partial one, and a symlink at `path` is replaced, not written through.
///
/// # Examples
///
/// ```
/// let dir = std::env::temp_dir().join(format!("files-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// injector::files::replace(&dir.join("a.json"), b"{}", 0o644).unwrap();
/// assert_eq!(std::fs::read(dir.join("a.json")).unwrap(), b"{}");
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(std::io::Error::other)?;
    let temporary = path.with_file_name(format!(
        ".{name}.{}.tmp",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            // The umask may have narrowed the mode; never widened it: set it exactly.
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}
