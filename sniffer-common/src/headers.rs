//! The request headers the configuration adds: the token's (`OUTPUT_AUTH_HEADER`,
//! `OUTPUT_AUTH_SCHEME`) and `OUTPUT_HEADERS`, checked so that every one can be sent — by the
//! sniffer at start and by the injector for its options, with this one rule. Values are never
//! quoted in errors: they may be secrets.
//!
//! `OUTPUT_HEADERS` follows `OTEL_EXPORTER_OTLP_HEADERS`: `Name=value` pairs separated by commas,
//! spaces around names and values ignored, values percent-decoded (`%2C` for a comma).

use alloc::{borrow::ToOwned as _, format, string::String, vec::Vec};
use core::fmt;

use crate::echo::Echo;

/// A header that cannot be sent. Names are shown, values never.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// An entry without `=`, or with an empty name.
    Entry {
        /// 1-based position.
        position: usize,
    },
    /// Not an HTTP field name (RFC 9110 token characters).
    Name {
        /// Where it comes from.
        variable: &'static str,
        /// The name.
        name: String,
    },
    /// A header the sniffer sets itself, or that would break the request.
    Reserved {
        /// The name.
        name: String,
    },
    /// The same name twice (the token's header included).
    Duplicate {
        /// The name.
        name: String,
    },
    /// A `%` not followed by two hex digits.
    Escape {
        /// The name.
        name: String,
    },
    /// A control character, which no header can carry.
    Value {
        /// The name.
        name: String,
    },
    /// `OUTPUT_AUTH_SCHEME` is not one token (`Bearer`, `Basic`, `ApiKey`) or empty.
    Scheme {
        /// The scheme.
        scheme: String,
    },
    /// More than [`MAX_HEADERS`] entries.
    TooMany,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entry { position } => {
                write!(f, "OUTPUT_HEADERS entry {position} is not Name=value")
            }
            Self::Name { variable, name } => {
                write!(f, "{variable} {:?} is not a valid header name", Echo(name))
            }
            Self::Reserved { name } => {
                write!(
                    f,
                    "OUTPUT_HEADERS cannot set {}: the sniffer sets it",
                    Echo(name)
                )
            }
            Self::Duplicate { name } => write!(f, "header {} is set more than once", Echo(name)),
            Self::Escape { name } => write!(
                f,
                "OUTPUT_HEADERS value of {} has a % not followed by two hex digits",
                Echo(name)
            ),
            Self::Value { name } => write!(
                f,
                "the value of header {} contains a control character",
                Echo(name)
            ),
            Self::Scheme { scheme } => write!(
                f,
                "OUTPUT_AUTH_SCHEME {:?} must be one word such as Bearer, or empty",
                Echo(scheme)
            ),
            Self::TooMany => write!(f, "OUTPUT_HEADERS lists more than {MAX_HEADERS} headers"),
        }
    }
}

/// The most headers `OUTPUT_HEADERS` may list.
pub const MAX_HEADERS: usize = 32;

/// Headers the sniffer sets, or that the HTTP client must control.
const RESERVED: [&str; 10] = [
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "te",
    "upgrade",
    "trailer",
    "expect",
];

/// RFC 9110 `tchar`.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_value(name: &str, value: &str) -> Result<(), HeaderError> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeaderError::Value {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The token's header: `header: scheme token` (or `header: token` with an empty scheme).
///
/// # Examples
///
/// ```
/// use sniffer_common::headers::auth;
///
/// assert_eq!(auth("Authorization", "Bearer", "t0k").unwrap(), ("Authorization".into(), "Bearer t0k".into()));
/// assert_eq!(auth("X-ClickHouse-Key", "", "k3y").unwrap(), ("X-ClickHouse-Key".into(), "k3y".into()));
/// ```
///
/// # Errors
///
/// When the header name or the scheme is not a token, or the token holds a control character.
pub fn auth(header: &str, scheme: &str, token: &str) -> Result<(String, String), HeaderError> {
    if !is_token(header) {
        return Err(HeaderError::Name {
            variable: "OUTPUT_AUTH_HEADER",
            name: header.to_owned(),
        });
    }
    if RESERVED.contains(&header.to_ascii_lowercase().as_str()) {
        return Err(HeaderError::Reserved {
            name: header.to_owned(),
        });
    }
    if !scheme.is_empty() && !is_token(scheme) {
        return Err(HeaderError::Scheme {
            scheme: scheme.to_owned(),
        });
    }
    let value = if scheme.is_empty() {
        token.to_owned()
    } else {
        format!("{scheme} {token}")
    };
    check_value(header, &value)?;
    Ok((header.to_owned(), value))
}

