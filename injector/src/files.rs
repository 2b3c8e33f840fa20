//! Replacing files safely: what `gen-certs` and `install-seccomp-profile` write, the latter in a
//! directory reached without following links ([`Dir`]).

use std::{
    ffi::CString,
    fs,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::OpenOptionsExt as _,
    },
    path::Path,
};

/// A new hidden name beside `name`, random so that no existing file or link is ever opened.
fn temporary_name(name: &str) -> std::io::Result<String> {
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(std::io::Error::other)?;
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(".{name}.{hex}.tmp"))
}

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
    let temporary = path.with_file_name(temporary_name(&name)?);
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

/// A directory reached without following a symbolic link at any step, for writing where a link
/// could send a privileged writer elsewhere (`install-seccomp-profile` runs as root in the node's
/// kubelet directory). Every operation is relative to its descriptor, so a link swapped in after
/// it was opened changes nothing.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

/// `name` as a C string, refusing a path where a single name is expected.
fn c_name(name: &str) -> std::io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// The result of a system call returning a descriptor or -1.
fn owned(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Dir {
    /// Opens the absolute directory `path` one component at a time, creating missing ones (mode
    /// 0755) and refusing any component that is a symbolic link (`ELOOP`) or not a directory.
    pub fn open_no_links(path: &Path) -> std::io::Result<Self> {
        if !path.is_absolute() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the directory must be an absolute path",
            ));
        }
        let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY;
        // SAFETY: a valid NUL-terminated path.
        let mut dir = Self {
            fd: owned(unsafe { libc::open(c"/".as_ptr(), flags) })?,
        };
        for component in path.components() {
            let std::path::Component::Normal(name) = component else {
                continue;
            };
            let name = c_name(&name.to_string_lossy())?;
            let at = dir.fd.as_raw_fd();
            // SAFETY: `at` is an open directory and `name` a valid NUL-terminated name.
            let mut fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
            if fd < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::NotFound {
                // SAFETY: as above.
                if unsafe { libc::mkdirat(at, name.as_ptr(), 0o755) } < 0 {
                    let err = std::io::Error::last_os_error();
                    if err.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(err);
                    }
                }
                // SAFETY: as above.
                fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
            }
            dir = Self { fd: owned(fd)? };
        }
        Ok(dir)
    }

    /// The bytes of regular file `name` in this directory if it holds at most `max` bytes; `None`
    /// when it is missing, a link, not a regular file or larger (nothing is read then).
    pub fn read_at_most(&self, name: &str, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        let c = c_name(name)?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: an open directory and a valid NUL-terminated name.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) };
        let file = match owned(fd) {
            Ok(fd) => fs::File::from(fd),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
            Err(err) => return Err(err),
        };
        let metadata = file.metadata()?;
        if !metadata.is_file() || metadata.len() > max {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        file.take(max + 1).read_to_end(&mut bytes)?;
        Ok((bytes.len() as u64 <= max).then_some(bytes))
    }

    /// As [`replace`], inside this directory: a new file created with `mode` beside `name`,
    /// renamed over it.
    pub fn replace(&self, name: &str, contents: &[u8], mode: u32) -> std::io::Result<()> {
        let target = c_name(name)?;
        let temporary = c_name(&temporary_name(name)?)?;
        let at = self.fd.as_raw_fd();
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: an open directory and a valid NUL-terminated name.
        let fd = unsafe { libc::openat(at, temporary.as_ptr(), flags, mode) };
        let written = owned(fd).map(fs::File::from).and_then(|mut file| {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            file.write_all(contents)?;
            file.sync_all()?;
            // SAFETY: both names are valid and relative to the same open directory.
            if unsafe { libc::renameat(at, temporary.as_ptr(), at, target.as_ptr()) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
        if written.is_err() {
            // SAFETY: as above.
            unsafe { libc::unlinkat(at, temporary.as_ptr(), 0) };
        }
        written
    }
}
