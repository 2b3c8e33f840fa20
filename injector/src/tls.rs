//! Serve TLS: the certificate and key, reloaded when their files change.
//!
//! cert-manager rotates the Secret, and the kubelet swaps the mounted files by replacing a
//! symlink, so the files are polled (content, not mtime: a symlink swap keeps old mtimes) rather
//! than watched. A new pair is swapped in atomically only once both files parse and match; a
//! handshake always sees one consistent pair, and a broken pair keeps the old one.
//!
//! The serving certificate's validity is checked at start and at every reload: an expired or
//! not-yet-valid certificate is still served (a renewal may be on its way, and the API server
//! would refuse a missing one just the same) but logged as an error each time it is loaded.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use cli_support::small_file::{SmallFileError, read_small_file};
use log::{error, info};
use thiserror::Error;
use time::OffsetDateTime;
use tokio_rustls::rustls::{
    self, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// The certificate or key cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file cannot be read, is not a regular file, or is larger than any PEM file would be.
    #[error("cannot read {path}: {problem}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        problem: SmallFileError,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path} holds no usable PEM private key")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The key does not belong to the certificate, or cannot sign.
    #[error("the key does not match the certificate or cannot be used")]
    Pair(#[source] rustls::Error),
    /// rustls refused the configuration.
    #[error("invalid TLS configuration")]
    Config(#[source] rustls::Error),
}

/// The file contents a pair was loaded from, to notice changes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The largest certificate chain or key file read: a chain of a few certificates is a few KiB.
/// The files are re-read every few seconds, so a device or a huge file must never be read whole.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    read_small_file(path, MAX_PEM_FILE_BYTES).map_err(|problem| TlsError::Read {
        path: path.to_owned(),
        problem,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and key and checks that they belong together.
fn certified_key(contents: &Contents, paths: &CertPaths) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&contents.cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: paths.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|source| TlsError::Key {
        path: paths.key.clone(),
        source,
    })?;
    // Also checks that the key matches the certificate's public key.
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Pair)?;
    Ok(Arc::new(certified))
}

/// The period a certificate is valid in (its X.509 `notBefore` and `notAfter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// First instant of validity.
    pub not_before: OffsetDateTime,
    /// Last instant of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Reads the validity of a DER certificate; `None` if it is not shaped like X.509.
    #[must_use]
    pub fn of(cert: &CertificateDer<'_>) -> Option<Self> {
        use yasna::{
            ASN1Error, ASN1ErrorKind, Tag,
            models::{GeneralizedTime, UTCTime},
        };
        let time = |value: yasna::models::TaggedDerValue| -> Result<OffsetDateTime, ASN1Error> {
            let parsed = match value.tag() {
                Tag { tag_number: 23, .. } => UTCTime::parse(value.value()).map(|t| *t.datetime()),
                Tag { tag_number: 24, .. } => {
                    GeneralizedTime::parse(value.value()).map(|t| *t.datetime())
                }
                _ => None,
            };
            parsed.ok_or_else(|| ASN1Error::new(ASN1ErrorKind::Invalid))
        };
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
        // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serial, signature, issuer,
        //                               validity SEQUENCE { notBefore, notAfter }, … }
        yasna::parse_der(cert.as_ref(), |reader| {
            reader.read_sequence(|certificate| {
                let validity = certificate.next().read_sequence(|tbs| {
                    tbs.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                    for _serial_signature_issuer in 0..3 {
                        tbs.next().read_der()?;
                    }
                    let validity = tbs.next().read_sequence(|validity| {
                        let not_before = time(validity.next().read_tagged_der()?)?;
                        let not_after = time(validity.next().read_tagged_der()?)?;
                        Ok(Self {
                            not_before,
                            not_after,
                        })
                    })?;
                    while tbs.read_optional(|r| r.read_der())?.is_some() {}
                    Ok(validity)
                })?;
                while certificate.read_optional(|r| r.read_der())?.is_some() {}
                Ok(validity)
            })
        })
        .ok()
    }

    /// What is wrong with using it at `now`, if anything.
    #[must_use]
    pub fn problem(&self, now: OffsetDateTime) -> Option<&'static str> {
        if now < self.not_before {
            Some("the TLS certificate is not valid yet: the API server will refuse it")
        } else if now > self.not_after {
            Some("the TLS certificate has expired: the API server will refuse it")
        } else {
            None
        }
    }
}

