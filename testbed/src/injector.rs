//! Running the injector on loopback (benchmarks, manifest checks, image checks): throwaway
//! certificates, and the server itself.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

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

/// Starts `injector serve` on `127.0.0.1:port` with the serving pair [`localhost_certs`] wrote
/// into `certs`, no metrics port and its output discarded, and waits until it listens; it is
/// stopped when the guard drops.
pub fn serve_on_loopback(injector: &Path, certs: &Path, port: u16) -> Result<cmd::KillOnDrop> {
    let server = cmd::KillOnDrop(
        Command::new(injector)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "off"])
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            // Decision lines at info would only be discarded (and, in a benchmark, measured).
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the injector")?,
    );
    cmd::wait_for_port(port, "the injector")?;
    Ok(server)
}
