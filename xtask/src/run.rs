//! `cargo xtask run`: builds everything and runs the sniffer in the foreground.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::Result;

use crate::ebpf;
use testbed::cmd;

/// Builds the kernel object and the release binary, then replaces this process with the sniffer
/// so signals (Ctrl-C, SIGTERM) reach it directly.
pub fn run(sniffer_args: &[String]) -> Result<()> {
    ebpf::build()?;
    let binary = cmd::build_binary("sniffer", true)?;
    let err = Command::new(&binary).args(sniffer_args).exec();
    Err(anyhow::Error::new(err).context(format!("cannot run {}", binary.display())))
}
