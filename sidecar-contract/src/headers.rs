//! The request headers the configuration adds: the token's (`OUTPUT_AUTH_HEADER`,
//! `OUTPUT_AUTH_SCHEME`) and `OUTPUT_HEADERS`, checked so that every one can be sent — by the
//! sniffer at start and by the injector for its options, with this one rule. Values are never
//! quoted in errors: they may be secrets.
//!
//! `OUTPUT_HEADERS` follows `OTEL_EXPORTER_OTLP_HEADERS`: `Name=value` pairs separated by commas,
//! spaces around names and values ignored, values percent-decoded (`%2C` for a comma).

use core::fmt;

use crate::{echo::Echo, url::Scheme};

/// A header that cannot be sent. An `OUTPUT_HEADERS` entry is named by its position, never by
/// its text: a mistyped entry (`Authorization: Basic dXNl…=` splits at the padding's `=`) may be
/// a secret, and this message ends up in pod logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// An entry without `=`, or with an empty name.
    Entry {
        /// 1-based position.
        position: usize,
    },
    /// An `OUTPUT_HEADERS` name that is not an HTTP field name (RFC 9110 token characters).
    Name {
        /// 1-based position.
        position: usize,
    },
    /// `OUTPUT_AUTH_HEADER` is not an HTTP field name (it is configuration, not a secret, so it
    /// is shown).
    AuthHeader {
        /// The name.
        name: String,
    },
    /// A header the sniffer sets itself, or that would break the request.
    Reserved {
        /// 1-based position in `OUTPUT_HEADERS`; `None` for `OUTPUT_AUTH_HEADER`.
        position: Option<usize>,
        /// The reserved header, as this module spells it.
        header: &'static str,
    },
    /// The same name twice, the token's header included.
    Duplicate {
        /// 1-based position of the repeat.
        position: usize,
        /// 1-based position of the first; `None` when it repeats the token's header.
        first: Option<usize>,
    },
    /// A `%` not followed by two hex digits.
    Escape {
        /// 1-based position.
        position: usize,
    },
    /// A control character, which no header can carry.
    Value {
        /// 1-based position in `OUTPUT_HEADERS`; `None` for the token's header.
        position: Option<usize>,
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
            Self::Name { position } => write!(
                f,
                "OUTPUT_HEADERS entry {position} does not start with a header name (letters, \
                 digits and !#$%&'*+-.^_`|~ before the first =); the entry is not shown, it may \
                 hold a secret"
            ),
            Self::AuthHeader { name } => write!(
                f,
                "OUTPUT_AUTH_HEADER {:?} is not a valid header name",
                Echo(name)
            ),
            Self::Reserved {
                position: Some(position),
                header,
            } => write!(
                f,
                "OUTPUT_HEADERS entry {position} sets {header}, which the sniffer sets itself"
            ),
            Self::Reserved {
                position: None,
                header,
            } => write!(
                f,
                "OUTPUT_AUTH_HEADER cannot be {header}, which the sniffer sets itself"
            ),
            Self::Duplicate {
                position,
                first: Some(first),
            } => write!(
                f,
                "OUTPUT_HEADERS entry {position} repeats the header name of entry {first}"
            ),
            Self::Duplicate {
                position,
                first: None,
            } => write!(
                f,
                "OUTPUT_HEADERS entry {position} repeats the token's header (OUTPUT_AUTH_HEADER)"
            ),
            Self::Escape { position } => write!(
                f,
                "OUTPUT_HEADERS entry {position} has a % not followed by two hex digits"
            ),
            Self::Value {
                position: Some(position),
            } => write!(
                f,
                "OUTPUT_HEADERS entry {position} has a control character in its value"
            ),
            Self::Value { position: None } => {
                write!(f, "the token's header value contains a control character")
            }
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
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "Transfer-Encoding",
    "Host",
    "Connection",
    "TE",
    "Upgrade",
    "Trailer",
    "Expect",
];

/// Words that make a header name a credential's, matched anywhere in the name ignoring case:
/// `Authorization`, `Proxy-Authorization`, `X-Auth-Token`, `X-Api-Key`, `X-ClickHouse-Key`,
/// `Cookie`, `X-Vault-Token`, `X-Session-Id` ….
const CREDENTIAL_WORDS: [&str; 8] = [
    "auth",
    "key",
    "token",
    "secret",
    "passw",
    "cookie",
    "credential",
    "session",
];

