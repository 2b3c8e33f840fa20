//! The Kubernetes manifests: every kustomization renders and validates against the Kubernetes
//! schemas, the seccomp component repeats the base's options, the base's NetworkPolicy admits
//! only the webhook and metrics ports, and the example pod goes through the real injector over
//! HTTPS and comes back as a valid pod with the sniffer.
//!
//! Needs kubectl and the test Python (with `kubernetes-validate`), which `cargo xtask test`
//! installs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context as _, Result, ensure};
use e2e::{binary, python, tool};
use testbed::{
    cmd,
    injector::{localhost_certs, serve_on_loopback},
    paths::{target_dir, workspace_root},
};

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

/// The test Python, when the check can run (kubectl and the Python are here).
fn tools(test: &str) -> Option<PathBuf> {
    if !tool(test, "kubectl") {
        return None;
    }
    python(test)
}

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

/// Every kustomization rendered once into a scratch directory, as `<name>.yaml`. Rendered from a
/// scratch copy: the internal-ca overlay needs certificates, which are generated for the check
/// and never written into the source tree.
fn rendered() -> &'static Result<PathBuf, String> {
    static RENDERED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        (|| -> Result<PathBuf> {
            let scratch = target_dir().join("manifests-check");
            let _ = fs::remove_dir_all(&scratch);
            let manifests = scratch.join("manifests");
            copy_tree(&workspace_root().join("manifests"), &manifests)?;
            cmd::output(
                Command::new(binary("injector"))
                    .args(["gen-certs", "--out-dir"])
                    .arg(manifests.join("overlays/internal-ca/certs")),
            )?;
            for kustomization in KUSTOMIZATIONS {
                let text = cmd::stdout(
                    Command::new("kubectl")
                        .arg("kustomize")
                        .arg(manifests.join(kustomization)),
                )
                .with_context(|| format!("manifests/{kustomization} does not render"))?;
                fs::write(scratch.join(file_name(kustomization)), text)?;
            }
            Ok(scratch)
        })()
        .map_err(|err| format!("{err:#}"))
    })
}

fn file_name(kustomization: &str) -> String {
    format!("{}.yaml", kustomization.replace('/', "-"))
}

/// Every kustomization renders, and is valid for the oldest and the newest Kubernetes; every
/// invalid one is named, not only the first.
#[test]
fn every_kustomization_renders_and_validates() {
    let Some(python) = tools("every_kustomization_renders_and_validates") else {
        return;
    };
    let scratch = rendered().as_ref().expect("the manifests render");
    let validate = python.with_file_name("kubernetes-validate");
    let mut failures = Vec::new();
    for kustomization in KUSTOMIZATIONS {
        let file = scratch.join(file_name(kustomization));
        for version in KUBERNETES_VERSIONS {
            // Kinds without a bundled schema (cert-manager's) are reported as warnings.
            let checked = cmd::output(
                Command::new(&validate)
                    .args(["--strict", "--quiet", "-k", version])
                    .arg(&file),
            );
            if let Err(err) = checked {
                failures.push(format!(
                    "manifests/{kustomization} is invalid for Kubernetes {version}: {err:#}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The seccomp component repeats the base's injector options (kustomize cannot patch inside the
/// JSON string): they must differ only in `seccompProfile`, which must name the file the
/// component's DaemonSet installs.
#[test]
fn the_seccomp_component_follows_the_base() -> Result<()> {
    let root = workspace_root();
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
    ensure!(
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
    ensure!(
        daemonset.contains(&format!("--to=/host/seccomp/{profile}"))
            && daemonset.contains("path: /var/lib/kubelet/seccomp"),
        "the DaemonSet does not install {profile} under /var/lib/kubelet/seccomp"
    );
    Ok(())
}

/// The base's NetworkPolicy admits only the webhook and metrics ports
/// (`e2e/python/network_policy.py` on the rendered base).
#[test]
fn the_network_policy_admits_only_the_webhook_and_metrics_ports() -> Result<()> {
    let Some(python) = tools("the_network_policy_admits_only_the_webhook_and_metrics_ports") else {
        return Ok(());
    };
    let scratch = rendered().as_ref().expect("the manifests render");
    cmd::run(
        Command::new(python)
            .arg(workspace_root().join("e2e/python/network_policy.py"))
            .arg(scratch.join("base.yaml")),
    )
    .context("the base manifests' NetworkPolicy check failed")
}

/// Serves the injector on loopback and sends it the example pod; the answer, applied, is a
/// valid pod for every Kubernetes version checked (`e2e/python/admission_roundtrip.py`).
#[test]
fn the_example_pod_goes_through_the_injector() -> Result<()> {
    let Some(python) = tools("the_example_pod_goes_through_the_injector") else {
        return Ok(());
    };
    let root = workspace_root();
    let injector = binary("injector");
    let certs = target_dir().join("manifests-roundtrip-certs");
    let _ = fs::remove_dir_all(&certs);
    localhost_certs(&injector, &certs)?;
    let port = e2e::free_port();
    let _server = serve_on_loopback(&injector, &certs, port)?;
    cmd::run(
        Command::new(python)
            .arg(root.join("e2e/python/admission_roundtrip.py"))
            .arg(root.join("manifests/examples/test-pod.yaml"))
            .arg(format!("https://localhost:{port}/mutate"))
            .arg(certs.join("ca.crt"))
            .args(KUBERNETES_VERSIONS),
    )
    .context("the example pod's admission round trip failed")
}
