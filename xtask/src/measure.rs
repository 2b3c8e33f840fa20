//! `cargo xtask bench` and `cargo xtask soak`: install what the harness runs, build the release
//! binaries, then hand them to the harness (the `harness` crate), which measures.

use anyhow::Result;
use harness::{Built, bench::BenchArgs, soak::SoakArgs};
use testbed::cmd;

use crate::{bootstrap, ebpf};

/// The kernel object and the workspace's release binaries.
fn build_release() -> Result<Built> {
    ebpf::build()?;
    let sniffer = cmd::build_binary("sniffer", true)?;
    Ok(Built {
        injector: sniffer.with_file_name("injector"),
        sniffer,
    })
}

/// `cargo xtask bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    bootstrap::ensure_debian_packages(&harness::bench::packages(args))?;
    harness::bench::run(args, &build_release()?)
}

/// `cargo xtask soak`.
pub fn soak(args: &SoakArgs) -> Result<()> {
    bootstrap::ensure_debian_packages(harness::soak::PACKAGES)?;
    harness::soak::run(args, &build_release()?.sniffer)
}