/// Whether a header called `name` carries a credential, by the convention its name follows.
///
/// # Examples
///
/// ```
/// use sidecar_contract::headers::carries_credential;
///
/// assert!(carries_credential("X-ClickHouse-Key") && carries_credential("authorization"));
/// assert!(!carries_credential("X-Scope-OrgID") && !carries_credential("X-ClickHouse-User"));
/// ```
#[must_use]
pub fn carries_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_WORDS.iter().any(|word| name.contains(word))
}

/// A credential that requests would carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The token (`OUTPUT_URL_AUTH_TOKEN`; the injector's `outputUrlAuthTokenSecret`).
    Token,
    /// An `OUTPUT_HEADERS` entry whose name [carries a credential](carries_credential), by its
    /// 1-based position.
    Header {
        /// 1-based position.
        position: usize,
    },
    /// Headers read from a Secret (the injector's `outputHeadersSecret`): secret by definition.
    SecretHeaders,
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token => write!(f, "the token"),
            Self::Header { position } => write!(
                f,
                "OUTPUT_HEADERS entry {position} (its name says it carries a credential)"
            ),
            Self::SecretHeaders => write!(f, "the headers from a Secret"),
        }
    }
}

/// The one rule for credentials over plain HTTP, applied by the sniffer at start and by the
/// injector to its options: to an `http://` collector, no credential travels unless the operator
/// allows it explicitly (`OUTPUT_ALLOW_PLAINTEXT_TOKEN`, `outputAllowPlaintextToken`), e.g.
/// because a service mesh encrypts the connection.
///
/// Returns the first credential that would travel in plaintext with the operator's consent (to
/// warn about), or none.
///
/// # Examples
///
/// ```
/// use sidecar_contract::{headers::{Credential, plaintext_credentials}, url::Scheme};
///
/// let header = Credential::Header { position: 2 };
/// assert_eq!(plaintext_credentials(Scheme::Https, false, [Credential::Token]), Ok(None));
/// assert_eq!(plaintext_credentials(Scheme::Http, false, [header]), Err(header));
/// assert_eq!(plaintext_credentials(Scheme::Http, true, [header]), Ok(Some(header)));
/// assert_eq!(plaintext_credentials(Scheme::Http, false, []), Ok(None));
/// ```
///
/// # Errors
///
/// The first credential that would travel in plaintext without the operator's consent.
pub fn plaintext_credentials(
    scheme: Scheme,
    allowed: bool,
    credentials: impl IntoIterator<Item = Credential>,
) -> Result<Option<Credential>, Credential> {
    if scheme == Scheme::Https {
        return Ok(None);
    }
    match credentials.into_iter().next() {
        None => Ok(None),
        Some(first) if allowed => Ok(Some(first)),
        Some(first) => Err(first),
    }
}

/// The reserved header `name` is, ignoring case.
fn reserved(name: &str) -> Option<&'static str> {
    RESERVED
        .iter()
        .find(|reserved| reserved.eq_ignore_ascii_case(name))
        .copied()
}

/// Whether `text` is an HTTP field name (RFC 9110 `token`).
///
/// # Examples
///
/// ```
/// use sidecar_contract::headers::is_token;
///
/// assert!(is_token("X-Scope-OrgID"));
/// assert!(!is_token("X-A=B") && !is_token("Authorization: Basic") && !is_token(""));
/// ```
#[must_use]
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_value(position: Option<usize>, value: &str) -> Result<(), HeaderError> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeaderError::Value { position });
    }
    Ok(())
}

