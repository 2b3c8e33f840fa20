//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run`), set-up included.

use anyhow::Result;

use crate::{bootstrap, ebpf, image, seccomp};
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
    // The sniffer's start-up is traced to show it never reads the kernel's BTF.
    ("strace", "strace"),
];

/// What the pod check runs besides podman: a pause binary for the pod's infra container
/// (`kube play`), busybox for the app image, tshark to read the pulled captures.
const POD_PACKAGES: &[(&str, &str)] = &[
    ("catatonit", "catatonit"),
    ("busybox", "busybox-static"),
    ("tshark", "tshark"),
];

/// Installs what is missing, builds the kernel object, checks formatting, lints and the generated
/// seccomp profile, builds the images (as root), then runs every test: unit and integration
/// tests, and the end-to-end checks (`e2e/tests/`: repository hygiene, manifests, monitoring,
/// and as root the images and the injected pod under podman).
pub fn run(test_args: &[String]) -> Result<()> {
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
    if is_root() {
        // A generated file, like formatting: the shipped seccomp profile is still its
        // derivation (from a Debian package, which only root fetches here).
        seccomp::check_shipped()?;
        // The image and pod checks (e2e/tests/image.rs, pod.rs) run what this builds.
        bootstrap::ensure_debian_packages(POD_PACKAGES)?;
        image::build()?;
    } else {
        eprintln!("images not built: rootful podman needs root; the image and pod checks skip");
    }
    let mut test = cargo_test()?;
    cmd::run(test.arg("--workspace").args(test_args))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cargo test` with what the tests read from the environment: the test Python (the OTLP tests
/// parse bodies with the official protos, the manifest checks validate with
/// kubernetes-validate), and, as root, the demand that tests needing the kernel or a tool run:
/// a skip would hide a broken capture path.
fn cargo_test() -> Result<std::process::Command> {
    let venv = bootstrap::ensure_python_venv()?;
    let mut test = cmd::cargo();
    test.arg("test")
        .env("TCP_SNIFFER_PYTHON", venv.join("python"));
    if is_root() {
        test.env("TCP_SNIFFER_REQUIRE_PRIVILEGED", "1");
    }
    Ok(test)
}

/// `cargo xtask image-test` and `pod-test`: builds the images, then runs the end-to-end checks
/// of `e2e/tests/<checks>.rs` on them.
pub fn containers(checks: &str) -> Result<()> {
    bootstrap::ensure_debian_packages(&[("ip", "iproute2"), ("curl", "curl")])?;
    bootstrap::ensure_debian_packages(POD_PACKAGES)?;
    image::build()?;
    cmd::build_binary("injector", false)?;
    cmd::run(cargo_test()?.args(["--package", "e2e", "--test", checks]))
}

/// `cargo xtask check-manifests`: the manifest checks of the end-to-end suite
/// (`e2e/tests/manifests.rs`) alone, with kubectl installed and the injector built.
pub fn manifests() -> Result<()> {
    bootstrap::ensure_debian_packages(&[("kubectl", "kubectl")])?;
    cmd::build_binary("injector", false)?;
    cmd::run(cargo_test()?.args(["--package", "e2e", "--test", "manifests"]))
}
