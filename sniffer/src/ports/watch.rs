//! Watching `PORTS_FILE` (the pod's annotations, a downward-API volume) for a new
//! `tcp-sniffer/ports`: the I/O around [`podinfo::ports_change`].
//!
//! The file is read again on every tick (the kubelet replaces it by swapping a `..data` symbolic
//! link, which a watch on the file itself would miss) and looked at only when its text changed.

use std::path::PathBuf;

use super::podinfo::{self, PortsChange};
use cli_support::small_file::{SmallFileError, read_small_file};

/// The most a pod's annotations file can hold: Kubernetes caps all annotations at 256 KiB
/// together; the rest is room for quoting.
pub const MAX_PORTS_FILE_BYTES: u64 = 1 << 20;

/// What a changed file says.
#[derive(Debug)]
pub enum Seen {
    /// The file was read; this is what it asks of the ports.
    Change(PortsChange),
    /// The file cannot be read (said once, until it can be read again or fails another way).
    Unreadable(SmallFileError),
}

/// The file and the last text read from it.
#[derive(Debug)]
pub struct PortsWatch {
    path: PathBuf,
    /// The ports the sniffer started with, which a pod without the annotation keeps.
    initial: Vec<u16>,
    /// The text last read, or the last read error's message.
    last: Option<Result<Vec<u8>, String>>,
}

impl PortsWatch {
    /// Watches `path` for a sniffer started with `initial` ports.
    #[must_use]
    pub fn new(path: PathBuf, initial: Vec<u16>) -> Self {
        Self {
            path,
            initial,
            last: None,
        }
    }

    /// The watched file.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads the file; `None` when nothing changed since the last read (same text, or the same
    /// error), else what it asks of the `current` ports.
    pub fn poll(&mut self, current: &[u16]) -> Option<Seen> {
        let read = read_small_file(&self.path, MAX_PORTS_FILE_BYTES);
        let key = match &read {
            Ok(bytes) => Ok(bytes.clone()),
            Err(err) => Err(err.to_string()),
        };
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        self.last = Some(key);
        Some(match read {
            Ok(bytes) => Seen::Change(podinfo::ports_change(
                &String::from_utf8_lossy(&bytes),
                current,
                &self.initial,
            )),
            Err(err) => Seen::Unreadable(err),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_changed_file_is_looked_at() {
        let dir = std::env::temp_dir().join(format!("ports-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("annotations");
        let mut watch = PortsWatch::new(path.clone(), vec![8080]);
        assert!(matches!(
            watch.poll(&[8080]),
            Some(Seen::Unreadable(SmallFileError::Io(_)))
        ));
        assert!(watch.poll(&[8080]).is_none(), "the same error is said once");
        std::fs::write(&path, "tcp-sniffer/ports=\"9090\"\n").unwrap();
        assert!(matches!(
            watch.poll(&[8080]),
            Some(Seen::Change(PortsChange::Apply(ports))) if ports == [9090]
        ));
        assert!(watch.poll(&[9090]).is_none());
        std::fs::write(&path, "tcp-sniffer/ports=\"0\"\n").unwrap();
        assert!(matches!(
            watch.poll(&[9090]),
            Some(Seen::Change(PortsChange::Refuse(_)))
        ));
        assert!(watch.poll(&[9090]).is_none(), "a refusal is said once");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            watch.poll(&[9090]),
            Some(Seen::Change(PortsChange::Apply(ports))) if ports == [8080]
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