/// The token's header: `header: scheme token` (or `header: token` with an empty scheme).
///
/// # Examples
///
/// ```
/// use sidecar_contract::headers::auth;
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
        return Err(HeaderError::AuthHeader {
            name: header.to_owned(),
        });
    }
    if let Some(reserved) = reserved(header) {
        return Err(HeaderError::Reserved {
            position: None,
            header: reserved,
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
    check_value(None, &value)?;
    Ok((header.to_owned(), value))
}

fn percent_decode(position: usize, text: &str) -> Result<String, HeaderError> {
    let escape = || HeaderError::Escape { position };
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
/// use sidecar_contract::headers::parse;
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
    for (index, entry) in entries.enumerate() {
        let position = index + 1;
        if index == MAX_HEADERS {
            return Err(HeaderError::TooMany);
        }
        let Some((name, value)) = entry.split_once('=') else {
            return Err(HeaderError::Entry { position });
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(HeaderError::Entry { position });
        }
        if !is_token(name) {
            return Err(HeaderError::Name { position });
        }
        if let Some(header) = reserved(name) {
            return Err(HeaderError::Reserved {
                position: Some(position),
                header,
            });
        }
        if auth.is_some_and(|(other, _)| other.eq_ignore_ascii_case(name)) {
            return Err(HeaderError::Duplicate {
                position,
                first: None,
            });
        }
        if let Some(first) = headers
            .iter()
            .position(|(other, _)| other.eq_ignore_ascii_case(name))
        {
            return Err(HeaderError::Duplicate {
                position,
                first: Some(first + 1),
            });
        }
        let value = percent_decode(position, value.trim())?;
        check_value(Some(position), &value)?;
        headers.push((name.to_owned(), value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn bad_entries_are_named_by_position_never_by_their_text() {
        let auth = ("Authorization".to_owned(), "Bearer s3cret".to_owned());
        for (text, expected) in [
            ("novalue", HeaderError::Entry { position: 1 }),
            ("A=1,=2", HeaderError::Entry { position: 2 }),
            ("X-A=1,Bad s3cret=1", HeaderError::Name { position: 2 }),
            // curl's style: the name is everything before the first `=`, which base64's padding
            // supplies.
            (
                "Authorization: Basic s3cretdXNlcg==",
                HeaderError::Name { position: 1 },
            ),
            (
                "Content-Type=text/plain",
                HeaderError::Reserved {
                    position: Some(1),
                    header: "Content-Type",
                },
            ),
            (
                "X-A=1,x-a=2",
                HeaderError::Duplicate {
                    position: 2,
                    first: Some(1),
                },
            ),
            (
                "authorization=Basic s3cret",
                HeaderError::Duplicate {
                    position: 1,
                    first: None,
                },
            ),
            ("X-A=s3cret%zz", HeaderError::Escape { position: 1 }),
            ("X-A=s3cret%0a", HeaderError::Value { position: Some(1) }),
        ] {
            let err = parse(text, Some(&auth)).unwrap_err();
            assert_eq!(err, expected, "{text}");
            let message = err.to_string();
            assert!(
                !message.contains("s3cret") && !message.contains("dXNl"),
                "{message}"
            );
        }
        let many: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("X-{i}=v")).collect();
        assert_eq!(parse(&many.join(","), None), Err(HeaderError::TooMany));
        assert_eq!(parse(" , ", None), Ok(Vec::new()));
    }

    #[test]
    fn credential_headers_are_known_by_their_names() {
        for name in [
            "Authorization",
            "Proxy-Authorization",
            "X-Auth-Token",
            "X-API-KEY",
            "X-ClickHouse-Key",
            "Cookie",
            "X-Vault-Token",
            "X-Client-Secret",
            "X-Password",
        ] {
            assert!(carries_credential(name), "{name}");
        }
        for name in ["X-Scope-OrgID", "X-ClickHouse-User", "X-Tenant", "Accept"] {
            assert!(!carries_credential(name), "{name}");
        }
    }

    #[test]
    fn auth_headers_and_schemes() {
        assert_eq!(auth("Authorization", "ApiKey", "k").unwrap().1, "ApiKey k");
        assert!(matches!(
            auth("X Key", "", "k"),
            Err(HeaderError::AuthHeader { .. })
        ));
        assert_eq!(
            auth("host", "", "k"),
            Err(HeaderError::Reserved {
                position: None,
                header: "Host"
            })
        );
        assert_eq!(
            auth("X-Key", "Bearer", "k\n"),
            Err(HeaderError::Value { position: None })
        );
        assert!(matches!(
            auth("Authorization", "Bearer x", "k"),
            Err(HeaderError::Scheme { .. })
        ));
    }
}
