//! `injector install-seccomp-profile`: keeps the sniffer's seccomp profile installed in a node's
//! kubelet seccomp directory (the seccomp-localhost component's DaemonSet runs it on every node).
//!
//! The kubelet reads a `Localhost` profile when it creates a container: a missing or broken file
//! makes the sniffer container, and so the whole pod, fail to start. So the profile is checked
//! before it is written, written atomically, and re-checked periodically (a node restored from
//! an image, or a person deleting the file, gets it back).

use std::path::{Path, PathBuf};

use cli_support::small_file::{SmallFileError, read_small_file};

use serde_json::Value;
use thiserror::Error;

use crate::files;

/// The largest profile accepted (runtime default profiles are about 20 KiB).
pub const MAX_PROFILE_BYTES: u64 = 1024 * 1024;

/// Installing the profile failed.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The source profile cannot be read, or is not a regular file.
    #[error("cannot read the seccomp profile {path}: {problem}")]
    Read {
        /// The source file.
        path: PathBuf,
        /// Why.
        problem: SmallFileError,
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

/// The actions libseccomp (and so runc and crun) knows; a profile naming another fails every
/// container that uses it.
const ACTIONS: [&str; 9] = [
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];

/// The architectures libseccomp knows.
const ARCHITECTURES: [&str; 22] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
];

/// The comparison operators of a rule's `args`.
const OPERATORS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// `Ok` when `value` is a string among `known`; otherwise says what `what` holds instead.
fn known(value: Option<&Value>, known: &[&str], what: &str) -> Result<(), String> {
    match value {
        None => Err(format!("no {what}")),
        Some(Value::String(name)) if known.contains(&name.as_str()) => Ok(()),
        Some(other) => Err(format!("{what} {other} is not one of {}", known.join(", "))),
    }
}

/// Checks that `text` is a profile container runtimes load (Docker/OCI profile JSON): a known
/// `defaultAction`, known `architectures` (and `archMap` architectures), and a `syscalls` list
/// whose entries name system calls, carry a known action, and compare arguments with known
/// operators. Returns what is wrong otherwise.
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
/// assert!(check(br#"{"defaultAction":"SCMP_ACT_BOGUS","syscalls":[]}"#).is_err());
/// ```
pub fn check(text: &[u8]) -> Result<(), String> {
    let profile: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    known(profile.get("defaultAction"), &ACTIONS, "defaultAction")?;
    let arches = profile
        .get("architectures")
        .map(|a| a.as_array().ok_or("architectures is not a list"))
        .transpose()?;
    for (index, arch) in arches.into_iter().flatten().enumerate() {
        known(
            Some(arch),
            &ARCHITECTURES,
            &format!("architectures[{index}]"),
        )?;
    }
    let arch_map = profile
        .get("archMap")
        .map(|a| a.as_array().ok_or("archMap is not a list"))
        .transpose()?;
    for (index, entry) in arch_map.into_iter().flatten().enumerate() {
        let field = format!("archMap[{index}].architecture");
        known(entry.get("architecture"), &ARCHITECTURES, &field)?;
        let subs = entry.get("subArchitectures").and_then(Value::as_array);
        for (sub_index, sub) in subs.into_iter().flatten().enumerate() {
            let field = format!("archMap[{index}].subArchitectures[{sub_index}]");
            known(Some(sub), &ARCHITECTURES, &field)?;
        }
    }
    let syscalls = profile
        .get("syscalls")
        .and_then(Value::as_array)
        .ok_or("no syscalls list")?;
    for (index, rule) in syscalls.iter().enumerate() {
        let names = rule.get("names").and_then(Value::as_array);
        let is_name = |name: &Value| {
            name.as_str().is_some_and(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
        };
        if !names.is_some_and(|n| !n.is_empty() && n.iter().all(is_name)) {
            return Err(format!("syscalls[{index}] names no system calls"));
        }
        known(
            rule.get("action"),
            &ACTIONS,
            &format!("syscalls[{index}].action"),
        )?;
        let args = rule.get("args").and_then(Value::as_array);
        for (arg_index, arg) in args.into_iter().flatten().enumerate() {
            let field = format!("syscalls[{index}].args[{arg_index}].op");
            known(arg.get("op"), &OPERATORS, &field)?;
        }
    }
    Ok(())
}

/// Installs the profile at `source` as `target` unless `target` already holds exactly it; the
/// target's directory is created when missing. The profile is [checked](check) first, so that a
/// broken ConfigMap never replaces a working profile on the node.
///
/// Nothing is trusted on the way: `source` must be a regular file (a FIFO is refused at once, a
/// device is never read); `target`'s directory is reached without following a symbolic link at
/// any step ([`files::Dir`]); the installed file is compared only when its size is the profile's
/// (a 1 GiB file there is not read).
pub fn install(source: &Path, target: &Path) -> Result<Installed, ProfileError> {
    let text = read_small_file(source, MAX_PROFILE_BYTES).map_err(|problem| match problem {
        SmallFileError::TooLarge { max } => ProfileError::Invalid {
            path: source.to_owned(),
            reason: format!("larger than {max} bytes"),
        },
        problem => ProfileError::Read {
            path: source.to_owned(),
            problem,
        },
    })?;
    check(&text).map_err(|reason| ProfileError::Invalid {
        path: source.to_owned(),
        reason,
    })?;
    let write_error = |source| ProfileError::Write {
        path: target.to_owned(),
        source,
    };
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(write_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the target is not a file path",
        )));
    };
    let dir = files::Dir::open_no_links(dir).map_err(write_error)?;
    let name = name.to_string_lossy();
    let current = dir
        .read_at_most(&name, text.len() as u64)
        .map_err(write_error)?;
    if current.as_deref() == Some(text.as_slice()) {
        return Ok(Installed::Unchanged);
    }
    dir.replace(&name, &text, 0o644).map_err(write_error)?;
    Ok(Installed::Written)
}

