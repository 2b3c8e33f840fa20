//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run`), set-up included.

use anyhow::Result;

use crate::{bootstrap, ebpf, hygiene, image, manifests, pod};
use testbed::{cmd, paths::workspace_root};

/// Commands the tests run, and the Debian packages that provide them.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    // The ndjson format is inserted into a real ClickHouse.
    ("clickhouse-server", "clickhouse-server"),
    // Connection records are checked against tshark's analysis of a tcpdump capture, under loss
    // induced with nftables.
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("nft", "nftables"),
    // Packet captures are pulled as a user would, with curl, and read with capinfos (tshark's).
    ("curl", "curl"),
    ("capinfos", "tshark"),
    // The monitoring component is checked with Prometheus' own tools and a real server, on the
    // manifests kubectl renders.
    ("promtool", "prometheus"),
    ("kubectl", "kubectl"),
];

/// Checks the repository (no tracked private key, the Dockerfile's default target), installs what
/// is missing, builds the kernel object, checks formatting and lints, runs the tests,
/// then checks the Kubernetes manifests and, as root, the images and the injected pod under
/// podman (`image-test` and `pod-test` on one build).
pub fn run(test_args: &[String]) -> Result<()> {
    hygiene::no_private_keys()?;
    hygiene::dockerfile_default_is_sniffer()?;
    hygiene::versions_match()?;
    bootstrap::ensure_debian_packages(TEST_PACKAGES)?;
    ebpf::build()?;
    let cargo = cmd::cargo;
    cmd::run(cargo().args(["fmt", "--all", "--check"]))?;
    cmd::run(
        bootstrap::rustup_run(bootstrap::EBPF_TOOLCHAIN, "cargo")
            .args(["fmt", "--check"])
            .current_dir(workspace_root().join("sniffer-ebpf")),
    )?;
    cmd::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The OTLP tests parse bodies with the official protos from this environment.
    let venv = bootstrap::ensure_python_venv()?;
    let mut test = cargo();
    test.args(["test", "--workspace"])
        .args(test_args)
        .env("TCP_SNIFFER_PYTHON", venv.join("python"));
    // As root, tests that need the kernel must run: a skip would hide a broken capture path.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        test.env("TCP_SNIFFER_REQUIRE_PRIVILEGED", "1");
    }
    cmd::run(&mut test)?;
    manifests::check()?;
    if root {
        let containers = image::build_images()?;
        image::verify_built(&containers)?;
        pod::run_built(&containers)
    } else {
        eprintln!("image-test and pod-test skipped: rootful podman needs root (run them as root)");
        Ok(())
    }
}
