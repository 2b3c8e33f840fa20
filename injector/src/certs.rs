//! `injector gen-certs`: a CA and a serving certificate for the webhook Service, for clusters
//! without cert-manager (the "internal CA" option).

use std::{fs, path::Path};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use thiserror::Error;

use crate::files;
use time::{Duration, OffsetDateTime};

/// Generating or writing the certificates failed.
#[derive(Debug, Error)]
pub enum CertsError {
    /// rcgen refused the parameters.
    #[error("cannot generate the certificates")]
    Generate(#[from] rcgen::Error),
    /// `--days` outside [`DAYS`].
    #[error("--days {0} is out of range: certificates are valid from 1 to 36500 days")]
    Days(i64),
    /// A file cannot be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// PEM-encoded CA certificate, serving certificate and serving key.
#[derive(Debug)]
pub struct GeneratedCerts {
    /// The CA certificate (`ca.crt`, the webhook's `caBundle`).
    pub ca_pem: String,
    /// The serving certificate (`tls.crt`).
    pub cert_pem: String,
    /// The serving key (`tls.key`).
    pub key_pem: String,
}

/// The DNS names the API server may use for `service` in `namespace`.
#[must_use]
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

/// The validity `gen-certs --days` accepts: a day to a hundred years.
pub const DAYS: std::ops::RangeInclusive<i64> = 1..=36_500;

/// Generates a CA and a certificate for `names`, valid for `days` days from now (in [`DAYS`]).
pub fn generate(names: Vec<String>, days: i64) -> Result<GeneratedCerts, CertsError> {
    if !DAYS.contains(&days) {
        return Err(CertsError::Days(days));
    }
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are behind.
    generate_between(
        names,
        now - Duration::minutes(5),
        now + Duration::days(days),
    )
}

/// Generates a CA and a certificate for `names`, valid from `not_before` to `not_after`.
pub fn generate_between(
    names: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<GeneratedCerts, CertsError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "tcp-sniffer injector CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let common_name = names.first().cloned().unwrap_or_default();
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, common_name);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate()?;
    let issuer = Issuer::new(ca, ca_key);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(GeneratedCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl GeneratedCerts {
    /// The `caBundle` value of a MutatingWebhookConfiguration (base64 of the CA PEM).
    #[must_use]
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// A `kubernetes.io/tls` Secret holding the pair and the CA, as YAML.
    #[must_use]
    pub fn secret_yaml(&self, name: &str, namespace: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\ndata:\n  ca.crt: {}\n  tls.crt: {}\n  tls.key: {}\n",
            b64(&self.ca_pem),
            b64(&self.cert_pem),
            b64(&self.key_pem)
        )
    }

    /// Writes `ca.crt`, `tls.crt` (mode 0644) and `tls.key` (mode 0600) into `dir`. Each file is
    /// written to a new temporary file with its final mode and renamed over the old one: an
    /// existing file keeps neither its old mode nor, when it is a symlink, its target (the link
    /// itself is replaced; whatever it pointed to is untouched).
    pub fn write(&self, dir: &Path) -> Result<(), CertsError> {
        fs::create_dir_all(dir).map_err(|source| CertsError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        replace(&dir.join("ca.crt"), &self.ca_pem, 0o644)?;
        replace(&dir.join("tls.crt"), &self.cert_pem, 0o644)?;
        replace(&dir.join("tls.key"), &self.key_pem, 0o600)
    }
}

fn replace(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    files::replace(path, contents.as_bytes(), mode).map_err(|source| CertsError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_service_forms() {
        assert_eq!(
            service_names("tcp-sniffer-injector", "tcp-sniffer"),
            [
                "tcp-sniffer-injector.tcp-sniffer.svc",
                "tcp-sniffer-injector.tcp-sniffer.svc.cluster.local",
                "tcp-sniffer-injector.tcp-sniffer",
                "tcp-sniffer-injector"
            ]
        );
    }

    #[test]
    fn days_outside_a_day_to_a_century_are_refused() {
        for days in [0, -1, 36_501, 3_000_000, i64::MAX] {
            assert!(
                matches!(generate(service_names("s", "n"), days), Err(CertsError::Days(d)) if d == days),
                "{days}"
            );
        }
        assert!(generate(service_names("s", "n"), 36_500).is_ok());
    }

    #[test]
    fn keys_replace_files_and_links_with_private_files() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = std::env::temp_dir().join(format!("gen-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // A world-readable key from an earlier run, and a tls.crt link to a file elsewhere.
        fs::write(dir.join("tls.key"), "old").unwrap();
        fs::set_permissions(dir.join("tls.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let elsewhere = dir.join("elsewhere");
        fs::write(&elsewhere, "do not touch").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("tls.crt")).unwrap();
        let certs = generate(service_names("s", "n"), 1).unwrap();
        certs.write(&dir).unwrap();
        let key = fs::symlink_metadata(dir.join("tls.key")).unwrap();
        assert_eq!(key.mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_to_string(dir.join("tls.key")).unwrap(),
            certs.key_pem
        );
        let cert = fs::symlink_metadata(dir.join("tls.crt")).unwrap();
        assert!(
            cert.file_type().is_file(),
            "the link was replaced, not written through"
        );
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "do not touch");
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generates_pem_and_a_secret() {
        let certs = generate(service_names("svc", "ns"), 30).unwrap();
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let secret = certs.secret_yaml("injector-tls", "ns");
        assert!(secret.contains("type: kubernetes.io/tls"));
        assert!(secret.contains(&format!("ca.crt: {}", certs.ca_bundle())));
    }
}
