//! Repository checks that need no build: no private key is tracked outside test fixtures, and the
//! Dockerfile's default target is the sniffer image.

use std::{fs, process::Command};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cmd, workspace_root};

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
pub fn no_private_keys() -> Result<()> {
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
    eprintln!("repository: no private key tracked outside test fixtures");
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
pub fn dockerfile_default_is_sniffer() -> Result<()> {
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
    fn stages_are_read_in_order() {
        let text = "ARG X=1\nFROM ${B} AS build\nRUN x\nfrom scratch as prebuilt\nFROM build\nFROM scratch AS sniffer\n";
        assert_eq!(stages(text), ["build", "prebuilt", "", "sniffer"]);
    }
}