#[cfg(test)]
mod tests {
    use std::fs;

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
            (
                r#"{"defaultAction":"ALLOW"}"#,
                "defaultAction \"ALLOW\" is not one of",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_BOGUS","syscalls":[]}"#,
                "defaultAction \"SCMP_ACT_BOGUS\" is not one of",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_Z80"],"syscalls":[]}"#,
                "architectures[0] \"SCMP_ARCH_Z80\" is not one of",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["x86"]}],"syscalls":[]}"#,
                "archMap[0].subArchitectures[0] \"x86\" is not one of",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["bpf"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_ABOUT"}]}]}"#,
                "syscalls[0].args[0].op \"SCMP_CMP_ABOUT\" is not one of",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["bpf; rm"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "syscalls[0] names no system calls",
            ),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#, "no syscalls list"),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
                "syscalls[0] names no system calls",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["bpf"]}]}"#,
                "no syscalls[0].action",
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
    fn a_fifo_source_is_refused_at_once() {
        let dir = scratch("fifo");
        let fifo = dir.join("source.json");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = install(&fifo, &dir.join("tcp-sniffer.json")).unwrap_err();
        assert!(
            error.to_string().ends_with("is not a regular file"),
            "{error}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_huge_installed_file_is_replaced_without_being_read() {
        let dir = scratch("huge");
        let source = dir.join("source.json");
        fs::write(&source, PROFILE).unwrap();
        let target = dir.join("tcp-sniffer.json");
        fs::File::create(&target).unwrap().set_len(1 << 30).unwrap();
        let peak = || {
            let status = fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                .unwrap()
        };
        let before = peak();
        assert_eq!(install(&source, &target).unwrap(), Installed::Written);
        assert!(
            peak() < before + 64 * 1024,
            "{before} KiB -> {} KiB",
            peak()
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), PROFILE);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_linked_directory_on_the_way_is_not_followed() {
        let dir = scratch("linked-dir");
        let source = dir.join("source.json");
        fs::write(&source, PROFILE).unwrap();
        let elsewhere = dir.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("profiles")).unwrap();
        let error = install(&source, &dir.join("profiles/tcp-sniffer.json")).unwrap_err();
        assert!(matches!(error, ProfileError::Write { .. }), "{error}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Missing directories are created as real ones.
        let nested = dir.join("kubelet/seccomp/profiles/tcp-sniffer.json");
        assert_eq!(install(&source, &nested).unwrap(), Installed::Written);
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