fn percent_decode(name: &str, text: &str) -> Result<String, HeaderError> {
    let escape = || HeaderError::Escape {
        name: name.to_owned(),
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(escape)?;
            let hex = core::str::from_utf8(hex).map_err(|_| escape())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| escape())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| escape())
}

/// The headers of `OUTPUT_HEADERS`; `auth` is the token's header, which they may not repeat.
///
/// # Examples
///
/// ```
/// use sniffer_common::headers::parse;
///
/// let headers = parse(" X-Scope-OrgID = tenant-1 ,X-Note=a%2Cb", None).unwrap();
/// assert_eq!(headers, [("X-Scope-OrgID".into(), "tenant-1".into()), ("X-Note".into(), "a,b".into())]);
/// ```
///
/// # Errors
///
/// On the first entry that cannot be sent, naming it (never its value).
pub fn parse(
    text: &str,
    auth: Option<&(String, String)>,
) -> Result<Vec<(String, String)>, HeaderError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let entries = text.split(',').filter(|entry| !entry.trim().is_empty());
    for (position, entry) in entries.enumerate() {
        if position == MAX_HEADERS {
            return Err(HeaderError::TooMany);
        }
        let Some((name, value)) = entry.split_once('=') else {
            return Err(HeaderError::Entry {
                position: position + 1,
            });
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(HeaderError::Entry {
                position: position + 1,
            });
        }
        if !is_token(name) {
            return Err(HeaderError::Name {
                variable: "OUTPUT_HEADERS",
                name: name.to_owned(),
            });
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            return Err(HeaderError::Reserved {
                name: name.to_owned(),
            });
        }
        let taken = auth
            .into_iter()
            .chain(&headers)
            .any(|(other, _)| other.eq_ignore_ascii_case(name));
        if taken {
            return Err(HeaderError::Duplicate {
                name: name.to_owned(),
            });
        }
        let value = percent_decode(name, value.trim())?;
        check_value(name, &value)?;
        headers.push((name.to_owned(), value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString as _;

    use super::*;

    #[test]
    fn bad_entries_are_named_without_their_values() {
        let auth = ("Authorization".to_owned(), "Bearer s3cret".to_owned());
        for (text, expected) in [
            ("novalue", HeaderError::Entry { position: 1 }),
            ("A=1,=2", HeaderError::Entry { position: 2 }),
            (
                "Bad Name=1",
                HeaderError::Name {
                    variable: "OUTPUT_HEADERS",
                    name: "Bad Name".into(),
                },
            ),
            (
                "Content-Type=text/plain",
                HeaderError::Reserved {
                    name: "Content-Type".into(),
                },
            ),
            ("X-A=1,x-a=2", HeaderError::Duplicate { name: "x-a".into() }),
            (
                "authorization=Basic s3cret",
                HeaderError::Duplicate {
                    name: "authorization".into(),
                },
            ),
            ("X-A=s3cret%zz", HeaderError::Escape { name: "X-A".into() }),
            ("X-A=s3cret%0a", HeaderError::Value { name: "X-A".into() }),
        ] {
            let err = parse(text, Some(&auth)).unwrap_err();
            assert_eq!(err, expected, "{text}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        let many: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("X-{i}=v")).collect();
        assert_eq!(parse(&many.join(","), None), Err(HeaderError::TooMany));
        assert_eq!(parse(" , ", None), Ok(Vec::new()));
    }

    #[test]
    fn auth_headers_and_schemes() {
        assert_eq!(auth("Authorization", "ApiKey", "k").unwrap().1, "ApiKey k");
        assert!(matches!(
            auth("X Key", "", "k"),
            Err(HeaderError::Name { .. })
        ));
        assert!(matches!(
            auth("Host", "", "k"),
            Err(HeaderError::Reserved { .. })
        ));
        assert!(matches!(
            auth("Authorization", "Bearer x", "k"),
            Err(HeaderError::Scheme { .. })
        ));
    }
}
