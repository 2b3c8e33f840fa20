//! The HTTP client the senders share: a ureq agent with the configured timeouts, no redirects
//! (a redirect would carry the token elsewhere), the trust roots (`OUTPUT_CA_FILE` or the
//! platform's) and the caching resolver.

use std::{path::Path, sync::Arc};

use cli_support::small_file::{SmallFileError, read_small_file};

use super::DeliveryError;
use crate::deliver::{config::DeliveryConfig, resolve::CachingResolver};

/// Largest accepted `OUTPUT_CA_FILE`: a bundle of every public root is about 220 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// Reads `OUTPUT_CA_FILE`, refusing what cannot be a CA bundle before reading it.
pub(super) fn read_ca_file(path: &Path) -> Result<Vec<u8>, DeliveryError> {
    read_small_file(path, MAX_CA_FILE_BYTES).map_err(|err| match err {
        SmallFileError::Io(source) => DeliveryError::CaFile {
            path: path.to_owned(),
            source,
        },
        SmallFileError::NotRegular => DeliveryError::CaFileKind {
            path: path.to_owned(),
        },
        SmallFileError::TooLarge { .. } => DeliveryError::CaFileSize {
            path: path.to_owned(),
        },
    })
}

pub(super) fn http_agent(config: &DeliveryConfig) -> Result<ureq::Agent, DeliveryError> {
    use ureq::tls::{RootCerts, TlsConfig};
    let roots = match &config.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem = read_ca_file(path)?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(DeliveryError::NoCertificate { path: path.clone() });
            }
            RootCerts::Specific(Arc::new(certs))
        }
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A redirect would carry the bearer token to another place: treat it as a refusal.
        .max_redirects(0)
        .timeout_connect(Some(config.connect_timeout))
        .timeout_global(Some(config.request_timeout))
        .max_idle_connections_per_host(config.concurrency.max(1))
        .user_agent(concat!("tcp-sniffer/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        CachingResolver::default(),
    ))
}
