//! The one rule for `OUTPUT_URL`: the sniffer checks its variable and the injector its
//! `outputUrl` option with this parser, so a URL the injector accepts never makes an injected
//! sidecar exit 1.
//!
//! Accepted: `http://` or `https://` (any letter case), a host that is a DNS-style name, an IPv4
//! address or a bracketed IPv6 address, an optional port 1–65535, and a path and query made of
//! the characters RFC 3986 allows there (others percent-encoded). Refused: user information
//! (`user@host`: credentials belong in `OUTPUT_URL_AUTH_TOKEN`), fragments, whitespace, control
//! and non-ASCII characters, and URLs over [`MAX_URL_LEN`] bytes.

use core::{fmt, net::Ipv6Addr};

/// Longest accepted URL.
pub const MAX_URL_LEN: usize = 2048;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The port used when the URL names none.
    #[must_use]
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// The parts of an accepted URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpUrl<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// The host as written, without brackets for IPv6.
    pub host: &'a str,
    /// The port, when the URL names one.
    pub port: Option<u16>,
    /// Everything from the first `/` or `?` after the host (may be empty).
    pub path_and_query: &'a str,
}

/// Why a URL is refused. The caller names the variable or option and quotes the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_URL_LEN`].
    TooLong,
    /// Whitespace, a control character or a non-ASCII character.
    Character,
    /// No `scheme://`.
    NotAbsolute,
    /// A scheme other than http or https.
    Scheme,
    /// `user@` or `user:password@` before the host.
    UserInfo,
    /// Nothing between `://` and the path.
    NoHost,
    /// A host that is not a name, an IPv4 address or a bracketed IPv6 address.
    Host,
    /// A port that is not a number from 1 to 65535.
    Port,
    /// A character in the path or query that must be percent-encoded, or a bad `%` escape.
    PathCharacter,
    /// A `#fragment`, which is never sent to a server.
    Fragment,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "is empty",
            Self::TooLong => "is longer than 2048 bytes",
            Self::Character => {
                "contains whitespace, a control character or a non-ASCII character"
            }
            Self::NotAbsolute => "is not an absolute http(s) URL",
            Self::Scheme => "must use http or https",
            Self::UserInfo => {
                "must not contain user information (user@): send credentials with OUTPUT_URL_AUTH_TOKEN"
            }
            Self::NoHost => "has no host",
            Self::Host => "has an invalid host: use a DNS name, an IPv4 address or [an IPv6 address]",
            Self::Port => "has an invalid port: it must be a number from 1 to 65535",
            Self::PathCharacter => {
                "has a character in its path or query that must be percent-encoded"
            }
            Self::Fragment => "must not have a #fragment",
        })
    }
}

/// RFC 3986 `unreserved`.
const fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`.
const fn sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Parses and checks an `http(s)` URL.
///
/// # Examples
///
/// ```
/// use sidecar_contract::url::{parse_http_url, Scheme, UrlError};
///
/// let url = parse_http_url("HTTPS://collector.observability:8443/v1/batches?x=1").unwrap();
/// assert_eq!((url.scheme, url.host, url.port), (Scheme::Https, "collector.observability", Some(8443)));
/// assert_eq!(url.path_and_query, "/v1/batches?x=1");
/// assert_eq!(parse_http_url("https://user@/x"), Err(UrlError::UserInfo));
/// assert_eq!(parse_http_url("http://[fd00::1/"), Err(UrlError::Host));
/// assert_eq!(parse_http_url("http://collector/<x>"), Err(UrlError::PathCharacter));
/// ```
pub fn parse_http_url(value: &str) -> Result<HttpUrl<'_>, UrlError> {
    if value.is_empty() {
        return Err(UrlError::Empty);
    }
    if value.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    if value.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(UrlError::Character);
    }
    let (scheme, rest) = value.split_once("://").ok_or(UrlError::NotAbsolute)?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else if !scheme.is_empty()
        && scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err(UrlError::Scheme);
    } else {
        return Err(UrlError::NotAbsolute);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    if path_and_query.contains('#') {
        return Err(UrlError::Fragment);
    }
    let (host, port) = split_host_port(authority)?;
    check_path_and_query(path_and_query)?;
    Ok(HttpUrl {
        scheme,
        host,
        port,
        path_and_query,
    })
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), UrlError> {
    if authority.is_empty() {
        return Err(UrlError::NoHost);
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']').ok_or(UrlError::Host)?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::Host);
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::Host)?),
        };
        (address, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        // One trailing dot (a fully qualified name) is allowed.
        let name = host.strip_suffix('.').unwrap_or(host);
        let labels_ok = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !labels_ok || host.len() > 253 {
            return Err(UrlError::Host);
        }
        (host, port)
    };
    let port = port
        .map(|text| {
            if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UrlError::Port);
            }
            match text.parse::<u16>() {
                Ok(0) | Err(_) => Err(UrlError::Port),
                Ok(port) => Ok(port),
            }
        })
        .transpose()?;
    Ok((host, port))
}

