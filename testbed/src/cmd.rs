//! Running external programs with errors that say which command failed.

use std::{
    path::PathBuf,
    process::{Child, Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::paths::{target_dir, workspace_root};

/// Renders a command line for messages.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("+ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed: {status}");
    }
    Ok(())
}

/// Runs `cmd`, captures its output and fails unless it exits successfully.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let line = display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs `cmd` and returns its standard output as text.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Whether `cargo run` set `name` for the running binary itself (it describes its package).
fn set_for_xtask(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

/// The `cargo` that runs xtask, in the workspace root, without the variables `cargo run` set
/// for xtask: build scripts that watch them (ring's watches `CARGO_MANIFEST_DIR`) would rerun
/// and rebuild everything a plain `cargo build --release` already built.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_for_xtask) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The build of the workspace's binaries: exactly the build contract's `cargo build [--release]`.
///
/// Never `--package`: cargo unifies dependency features over the packages selected, so building
/// one binary alone compiles its dependencies with other features and rebuilds everything a
/// plain `cargo build --release` already built (minutes on a fresh machine).
fn build_command(release: bool) -> Command {
    let mut build = cargo();
    build.arg("build");
    if release {
        build.arg("--release");
    }
    build
}

/// Builds the workspace's binaries (release or debug profile) and returns the path of `binary`.
pub fn build_binary(binary: &str, release: bool) -> Result<PathBuf> {
    run(&mut build_command(release))?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join(binary))
}

/// A child process killed (and reaped) when this guard is dropped, however the task ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 10 s until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "{what} did not start listening on port {port}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The artifacts of `cargo build --release` (the build contract) are reused: the same
    /// packages, hence the same features, and none of the variables `cargo run` set for xtask
    /// (which made ring's build script rerun and a first `cargo xtask run` rebuild for minutes).
    #[test]
    fn binaries_are_built_as_the_build_contract_builds_them() {
        for (release, args) in [(true, vec!["build", "--release"]), (false, vec!["build"])] {
            let command = build_command(release);
            let got: Vec<_> = command.get_args().map(|a| a.to_str().unwrap()).collect();
            assert_eq!(got, args);
            // `cargo test` sets these for the test binary as `cargo run` does for xtask.
            assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
            let removed: Vec<_> = command
                .get_envs()
                .filter(|(_, value)| value.is_none())
                .map(|(name, _)| name.to_str().unwrap().to_owned())
                .collect();
            for name in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_PKG_VERSION"] {
                assert!(
                    std::env::var_os(name).is_some(),
                    "{name} is not set for tests"
                );
                assert!(removed.iter().any(|r| r == name), "{name} is passed on");
            }
            assert!(
                !removed
                    .iter()
                    .any(|r| r == "CARGO_TARGET_DIR" || r == "CARGO_HOME")
            );
        }
    }
}
