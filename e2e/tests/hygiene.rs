//! Repository checks that need no build: no private key is tracked outside test fixtures, the
//! Dockerfile's default target is the sniffer image, and every version written outside Cargo.toml
//! (the Dockerfile's label default, the manifests' image tags) is the workspace's. They read the
//! git checkout (`git ls-files`).

use std::{fs, process::Command};

use anyhow::{Context as _, Result, bail, ensure};

use testbed::{cmd, paths::workspace_root};

/// Whether `text` holds a PEM private key: a line that is exactly `-----BEGIN … PRIVATE KEY-----`
/// (PKCS#8, PKCS#1 `RSA`, SEC1 `EC`, `ENCRYPTED`, `OPENSSH` …).
fn holds_private_key(text: &str) -> bool {
    text.lines().any(|line| {
        line.trim_end()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("PRIVATE KEY-----"))
            .is_some_and(|kind| kind.chars().all(|c| c.is_ascii_uppercase() || c == ' '))
    })
}

/// Test fixtures may hold throwaway keys; nothing else may.
fn is_fixture(path: &str) -> bool {
    path.split('/')
        .any(|part| part == "tests" || part == "fixtures")
}

/// Fails when a tracked file outside test fixtures holds a private key.
#[test]
fn no_private_key_is_tracked_outside_fixtures() -> Result<()> {
    let listed = cmd::stdout(
        Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(workspace_root()),
    )
    .context("cannot list the tracked files (is this a git checkout?)")?;
    let mut found = Vec::new();
    for path in listed
        .split('\0')
        .filter(|p| !p.is_empty() && !is_fixture(p))
    {
        // Binary or unreadable (deleted but not yet committed) files hold no PEM text.
        let Ok(bytes) = fs::read(workspace_root().join(path)) else {
            continue;
        };
        if holds_private_key(&String::from_utf8_lossy(&bytes)) {
            found.push(path.to_owned());
        }
    }
    if !found.is_empty() {
        bail!(
            "private keys are tracked in git outside test fixtures: {found:?}; remove them, \
             consider them compromised, and generate new ones outside the repository"
        );
    }
    Ok(())
}

/// The names of the Dockerfile's stages, in order (`FROM … AS name`; unnamed stages are empty).
fn stages(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
                .then(|| {
                    let words: Vec<&str> = words.collect();
                    match words.as_slice() {
                        [.., as_, name] if as_.eq_ignore_ascii_case("AS") => (*name).to_owned(),
                        _ => String::new(),
                    }
                })
        })
        .collect()
}

/// `docker build .` without `--target` builds the last stage: it must be the sniffer image, as
/// the deployment guide's build command assumes.
#[test]
fn the_dockerfile_builds_the_sniffer_by_default() -> Result<()> {
    let path = workspace_root().join("Dockerfile");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let stages = stages(&text);
    ensure!(
        stages.last().is_some_and(|s| s == "sniffer"),
        "the Dockerfile's last stage is {:?}, not \"sniffer\": `docker build .` without --target \
         would not build the sniffer image (stages: {stages:?})",
        stages.last()
    );
    Ok(())
}

/// Every `tcp-sniffer:X` or `tcp-sniffer-injector:X` image tag in the manifests, and the
/// Dockerfile's `ARG VERSION=X`, is the workspace version.
#[test]
fn versions_match_the_workspace() -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let mut wrong = Vec::new();
    let dockerfile = fs::read_to_string(workspace_root().join("Dockerfile"))?;
    for value in dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ARG VERSION="))
    {
        if value != version {
            wrong.push(format!("Dockerfile: ARG VERSION={value}"));
        }
    }
    let listed = cmd::stdout(
        Command::new("git")
            .args(["ls-files", "manifests"])
            .current_dir(workspace_root()),
    )?;
    for path in listed.lines() {
        let text = fs::read_to_string(workspace_root().join(path))?;
        for tag in image_tags(&text) {
            if tag != version {
                wrong.push(format!("{path}: image tag {tag}"));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "versions differ from the workspace's {version}: {wrong:?}"
    );
    Ok(())
}

/// The tags of `tcp-sniffer` and `tcp-sniffer-injector` image references in `text`.
fn image_tags(text: &str) -> Vec<&str> {
    let mut tags = Vec::new();
    for (at, _) in text.match_indices("tcp-sniffer") {
        let rest = &text[at + "tcp-sniffer".len()..];
        let rest = rest.strip_prefix("-injector").unwrap_or(rest);
        if let Some(tag) = rest.strip_prefix(':') {
            let end = tag
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                .unwrap_or(tag.len());
            if tag[..end].starts_with(|c: char| c.is_ascii_digit()) {
                tags.push(&tag[..end]);
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_found_in_every_pem_form() {
        for kind in ["", "RSA ", "EC ", "ENCRYPTED ", "OPENSSH "] {
            let pem = format!(
                "x\n-----BEGIN {kind}PRIVATE KEY-----\nMIIB\n-----END {kind}PRIVATE KEY-----\n"
            );
            assert!(holds_private_key(&pem), "{kind:?}");
        }
        assert!(!holds_private_key("-----BEGIN CERTIFICATE-----\nMIIB\n"));
        // Code that mentions the marker is not a key.
        assert!(!holds_private_key(
            r#"assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));"#
        ));
    }

    #[test]
    fn fixtures_are_exempt() {
        assert!(is_fixture("injector/tests/webhook/keys.pem"));
        assert!(is_fixture("shared/fixtures/key.pem"));
        assert!(!is_fixture("manifests/overlays/internal-ca/certs/tls.key"));
    }

    #[test]
    fn image_tags_are_found() {
        let text = "image: tcp-sniffer:0.1.0\n\"image\": \"reg/tcp-sniffer-injector:1.2.3\",\ntcp-sniffer/inject: x\n";
        assert_eq!(image_tags(text), ["0.1.0", "1.2.3"]);
    }

    #[test]
    fn stages_are_read_in_order() {
        let text = "ARG X=1\nFROM ${B} AS build\nRUN x\nfrom scratch as prebuilt\nFROM build\nFROM scratch AS sniffer\n";
        assert_eq!(stages(text), ["build", "prebuilt", "", "sniffer"]);
    }
}
