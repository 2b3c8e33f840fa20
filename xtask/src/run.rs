//! `cargo xtask run`: builds everything and runs the sniffer in the foreground.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::Result;

use crate::{cmd, ebpf, workspace_root};

/// Builds the kernel object and the release binary, then replaces this process with the sniffer
/// so signals (Ctrl-C, SIGTERM) reach it directly.
pub fn run(sniffer_args: &[String]) -> Result<()> {
    ebpf::build()?;
    cmd::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--package", "sniffer"])
            .current_dir(workspace_root()),
    )?;
    let binary = ebpf::target_dir().join("release/sniffer");
    let err = Command::new(&binary).args(sniffer_args).exec();
    Err(anyhow::Error::new(err).context(format!("cannot run {}", binary.display())))
}
