//! `cargo xtask fuzz`: runs every cargo-fuzz target for a bounded time (libFuzzer, nightly,
//! AddressSanitizer). Inputs that crash are left in `fuzz/artifacts/<target>/`; the corpus grows
//! in `fuzz/corpus/<target>/` (both git-ignored), seeded from the test fixtures.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{bootstrap, ebpf};
use testbed::{cmd, paths::workspace_root};

/// Targets and the directories that seed them (besides their own corpus).
const TARGETS: &[(&str, &[&str])] = &[
    ("admission_review", &["injector/tests/fixtures"]),
    ("packet_parse", &[]),
    ("record_decode", &[]),
    ("config_parse", &[]),
];

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
}

/// Installs cargo-fuzz when missing and runs the targets.
pub fn run(args: &FuzzArgs) -> Result<()> {
    // The sniffer library embeds the kernel object.
    ebpf::build()?;
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
            .context("cannot install cargo-fuzz")?;
    }
    let root = workspace_root();
    for (target, seeds) in TARGETS {
        if args.target.as_deref().is_some_and(|only| only != *target) {
            continue;
        }
        let corpus = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        cmd::run(
            bootstrap::rustup_run(bootstrap::EBPF_TOOLCHAIN, "cargo")
                .args(["fuzz", "run", "--fuzz-dir", "fuzz", target])
                .arg(&corpus)
                .args(seeds.iter().map(|s| root.join(s)))
                .arg("--")
                .arg(format!("-max_total_time={}", args.seconds))
                .current_dir(&root),
        )
        .with_context(|| {
            format!("fuzz target {target} found a crash (see fuzz/artifacts/{target}/)")
        })?;
    }
    Ok(())
}