/// Logs the serving certificate's validity: an error when it cannot be used now.
fn log_validity(key: &CertifiedKey, paths: &CertPaths) {
    let Some(validity) = key.end_entity_cert().ok().and_then(Validity::of) else {
        error!(cert = paths.cert.display().to_string().as_str(); "cannot read the TLS certificate's validity");
        return;
    };
    let rfc3339 = |t: OffsetDateTime| {
        let nanos = i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        cli_support::time::Timestamp::from_unix_nanos(nanos).to_string()
    };
    let (not_before, not_after) = (rfc3339(validity.not_before), rfc3339(validity.not_after));
    let cert = paths.cert.display().to_string();
    match validity.problem(OffsetDateTime::now_utc()) {
        Some(problem) => error!(
            cert = cert.as_str(), not_before = not_before.as_str(), not_after = not_after.as_str();
            "{problem}"
        ),
        None => info!(
            cert = cert.as_str(), not_before = not_before.as_str(), not_after = not_after.as_str();
            "TLS certificate valid"
        ),
    }
}

/// Where the serving certificate and key live.
#[derive(Clone, Debug)]
pub struct CertPaths {
    /// PEM certificate chain (`tls.crt`).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`).
    pub key: PathBuf,
}

/// The current certificate, handed to every handshake.
#[derive(Debug)]
pub struct CertStore {
    paths: CertPaths,
    current: RwLock<(Contents, Arc<CertifiedKey>)>,
}

impl CertStore {
    /// Loads the pair; fails when it cannot be used (the injector then exits 1).
    pub fn load(paths: CertPaths) -> Result<Arc<Self>, TlsError> {
        let contents = Contents {
            cert: read(&paths.cert)?,
            key: read(&paths.key)?,
        };
        let key = certified_key(&contents, &paths)?;
        log_validity(&key, &paths);
        Ok(Arc::new(Self {
            paths,
            current: RwLock::new((contents, key)),
        }))
    }

    /// Re-reads the files; swaps in a changed, valid pair. Returns whether it swapped.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let contents = Contents {
            cert: read(&self.paths.cert)?,
            key: read(&self.paths.key)?,
        };
        if self.read_current().0 == contents {
            return Ok(false);
        }
        let key = certified_key(&contents, &self.paths)?;
        log_validity(&key, &self.paths);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (contents, key);
        Ok(true)
    }

    /// The expiry (X.509 `notAfter`, Unix seconds) of the certificate served now, if it can be
    /// read.
    #[must_use]
    pub fn not_after(&self) -> Option<i64> {
        let current = self.read_current();
        let validity = current.1.end_entity_cert().ok().and_then(Validity::of)?;
        Some(validity.not_after.unix_timestamp())
    }

    fn read_current(&self) -> std::sync::RwLockReadGuard<'_, (Contents, Arc<CertifiedKey>)> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A rustls server configuration using this store: TLS 1.2 and 1.3, ALPN `h2` and
    /// `http/1.1`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Polls the files every `interval` and reloads on change, forever.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The error of the last failed attempt, so a broken pair is reported once, not per poll.
        let mut last_error = None;
        loop {
            ticker.tick().await;
            let store = Arc::clone(&self);
            let result = tokio::task::spawn_blocking(move || store.reload()).await;
            match result {
                Ok(Ok(true)) => {
                    last_error = None;
                    info!(cert = self.paths.cert.display().to_string().as_str(); "TLS certificate reloaded");
                }
                Ok(Ok(false)) => last_error = None,
                Ok(Err(err)) => {
                    let message = format!("{err:#}");
                    if last_error.as_ref() != Some(&message) {
                        error!(error = message.as_str(); "new TLS certificate or key unusable; still serving the previous one");
                        last_error = Some(message);
                    }
                }
                Err(err) => {
                    error!(error = err.to_string().as_str(); "certificate reload task failed");
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read_current().1))
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::certs::{generate_between, service_names};

    fn first_cert(pem: &str) -> CertificateDer<'static> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on: both are read.
        for (before, after) in [
            (now - Duration::days(3), now - Duration::days(1)),
            (now + Duration::days(1), now + Duration::days(2)),
            (now - Duration::minutes(5), now + Duration::days(36_500)),
        ] {
            let certs = generate_between(service_names("s", "n"), before, after).unwrap();
            for pem in [&certs.cert_pem, &certs.ca_pem] {
                let validity = Validity::of(&first_cert(pem)).expect("X.509 validity");
                assert_eq!((validity.not_before, validity.not_after), (before, after));
            }
        }
        assert_eq!(Validity::of(&CertificateDer::from(vec![0x30, 0x00])), None);
    }

    #[test]
    fn expired_and_future_certificates_are_problems() {
        let now = OffsetDateTime::now_utc();
        let validity = |before: i64, after: i64| Validity {
            not_before: now + Duration::days(before),
            not_after: now + Duration::days(after),
        };
        assert!(validity(-3, -1).problem(now).unwrap().contains("expired"));
        assert!(
            validity(1, 2)
                .problem(now)
                .unwrap()
                .contains("not valid yet")
        );
        assert_eq!(validity(-1, 1).problem(now), None);
    }
}
