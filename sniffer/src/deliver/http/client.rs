//! The HTTP client the senders share: [`Plain`] for `http://` collectors, a ureq agent for
//! `https://` ones (and for any collector when a proxy variable is set, which ureq honours).
//! Both have the configured timeouts, no redirects (a redirect would carry the token elsewhere)
//! and the caching resolver; ureq has the trust roots (`OUTPUT_CA_FILE` or the platform's).

use std::{io::Read as _, path::Path, sync::Arc, time::Duration};

use cli_support::small_file::{SmallFileError, read_small_file};
use sidecar_contract::url::{Scheme, parse_http_url};
use thiserror::Error;

use super::{
    DeliveryError,
    plain::{Connection, Plain, PlainError},
    wire::Answer,
};
use crate::deliver::{answer::MAX_ANSWER_BYTES, config::DeliveryConfig, resolve::CachingResolver};

/// How the senders reach the collector.
#[derive(Debug)]
pub(super) enum Client {
    /// `http://`, no proxy.
    Plain(Box<Plain>),
    /// `https://`, or through a proxy.
    Ureq {
        agent: ureq::Agent,
        url: String,
        /// Every request's headers: content type and coding, the token's, `OUTPUT_HEADERS`.
        headers: Vec<(String, String)>,
    },
}

/// Why a request got no answer.
#[derive(Debug, Error)]
pub(super) enum Failure {
    #[error(transparent)]
    Plain(#[from] PlainError),
    #[error(transparent)]
    Ureq(#[from] ureq::Error),
}

impl Client {
    /// The client for `config`'s collector.
    pub(super) fn new(config: &DeliveryConfig) -> Result<Self, DeliveryError> {
        let mut headers = vec![(
            "Content-Type".to_owned(),
            config.format.content_type().to_owned(),
        )];
        if config.gzip {
            headers.push(("Content-Encoding".to_owned(), "gzip".to_owned()));
        }
        headers.extend(config.headers.iter().cloned());
        let agent = http_agent(config)?;
        if takes_plain(&config.url, agent.config().proxy()) {
            let plain = Plain::new(
                &config.url,
                &headers,
                agent.config().clone(),
                config.connect_timeout,
                config.format.is_otlp(),
            )
            .map_err(DeliveryError::Url)?;
            return Ok(Self::Plain(Box::new(plain)));
        }
        Ok(Self::Ureq {
            agent,
            url: config.url.clone(),
            headers,
        })
    }

    /// POSTs `body` within `timeout`; `kept` is the sender's kept connection, for [`Plain`].
    pub(super) fn post(
        &self,
        kept: &mut Option<Connection>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        match self {
            Self::Plain(plain) => Ok(plain.post(kept, body, timeout)?),
            Self::Ureq {
                agent,
                url,
                headers,
            } => {
                let mut request = agent.post(url);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let mut response = request
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .send(body)?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // Read the answer's start: OTLP's partial success is in it, and a small answer
                // read whole lets the connection be kept alive. A longer one is cut, not lost.
                let mut body = Vec::new();
                let limit = MAX_ANSWER_BYTES as u64 + 1;
                let read = response
                    .body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .reader()
                    .take(limit)
                    .read_to_end(&mut body);
                let truncated = read.is_err() || body.len() > MAX_ANSWER_BYTES;
                body.truncate(MAX_ANSWER_BYTES);
                Ok(Answer {
                    status,
                    retry_after,
                    body,
                    truncated,
                })
            }
        }
    }
}

/// Whether [`Plain`] reaches `url`: an `http://` URL, and no proxy (only ureq speaks to one).
fn takes_plain(url: &str, proxy: Option<&ureq::Proxy>) -> bool {
    proxy.is_none() && matches!(parse_http_url(url), Ok(url) if url.scheme == Scheme::Http)
}

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

fn http_agent(config: &DeliveryConfig) -> Result<ureq::Agent, DeliveryError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_takes_the_own_client_unless_a_proxy_is_set() {
        let proxy = ureq::Proxy::new("http://proxy.internal:3128").unwrap();
        for (url, proxy, expected) in [
            ("http://collector:9000/v1", None, true),
            ("HTTP://10.0.0.2/", None, true),
            ("https://collector/", None, false),
            ("http://collector:9000/v1", Some(&proxy), false),
        ] {
            assert_eq!(takes_plain(url, proxy), expected, "{url} {proxy:?}");
        }
    }
}
