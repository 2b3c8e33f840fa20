//! Running the injector on loopback (benchmarks, manifest checks, image checks): throwaway
//! certificates.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::cmd;

/// Has `injector` write a CA and a `localhost` serving pair (valid a day) into `dir`.
pub fn localhost_certs(injector: &Path, dir: &Path) -> Result<()> {
    cmd::output(
        Command::new(injector)
            .args([
                "gen-certs",
                "--service",
                "localhost",
                "--days",
                "1",
                "--out-dir",
            ])
            .arg(dir),
    )
    .map(drop)
}
