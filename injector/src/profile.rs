//! `injector install-seccomp-profile`: keeps the sniffer's seccomp profile installed in a node's
//! kubelet seccomp directory (the seccomp-localhost component's DaemonSet runs it on every node).
//!
//! The kubelet reads a `Localhost` profile when it creates a container: a missing or broken file
//! makes the sniffer container, and so the whole pod, fail to start. So the profile is checked
//! before it is written, written atomically, and re-checked periodically (a node restored from
//! an image, or a person deleting the file, gets it back).

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde_json::Value;
use thiserror::Error;

use crate::files;

/// The largest profile accepted (runtime default profiles are about 20 KiB).
pub const MAX_PROFILE_BYTES: u64 = 1024 * 1024;

/// Installing the profile failed.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The source profile cannot be read.
    #[error("cannot read the seccomp profile {path}")]
    Read {
        /// The source file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The source is not a seccomp profile a runtime would load.
    #[error("{path} is not a usable seccomp profile: {reason}")]
    Invalid {
        /// The source file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The target cannot be written.
    #[error("cannot write the seccomp profile to {path}")]
    Write {
        /// The target file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The target was missing or different, and now holds the profile.
    Written,
    /// The target already held exactly the profile.
    Unchanged,
}

/// Checks that `text` has the shape container runtimes load (Docker/OCI profile JSON): an object
/// with a `SCMP_ACT_*` `defaultAction` and a `syscalls` list whose entries name system calls and
/// an action. Returns what is wrong otherwise.
///
/// # Examples
///
/// ```
/// use injector::profile::check;
///
/// let ok = br#"{"defaultAction":"SCMP_ACT_ERRNO",
///              "syscalls":[{"names":["bpf"],"action":"SCMP_ACT_ALLOW"}]}"#;
/// assert!(check(ok).is_ok());
/// assert_eq!(check(b"{}").unwrap_err(), "no defaultAction");
/// ```
pub fn check(text: &[u8]) -> Result<(), String> {
    let profile: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let action = |value: &Value| value.as_str().is_some_and(|a| a.starts_with("SCMP_ACT_"));
    match profile.get("defaultAction") {
        None => return Err("no defaultAction".to_owned()),
        Some(value) if !action(value) => {
            return Err(format!("defaultAction {value} is not an SCMP_ACT_ action"));
        }
        Some(_) => {}
    }
    let syscalls = profile
        .get("syscalls")
        .and_then(Value::as_array)
        .ok_or("no syscalls list")?;
    for (index, rule) in syscalls.iter().enumerate() {
        let names = rule.get("names").and_then(Value::as_array);
        if !names.is_some_and(|n| !n.is_empty() && n.iter().all(Value::is_string)) {
            return Err(format!("syscalls[{index}] names no system calls"));
        }
        if !rule.get("action").is_some_and(action) {
            return Err(format!("syscalls[{index}] has no SCMP_ACT_ action"));
        }
    }
    Ok(())
}

/// Installs the profile at `source` as `target` unless `target` already holds exactly it; the
/// target's directory is created when missing. The profile is [checked](check) first, so that a
/// broken ConfigMap never replaces a working profile on the node.
pub fn install(source: &Path, target: &Path) -> Result<Installed, ProfileError> {
    let mut text = Vec::new();
    fs::File::open(source)
        .and_then(|file| file.take(MAX_PROFILE_BYTES + 1).read_to_end(&mut text))
        .map_err(|source_error| ProfileError::Read {
            path: source.to_owned(),
            source: source_error,
        })?;
    let invalid = |reason: String| ProfileError::Invalid {
        path: source.to_owned(),
        reason,
    };
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(invalid(format!("larger than {MAX_PROFILE_BYTES} bytes")));
    }
    check(&text).map_err(invalid)?;
    // A link at the target is replaced, never followed: compare only a regular file's bytes.
    let current = fs::symlink_metadata(target)
        .ok()
        .filter(fs::Metadata::is_file)
        .and_then(|_| fs::read(target).ok());
    if current.as_deref() == Some(text.as_slice()) {
        return Ok(Installed::Unchanged);
    }
    let write_error = |source| ProfileError::Write {
        path: target.to_owned(),
        source,
    };
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).map_err(write_error)?;
    }
    files::replace(target, &text, 0o644).map_err(write_error)?;
    Ok(Installed::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["bpf","read"],"action":"SCMP_ACT_ALLOW"}]}"#;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("profile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn broken_profiles_are_named() {
        for (text, reason) in [
            ("[", "not JSON"),
            ("{}", "no defaultAction"),
            (r#"{"defaultAction":"ALLOW"}"#, "is not an SCMP_ACT_ action"),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#, "no syscalls list"),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
                "syscalls[0] names no system calls",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["bpf"]}]}"#,
                "syscalls[0] has no SCMP_ACT_ action",
            ),
        ] {
            let error = check(text.as_bytes()).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
        assert_eq!(check(PROFILE.as_bytes()), Ok(()));
    }

    #[test]
    fn the_shipped_profile_passes() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/components/seccomp-localhost/tcp-sniffer.json");
        check(&fs::read(shipped).unwrap()).unwrap();
    }

    #[test]
    fn installs_once_then_leaves_an_identical_file_alone() {
        let dir = scratch("once");
        let source = dir.join("source.json");
        fs::write(&source, PROFILE).unwrap();
        let target = dir.join("kubelet/seccomp/profiles/tcp-sniffer.json");
        assert_eq!(install(&source, &target).unwrap(), Installed::Written);
        assert_eq!(fs::read_to_string(&target).unwrap(), PROFILE);
        assert_eq!(install(&source, &target).unwrap(), Installed::Unchanged);
        fs::write(&target, "edited").unwrap();
        assert_eq!(install(&source, &target).unwrap(), Installed::Written);
        assert_eq!(fs::read_to_string(&target).unwrap(), PROFILE);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_link_at_the_target_is_replaced_not_written_through() {
        let dir = scratch("link");
        let source = dir.join("source.json");
        fs::write(&source, PROFILE).unwrap();
        let elsewhere = dir.join("elsewhere");
        fs::write(&elsewhere, PROFILE).unwrap();
        let target = dir.join("tcp-sniffer.json");
        std::os::unix::fs::symlink(&elsewhere, &target).unwrap();
        assert_eq!(install(&source, &target).unwrap(), Installed::Written);
        assert!(fs::symlink_metadata(&target).unwrap().is_file());
        fs::write(&elsewhere, "untouched").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), PROFILE);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_invalid_source_never_replaces_the_installed_profile() {
        let dir = scratch("invalid");
        let source = dir.join("source.json");
        let target = dir.join("tcp-sniffer.json");
        fs::write(&target, PROFILE).unwrap();
        fs::write(&source, r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).unwrap();
        let error = install(&source, &target).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("is not a usable seccomp profile: no syscalls list"),
            "{error}"
        );
        fs::write(&source, vec![b' '; MAX_PROFILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            install(&source, &target),
            Err(ProfileError::Invalid { .. })
        ));
        assert!(matches!(
            install(&dir.join("missing.json"), &target),
            Err(ProfileError::Read { .. })
        ));
        assert_eq!(fs::read_to_string(&target).unwrap(), PROFILE);
        fs::remove_dir_all(dir).unwrap();
    }
}
