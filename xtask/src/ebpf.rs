//! `cargo xtask build-ebpf`: builds the kernel program for `bpfel-unknown-none`.

use std::{env, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::bootstrap;
use testbed::{cmd, paths::target_dir, paths::workspace_root};

/// Where the kernel object lands; `sniffer/build.rs` looks in the same place.
pub fn object_path() -> PathBuf {
    target_dir().join("bpfel-unknown-none/release/sniffer-ebpf")
}

/// Bootstraps the toolchain pieces and builds the kernel object; returns its path.
pub fn build() -> Result<PathBuf> {
    bootstrap::ensure_rust_src()?;
    let linker_dir = bootstrap::ensure_bpf_linker()?;
    let path = env::var_os("PATH").unwrap_or_default();
    let path = env::join_paths(std::iter::once(linker_dir).chain(env::split_paths(&path)))
        .context("PATH cannot hold the bpf-linker directory")?;
    cmd::run(
        bootstrap::rustup_run(bootstrap::EBPF_TOOLCHAIN, "cargo")
            .args([
                "build",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .arg("--target-dir")
            .arg(target_dir())
            .current_dir(workspace_root().join("sniffer-ebpf"))
            .env("PATH", path),
    )
    .context("building the kernel program failed")?;
    let object = object_path();
    anyhow::ensure!(
        object.is_file(),
        "the build produced no {}",
        object.display()
    );
    eprintln!("kernel object: {}", object.display());
    Ok(object)
}