fn check_path_and_query(text: &str) -> Result<(), UrlError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(UrlError::PathCharacter);
            }
            i += 3;
            continue;
        }
        if !(unreserved(b) || sub_delim(b) || matches!(b, b':' | b'@' | b'/' | b'?')) {
            return Err(UrlError::PathCharacter);
        }
        i += 1;
    }
    Ok(())
}

/// One line of the shared table of URL cases (`testdata/url-cases.tsv`): the URL, and `None` when
/// it is accepted or the [`UrlError`] it is refused with. The sniffer and the injector test their
/// binaries on the same table.
///
/// # Examples
///
/// ```
/// use sidecar_contract::url::{UrlError, url_cases};
///
/// assert!(url_cases().any(|(url, error)| url == "https://user@/x" && error == Some(UrlError::UserInfo)));
/// ```
pub fn url_cases() -> impl Iterator<Item = (&'static str, Option<UrlError>)> {
    include_str!("../testdata/url-cases.tsv")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (verdict, url) = line.split_once('\t').expect("verdict<TAB>url");
            let error = match verdict {
                "ok" => None,
                "Empty" => Some(UrlError::Empty),
                "TooLong" => Some(UrlError::TooLong),
                "Character" => Some(UrlError::Character),
                "NotAbsolute" => Some(UrlError::NotAbsolute),
                "Scheme" => Some(UrlError::Scheme),
                "UserInfo" => Some(UrlError::UserInfo),
                "NoHost" => Some(UrlError::NoHost),
                "Host" => Some(UrlError::Host),
                "Port" => Some(UrlError::Port),
                "PathCharacter" => Some(UrlError::PathCharacter),
                "Fragment" => Some(UrlError::Fragment),
                other => panic!("unknown verdict {other:?} in url-cases.tsv"),
            };
            (url, error)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_table_holds() {
        let mut count = 0;
        for (url, expected) in url_cases() {
            assert_eq!(parse_http_url(url).err(), expected, "{url:?}");
            count += 1;
        }
        assert!(count > 40, "{count} cases");
    }

    #[test]
    fn parts_of_accepted_urls() {
        let url = parse_http_url("http://[fd00::5]:80").unwrap();
        assert_eq!(
            (url.host, url.port, url.path_and_query),
            ("fd00::5", Some(80), "")
        );
        let url = parse_http_url("https://10.0.0.5?x=%2F").unwrap();
        assert_eq!(
            (url.host, url.port, url.path_and_query),
            ("10.0.0.5", None, "?x=%2F")
        );
        assert_eq!(url.scheme.default_port(), 443);
    }

    #[test]
    fn length_bound() {
        let mut long = String::from("http://c/");
        long.extend(core::iter::repeat_n('a', MAX_URL_LEN - long.len()));
        assert!(parse_http_url(&long).is_ok());
        long.push('a');
        assert_eq!(parse_http_url(&long), Err(UrlError::TooLong));
    }
}
