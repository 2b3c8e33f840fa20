//! `injector gen-certs`: a CA and a serving certificate for the webhook Service, for clusters
//! without cert-manager (the "internal CA" option).

use std::{fs, path::Path};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// Generating or writing the certificates failed.
#[derive(Debug, Error)]
pub enum CertsError {
    /// rcgen refused the parameters.
    #[error("cannot generate the certificates")]
    Generate(#[from] rcgen::Error),
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

/// Generates a CA and a certificate for `names`, valid for `days` days from now.
pub fn generate(names: Vec<String>, days: i64) -> Result<GeneratedCerts, CertsError> {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are behind.
    let not_before = now - Duration::minutes(5);
    let not_after = now + Duration::days(days);

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

    /// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), CertsError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let write = |name: &str, contents: &str, mode: u32| {
            let path = dir.join(name);
            fs::create_dir_all(dir)
                .and_then(|()| {
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(mode)
                        .open(&path)
                })
                .and_then(|mut file| std::io::Write::write_all(&mut file, contents.as_bytes()))
                .map_err(|source| CertsError::Write {
                    path: path.display().to_string(),
                    source,
                })
        };
        write("ca.crt", &self.ca_pem, 0o644)?;
        write("tls.crt", &self.cert_pem, 0o644)?;
        write("tls.key", &self.key_pem, 0o600)
    }
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
