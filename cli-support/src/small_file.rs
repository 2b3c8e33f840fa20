//! Reading a small file named by the environment or a flag (`OUTPUT_CA_FILE`, `PORTS_FILE`, the
//! injector's options, certificate and key, a seccomp profile) without trusting it: a device
//! such as `/dev/zero` would be read until memory runs out, and opening a FIFO would wait for a
//! writer, ignoring SIGTERM meanwhile.

use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use thiserror::Error;

/// Why a small file could not be read.
#[derive(Debug, Error)]
pub enum SmallFileError {
    /// Opening or reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A device, FIFO, socket or directory.
    #[error("is not a regular file")]
    NotRegular,
    /// Larger than the caller allows.
    #[error("is larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
}

/// The bytes of the regular file at `path` (symbolic links followed), refused when larger than
/// `max` bytes, even if it grows while being read.
///
/// # Errors
///
/// See [`SmallFileError`].
pub fn read_small_file(path: &Path, max: u64) -> Result<Vec<u8>, SmallFileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(SmallFileError::NotRegular);
    }
    if metadata.len() > max {
        return Err(SmallFileError::TooLarge { max });
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(SmallFileError::TooLarge { max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_fifos_directories_and_large_files() {
        let dir = std::env::temp_dir().join(format!("small-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [Path::new("/dev/zero"), &fifo, &dir] {
            assert!(
                matches!(read_small_file(path, 10), Err(SmallFileError::NotRegular)),
                "{path:?}"
            );
        }
        let file = dir.join("file");
        std::fs::write(&file, b"0123456789a").unwrap();
        assert!(matches!(
            read_small_file(&file, 10),
            Err(SmallFileError::TooLarge { max: 10 })
        ));
        assert_eq!(read_small_file(&file, 11).unwrap(), b"0123456789a");
        assert!(matches!(
            read_small_file(&dir.join("missing"), 10),
            Err(SmallFileError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
