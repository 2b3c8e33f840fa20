//! The sniffer's seccomp profile: the runtime default profile plus `bpf`, nothing more.
//!
//! It is derived from Docker's default profile as Debian 12 ships it
//! (`golang-github-docker-docker-dev`, `profiles/seccomp/default.json`): the lineage containerd's
//! `RuntimeDefault` comes from, which is what most Kubernetes nodes apply. (containers/common's
//! default, which podman and CRI-O apply, allows `unshare`, `mount` and `ptrace` without
//! `CAP_SYS_ADMIN`: a profile built on it would filter less than `RuntimeDefault` on containerd.)
//! `cargo xtask seccomp-profile` writes it into the seccomp-localhost component; `cargo xtask
//! pod-test` checks that the committed file is still what this derivation makes, then runs the
//! sniffer under it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use crate::bootstrap;
use testbed::{cmd, paths::workspace_root};

/// The Debian package holding Docker's default profile, and the profile's path in it.
const PACKAGE: &str = "golang-github-docker-docker-dev";
const IN_PACKAGE: &str =
    "./usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";
/// The shipped profile, relative to the workspace.
pub const PROFILE_PATH: &str = "manifests/components/seccomp-localhost/tcp-sniffer.json";

/// The profile's path in this checkout.
pub fn shipped() -> PathBuf {
    workspace_root().join(PROFILE_PATH)
}

/// Docker's default profile, extracted from the Debian package into the tools directory (the
/// package itself is not installed: it is Go source with a long dependency list).
fn runtime_default() -> Result<PathBuf> {
    let dir = bootstrap::tools_dir()?.join("docker-seccomp");
    let profile = dir.join(IN_PACKAGE);
    if profile.is_file() {
        return Ok(profile);
    }
    fs::create_dir_all(&dir)?;
    let download = |dir: &Path| {
        cmd::run(
            Command::new("apt-get")
                .args(["download", "-qq", PACKAGE])
                .current_dir(dir),
        )
    };
    if download(&dir).is_err() {
        cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
        download(&dir).with_context(|| format!("cannot download {PACKAGE}"))?;
    }
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no {PACKAGE} .deb"))?;
    cmd::run(
        Command::new("sh")
            .arg("-c")
            .arg(r#"dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "$3""#)
            .args(["sh"])
            .arg(&deb)
            .arg(&dir)
            .arg(IN_PACKAGE),
    )
    .with_context(|| format!("cannot extract {IN_PACKAGE} from {}", deb.display()))?;
    fs::remove_file(&deb)?;
    Ok(profile)
}

/// The runtime default with `bpf` allowed whatever the capabilities: the default allows it only
/// with `CAP_SYS_ADMIN`; the sniffer holds `CAP_BPF` instead, and the kernel still checks that
/// capability for every map and program. `bpf` is taken out of the capability-gated rule and
/// allowed by a rule of its own, so the profile says it in one place. The rule is not gated on
/// `CAP_BPF` (`includes.caps`): runtimes differ in whether the container's capabilities are known
/// when they evaluate such conditions.
pub fn derive() -> Result<String> {
    let source = runtime_default()?;
    let text =
        fs::read_to_string(&source).with_context(|| format!("cannot read {}", source.display()))?;
    let mut profile: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", source.display()))?;
    let syscalls = profile["syscalls"]
        .as_array_mut()
        .with_context(|| format!("{} has no syscalls list", source.display()))?;
    let mut gated = 0;
    for rule in syscalls.iter_mut() {
        let names_bpf = rule["names"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n == "bpf"));
        if !names_bpf {
            continue;
        }
        ensure!(
            rule["action"] == "SCMP_ACT_ALLOW"
                && rule["includes"]["caps"] == json!(["CAP_SYS_ADMIN"]),
            "{} treats bpf in an unexpected rule: {rule}",
            source.display()
        );
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| n != "bpf");
        }
        gated += 1;
    }
    ensure!(
        gated == 1,
        "{} has {gated} rules for bpf, expected the one gated on CAP_SYS_ADMIN",
        source.display()
    );
    syscalls.push(json!({
        "names": ["bpf"],
        "action": "SCMP_ACT_ALLOW",
        "comment": "tcp-sniffer: its maps and socket filter, with CAP_BPF instead of CAP_SYS_ADMIN",
    }));
    let mut out = serde_json::to_string_pretty(&profile)?;
    out.push('\n');
    Ok(out)
}

/// `cargo xtask seccomp-profile`: writes the derived profile into the component.
pub fn write() -> Result<()> {
    let profile = derive()?;
    fs::write(shipped(), profile)?;
    eprintln!("wrote {PROFILE_PATH}");
    Ok(())
}

/// Fails unless the shipped profile is exactly what [`derive`] makes here.
pub fn check_shipped() -> Result<()> {
    let shipped =
        fs::read_to_string(shipped()).with_context(|| format!("cannot read {PROFILE_PATH}"))?;
    ensure!(
        shipped == derive()?,
        "{PROFILE_PATH} is not Docker's default profile ({PACKAGE}) plus bpf: \
         run `cargo xtask seccomp-profile` and review the difference"
    );
    Ok(())
}
