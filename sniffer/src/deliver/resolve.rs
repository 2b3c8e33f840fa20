//! Resolving the collector's host: at most once per [`TTL`], never for an IP address.
//!
//! ureq resolves the URL's host before every request, even when it then reuses a pooled
//! connection, and with a timeout set (the sniffer always sets one) it does so on a thread it
//! spawns for the purpose: a thread start and exit for every batch, a visible share of the
//! sniffer's CPU at full rate.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use ureq::{
    Error,
    config::Config,
    http::Uri,
    unversioned::{
        resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver},
        transport::NextTimeout,
    },
};

/// How long a resolved name is reused: as short as cluster DNS answers live (CoreDNS gives
/// 5–30 s), so a collector Service that moves is followed within seconds.
pub const TTL: Duration = Duration::from_secs(5);

/// ureq's resolver behind a cache of the last answer.
#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    last: Mutex<Option<Answer>>,
}

#[derive(Debug)]
struct Answer {
    /// `host:port` it answers for.
    target: String,
    at: Instant,
    addrs: ResolvedSocketAddrs,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        if let Some(addr) = ip_literal(uri) {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        let target = uri.authority().map(ToString::to_string).unwrap_or_default();
        let now = Instant::now();
        {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(answer) = last.as_ref()
                && answer.target == target
                && now.duration_since(answer.at) < TTL
            {
                return Ok(answer.addrs.clone());
            }
        }
        // Failures are not cached: the next batch asks again.
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Answer {
            target,
            at: now,
            addrs: addrs.clone(),
        });
        Ok(addrs)
    }
}

/// The socket address of a URL whose host is an IP address (`http://10.0.0.2:9000/`,
/// `https://[fd00::1]/`), with the scheme's default port when none is given.
fn ip_literal(uri: &Uri) -> Option<SocketAddr> {
    let authority = uri.authority()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let port = authority.port_u16().or(match uri.scheme_str()? {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(url: &str) -> Option<SocketAddr> {
        ip_literal(&url.parse::<Uri>().unwrap())
    }

    #[test]
    fn ip_hosts_need_no_lookup() {
        assert_eq!(
            literal("http://10.0.0.2:9000/batches"),
            Some("10.0.0.2:9000".parse().unwrap())
        );
        assert_eq!(
            literal("https://[fd00::1]/"),
            Some("[fd00::1]:443".parse().unwrap())
        );
        assert_eq!(
            literal("http://127.0.0.1/"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(literal("http://collector.obs.svc:8080/"), None);
        assert_eq!(literal("https://localhost/"), None);
    }

    #[test]
    fn names_are_resolved_once_per_ttl() {
        let resolver = CachingResolver::default();
        let config = Config::default();
        let uri: Uri = "http://localhost:9/".parse().unwrap();
        let first = resolver
            .resolve(&uri, &config, NextTimeout::default())
            .unwrap();
        assert!(!first.is_empty());
        let cached_at = resolver.last.lock().unwrap().as_ref().unwrap().at;
        let again = resolver
            .resolve(&uri, &config, NextTimeout::default())
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(
            resolver.last.lock().unwrap().as_ref().unwrap().at,
            cached_at,
            "answered from the cache"
        );
        // Another host is another question.
        let other: Uri = "http://localhost:10/".parse().unwrap();
        let port = resolver
            .resolve(&other, &config, NextTimeout::default())
            .unwrap()[0]
            .port();
        assert_eq!(port, 10);
    }
}
