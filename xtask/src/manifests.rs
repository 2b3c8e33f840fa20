//! `cargo xtask check-manifests`: every kustomization renders and validates against the
//! Kubernetes schemas, the base's NetworkPolicy admits only the webhook and metrics ports, and
//! the example pod goes through the real injector over HTTPS and comes back as a valid pod with
//! the sniffer.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use crate::bootstrap;
use testbed::{cmd, injector::localhost_certs, paths::target_dir, paths::workspace_root};

/// Kustomizations to render, relative to `manifests/`.
const KUSTOMIZATIONS: &[&str] = &[
    "base",
    "overlays/cert-manager",
    "overlays/internal-ca",
    "overlays/fail-closed",
    "overlays/seccomp-localhost",
    "overlays/monitoring",
    "examples",
];
/// Oldest supported (native sidecars) and newest bundled schema versions.
const KUBERNETES_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Runs every check; fails on the first problem.
pub fn check() -> Result<()> {
    bootstrap::ensure_debian_packages(&[("kubectl", "kubectl")])?;
    let venv = bootstrap::ensure_python_venv()?;
    let root = workspace_root();
    let injector = cmd::build_binary("injector", false)?;

    // Rendered from a scratch copy: the internal-ca overlay needs certificates, which are
    // generated for the check and never written into the source tree.
    let scratch = target_dir().join("manifests-check");
    let _ = fs::remove_dir_all(&scratch);
    let manifests = scratch.join("manifests");
    copy_tree(&root.join("manifests"), &manifests)?;
    cmd::output(
        Command::new(&injector)
            .args(["gen-certs", "--out-dir"])
            .arg(manifests.join("overlays/internal-ca/certs")),
    )?;
    for kustomization in KUSTOMIZATIONS {
        let rendered = cmd::stdout(
            Command::new("kubectl")
                .arg("kustomize")
                .arg(manifests.join(kustomization)),
        )
        .with_context(|| format!("manifests/{kustomization} does not render"))?;
        let file = scratch.join(format!("{}.yaml", kustomization.replace('/', "-")));
        fs::write(&file, &rendered)?;
        let objects = rendered.lines().filter(|l| l.starts_with("kind:")).count();
        for version in KUBERNETES_VERSIONS {
            // Kinds without a bundled schema (cert-manager's) are reported as warnings.
            let out = cmd::output(
                Command::new(venv.join("kubernetes-validate"))
                    .args(["--strict", "--quiet", "-k", version])
                    .arg(&file),
            )
            .with_context(|| {
                format!("manifests/{kustomization} is invalid for Kubernetes {version}")
            })?;
            let warnings = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("WARN"))
                .count()
                + String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| l.starts_with("WARN"))
                    .count();
            eprintln!(
                "manifests/{kustomization}: {objects} objects valid for Kubernetes {version}{}",
                if warnings > 0 {
                    format!(" ({warnings} without a bundled schema)")
                } else {
                    String::new()
                }
            );
        }
    }
    seccomp_component_follows_base(&root)?;
    cmd::run(
        Command::new(venv.join("python"))
            .arg(root.join("xtask/python/network_policy.py"))
            .arg(scratch.join("base.yaml")),
    )
    .context("the base manifests' NetworkPolicy check failed")?;
    roundtrip(&injector, &scratch, &venv, &root)
}

/// The seccomp component repeats the base's injector options (kustomize cannot patch inside the
/// JSON string): they must differ only in `seccompProfile`, which must name the file the
/// component's DaemonSet installs.
fn seccomp_component_follows_base(root: &Path) -> Result<()> {
    let component = root.join("manifests/components/seccomp-localhost");
    let options = |path: &Path| -> Result<(Vec<String>, String)> {
        let text = fs::read_to_string(path)?;
        let mut seccomp = String::new();
        let mut rest = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if line.trim_start().starts_with("\"seccompProfile\"") {
                seccomp = line.trim().to_owned();
            } else {
                rest.push(line.to_owned());
            }
        }
        Ok((rest, seccomp))
    };
    let (base, _) = options(&root.join("manifests/base/configmap.yaml"))?;
    let (ours, seccomp) = options(&component.join("injector-options.yaml"))?;
    anyhow::ensure!(
        base == ours,
        "manifests/components/seccomp-localhost/injector-options.yaml differs from the base's \
         options in more than seccompProfile"
    );
    let profile = seccomp
        .split("\"localhostProfile\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the component's options set no localhostProfile")?;
    let daemonset = fs::read_to_string(component.join("daemonset.yaml"))?;
    anyhow::ensure!(
        daemonset.contains(&format!("--to=/host/seccomp/{profile}"))
            && daemonset.contains("path: /var/lib/kubelet/seccomp"),
        "the DaemonSet does not install {profile} under /var/lib/kubelet/seccomp"
    );
    eprintln!(
        "manifests/components/seccomp-localhost: options = base + Localhost {profile}, installed by the DaemonSet"
    );
    Ok(())
}

/// Serves the injector on loopback and sends it the example pod.
fn roundtrip(injector: &Path, scratch: &Path, venv: &Path, root: &Path) -> Result<()> {
    let certs = scratch.join("roundtrip-certs");
    localhost_certs(injector, &certs)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = cmd::KillOnDrop(
        Command::new(injector)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "off"])
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the injector")?,
    );
    cmd::wait_for_port(port, "the injector")?;
    let script: PathBuf = root.join("xtask/python/admission_roundtrip.py");
    cmd::run(
        Command::new(venv.join("python"))
            .arg(script)
            .arg(root.join("manifests/examples/test-pod.yaml"))
            .arg(format!("https://localhost:{port}/mutate"))
            .arg(certs.join("ca.crt"))
            .args(KUBERNETES_VERSIONS),
    )
    .context("the example pod's admission round trip failed")
}
