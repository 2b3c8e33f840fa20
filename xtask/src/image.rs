//! `cargo xtask image` builds the two images with buildah from the Dockerfile, using binaries
//! built here (`BINARIES=prebuilt`: no base image can be pulled on these machines), into the
//! private storage the end-to-end checks run them from (`testbed::containers`); the checks are
//! `e2e/tests/image.rs` and `e2e/tests/pod.rs`.

use std::{fs, process::Command};

use anyhow::{Context as _, Result};
use testbed::{
    cmd,
    containers::{Containers, INJECTOR_IMAGE, MUSL, SNIFFER_IMAGE},
    paths::{target_dir, workspace_root},
};

use crate::{bootstrap, ebpf};

/// `cargo xtask image`: builds static binaries and both images into the checks' storage.
pub fn build() -> Result<()> {
    bootstrap::ensure_debian_packages(&[
        ("buildah", "buildah"),
        ("podman", "podman"),
        ("runc", "runc"),
        ("musl-gcc", "musl-tools"),
    ])?;
    cmd::run(Command::new("rustup").args(["target", "add", MUSL]))?;
    ebpf::build()?;
    let root = workspace_root();
    cmd::run(
        cmd::cargo()
            .args(["build", "--release", "--locked", "--target", MUSL])
            .args(["--package", "sniffer", "--package", "injector"])
            // ring compiles C for the target: Debian's musl wrapper is named musl-gcc.
            .env("CC_x86_64_unknown_linux_musl", "musl-gcc"),
    )?;
    let containers = Containers::open()?;
    let staged = containers.staging().clone();
    let release = target_dir().join(MUSL).join("release");
    for binary in ["sniffer", "injector"] {
        fs::copy(release.join(binary), staged.join(binary))?;
    }
    fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        staged.join("ca-certificates.crt"),
    )
    .context(
        "no /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates) to put in the image",
    )?;
    // The sniffer image is built without `--target`, as the deployment guide's plain
    // `docker build .` does: the Dockerfile's last stage must be it.
    for (target, tag) in [(None, SNIFFER_IMAGE), (Some("injector"), INJECTOR_IMAGE)] {
        let mut build = containers.command("buildah");
        build
            .args(["build", "--build-arg", "BINARIES=prebuilt"])
            .args([
                "--build-arg",
                concat!("VERSION=", env!("CARGO_PKG_VERSION")),
            ]);
        if let Some(target) = target {
            build.args(["--target", target]);
        }
        build
            .args(["-t", tag, "-f"])
            .arg(root.join("Dockerfile"))
            .arg(&root);
        cmd::run(&mut build).with_context(|| format!("building {tag} failed"))?;
    }
    // Each rebuild leaves the previous images untagged; vfs keeps full copies of them.
    cmd::run(
        containers
            .command("podman")
            .args(["image", "prune", "--force"]),
    )?;
    cmd::run(containers.command("podman").args(["images"]))
}
