//! What a request to the capture endpoint asks for, decided from its method and target alone.
//! Pure: the server turns each [`RequestError`] into its status and message.

use std::time::Duration;

use thiserror::Error;

/// The default `seconds` of `GET /capture`.
pub const DEFAULT_SECONDS: u64 = 10;

/// What the endpoint allows, as configured and as the sniffer captures now.
#[derive(Clone, Copy, Debug)]
pub struct Limits<'a> {
    /// `CAPTURE_MAX_SECONDS`.
    pub max_duration: Duration,
    /// `CAPTURE_MAX_SNAPLEN` (0: headers only).
    pub max_snaplen: u32,
    /// The ports captured now.
    pub ports: &'a [u16],
}

/// `GET /capture`: a capture from now on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// How long at most.
    pub duration: Duration,
    /// The most packets, if limited.
    pub max_packets: Option<u64>,
    /// The most bytes of pcapng, if limited.
    pub max_bytes: Option<u64>,
    /// The first bytes of each packet kept; `None`: up to the end of its TCP header.
    pub snaplen: Option<u32>,
    /// Only packets from or to these ports; `None`: every captured port.
    pub ports: Option<Vec<u16>>,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A capture from now on.
    Live(Live),
    /// `GET /capture/recent`: what the flight recorder holds, only packets from or to `ports`
    /// if given.
    Recent {
        /// See [`Live::ports`].
        ports: Option<Vec<u16>>,
    },
}

/// A request the endpoint refuses.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// Not `GET` (`405`).
    #[error("only GET is served here")]
    Method,
    /// No such path (`404`).
    #[error("not found: try /capture?seconds=10 or /capture/recent")]
    NotFound,
    /// A parameter the path does not take (`400`).
    #[error("unknown parameter {0:?}: {1} takes {2}")]
    UnknownParameter(String, &'static str, &'static str),
    /// A parameter given twice (`400`).
    #[error("parameter {0} is given twice")]
    Repeated(&'static str),
    /// A value that is not a number, or not a list of ports (`400`).
    #[error("{name}={value:?} is not {what}")]
    Malformed {
        /// The parameter.
        name: &'static str,
        /// The value given (cut to 64 bytes).
        value: String,
        /// What it must be.
        what: &'static str,
    },
    /// A number outside its range (`400`).
    #[error("{name}={value} is out of range: it must be from {min} to {max}{why}")]
    OutOfRange {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
        /// Why the largest is what it is, when it is a setting.
        why: &'static str,
    },
    /// `snaplen` while the operator allows headers only (`400`).
    #[error(
        "snaplen is not allowed: packets are cut at the end of their TCP header (CAPTURE_MAX_SNAPLEN is 0, the operator's choice)"
    )]
    HeadersOnly,
    /// `ports` lists a port the sniffer does not capture (`400`).
    #[error("ports: {port} is not captured (captured: {captured})")]
    PortNotCaptured {
        /// The port asked for.
        port: u16,
        /// The ports captured, comma-separated.
        captured: String,
    },
}

impl RequestError {
    /// The HTTP status line for this refusal.
    #[must_use]
    pub const fn status(&self) -> &'static str {
        match self {
            Self::Method => "405 Method Not Allowed",
            Self::NotFound => "404 Not Found",
            _ => "400 Bad Request",
        }
    }
}

/// Decides what `method` on `target` (path and query) asks for.
///
/// # Errors
///
/// When it asks for something the endpoint does not serve or does not allow; each error says
/// which parameter and why.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sniffer::pcap::request::{Limits, Request, parse};
///
/// let limits = Limits { max_duration: Duration::from_secs(300), max_snaplen: 0, ports: &[8080] };
/// let Ok(Request::Live(live)) = parse("GET", "/capture?seconds=5&max_packets=100", limits) else {
///     panic!("a capture");
/// };
/// assert_eq!((live.duration, live.max_packets), (Duration::from_secs(5), Some(100)));
/// assert!(parse("GET", "/capture?snaplen=1500", limits).is_err(), "headers only here");
/// ```
pub fn parse(method: &str, target: &str, limits: Limits<'_>) -> Result<Request, RequestError> {
    if method != "GET" {
        return Err(RequestError::Method);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/capture" => live(query, limits).map(Request::Live),
        "/capture/recent" => {
            let mut ports = None;
            for (name, value) in pairs(query) {
                match name.as_str() {
                    "ports" => set(&mut ports, "ports", port_list(&value, limits.ports)?)?,
                    _ => {
                        return Err(RequestError::UnknownParameter(
                            name,
                            "/capture/recent",
                            "ports",
                        ));
                    }
                }
            }
            Ok(Request::Recent { ports })
        }
        _ => Err(RequestError::NotFound),
    }
}

fn live(query: &str, limits: Limits<'_>) -> Result<Live, RequestError> {
    let (mut seconds, mut max_packets, mut max_bytes, mut snaplen, mut ports) =
        (None, None, None, None, None);
    let max_seconds = limits.max_duration.as_secs();
    for (name, value) in pairs(query) {
        match name.as_str() {
            "seconds" => {
                let n = within("seconds", &value, 1, max_seconds, " (CAPTURE_MAX_SECONDS)")?;
                set(&mut seconds, "seconds", n)?;
            }
            "max_packets" => {
                let n = within("max_packets", &value, 1, u64::MAX, "")?;
                set(&mut max_packets, "max_packets", n)?;
            }
            "max_bytes" => {
                let n = within("max_bytes", &value, 1, u64::MAX, "")?;
                set(&mut max_bytes, "max_bytes", n)?;
            }
            "snaplen" => {
                if limits.max_snaplen == 0 {
                    return Err(RequestError::HeadersOnly);
                }
                let n = within(
                    "snaplen",
                    &value,
                    1,
                    u64::from(limits.max_snaplen),
                    " (CAPTURE_MAX_SNAPLEN)",
                )?;
                set(
                    &mut snaplen,
                    "snaplen",
                    u32::try_from(n).expect("at most CAPTURE_MAX_SNAPLEN"),
                )?;
            }
            "ports" => set(&mut ports, "ports", port_list(&value, limits.ports)?)?,
            _ => {
                return Err(RequestError::UnknownParameter(
                    name,
                    "/capture",
                    "seconds, max_packets, max_bytes, snaplen, ports",
                ));
            }
        }
    }
    Ok(Live {
        duration: Duration::from_secs(seconds.unwrap_or(DEFAULT_SECONDS.min(max_seconds))),
        max_packets,
        max_bytes,
        snaplen,
        ports,
    })
}

fn set<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), RequestError> {
    if slot.replace(value).is_some() {
        return Err(RequestError::Repeated(name));
    }
    Ok(())
}

/// The query's `name=value` pairs, percent-decoded (`+` is a space, as in forms).
fn pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(name), decode(value))
    })
}

/// Percent-decodes `text`; a `%` not followed by two hex digits stays as it is.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push(u8::try_from(high * 16 + low).expect("two hex digits"));
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `value` cut for a message: a hostile request's value can be long.
fn shown(value: &str) -> String {
    value.chars().take(64).collect()
}

fn within(
    name: &'static str,
    value: &str,
    min: u64,
    max: u64,
    why: &'static str,
) -> Result<u64, RequestError> {
    let n: u64 = value.trim().parse().map_err(|_| RequestError::Malformed {
        name,
        value: shown(value),
        what: "a whole number",
    })?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(RequestError::OutOfRange {
            name,
            value: n,
            min,
            max,
            why: if n > max { why } else { "" },
        })
    }
}

/// A comma-separated list of ports, each one of `captured`.
fn port_list(value: &str, captured: &[u16]) -> Result<Vec<u16>, RequestError> {
    let malformed = || RequestError::Malformed {
        name: "ports",
        value: shown(value),
        what: "a comma-separated list of ports",
    };
    let mut ports = Vec::new();
    for item in value.split(',') {
        let port: u16 = item.trim().parse().map_err(|_| malformed())?;
        if !captured.contains(&port) {
            return Err(RequestError::PortNotCaptured {
                port,
                captured: captured
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits<'static> = Limits {
        max_duration: Duration::from_secs(300),
        max_snaplen: 1500,
        ports: &[8080, 8443],
    };

    fn live(target: &str) -> Result<Live, RequestError> {
        match parse("GET", target, LIMITS)? {
            Request::Live(live) => Ok(live),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bare_capture_takes_the_defaults() {
        assert_eq!(
            live("/capture").unwrap(),
            Live {
                duration: Duration::from_secs(DEFAULT_SECONDS),
                max_packets: None,
                max_bytes: None,
                snaplen: None,
                ports: None,
            }
        );
    }

    #[test]
    fn every_parameter_is_read() {
        let asked =
            live("/capture?seconds=60&max_packets=5&max_bytes=9000&snaplen=96&ports=8443%2C8080")
                .unwrap();
        assert_eq!(asked.duration, Duration::from_secs(60));
        assert_eq!((asked.max_packets, asked.max_bytes), (Some(5), Some(9000)));
        assert_eq!(asked.snaplen, Some(96));
        assert_eq!(asked.ports, Some(vec![8443, 8080]));
    }

    #[test]
    fn refusals_name_the_parameter_and_the_reason() {
        let refused = |target: &str| live(target).unwrap_err();
        assert_eq!(
            refused("/capture?seconds=301"),
            RequestError::OutOfRange {
                name: "seconds",
                value: 301,
                min: 1,
                max: 300,
                why: " (CAPTURE_MAX_SECONDS)"
            }
        );
        assert!(
            refused("/capture?seconds=0")
                .to_string()
                .contains("seconds=0")
        );
        assert!(
            refused("/capture?seconds=ten")
                .to_string()
                .contains("\"ten\"")
        );
        assert!(
            refused("/capture?snaplen=1501")
                .to_string()
                .contains("CAPTURE_MAX_SNAPLEN")
        );
        assert_eq!(
            refused("/capture?ports=22").to_string(),
            "ports: 22 is not captured (captured: 8080,8443)"
        );
        assert!(
            refused("/capture?ports=8080,x")
                .to_string()
                .contains("list of ports")
        );
        assert!(
            refused("/capture?verbose=1")
                .to_string()
                .contains("\"verbose\"")
        );
        assert_eq!(
            refused("/capture?seconds=1&seconds=2"),
            RequestError::Repeated("seconds")
        );
        let long = format!("/capture?max_bytes={}", "9".repeat(10_000));
        assert!(refused(&long).to_string().len() < 200, "values are cut");
        for error in [refused("/capture?snaplen=0"), refused("/capture?ports=22")] {
            assert_eq!(error.status(), "400 Bad Request");
        }
    }

    #[test]
    fn snaplen_needs_the_operator_s_permission() {
        let headers_only = Limits {
            max_snaplen: 0,
            ..LIMITS
        };
        assert_eq!(
            parse("GET", "/capture?snaplen=60", headers_only),
            Err(RequestError::HeadersOnly)
        );
    }

    #[test]
    fn other_paths_and_methods() {
        assert_eq!(
            parse("GET", "/capture/recent?ports=8080", LIMITS),
            Ok(Request::Recent {
                ports: Some(vec![8080])
            })
        );
        assert!(matches!(
            parse("GET", "/capture/recent?seconds=1", LIMITS),
            Err(RequestError::UnknownParameter(..))
        ));
        let not_found = parse("GET", "/", LIMITS).unwrap_err();
        assert_eq!(not_found.status(), "404 Not Found");
        let method = parse("POST", "/capture", LIMITS).unwrap_err();
        assert_eq!(method.status(), "405 Method Not Allowed");
    }

    #[test]
    fn percent_decoding_leaves_stray_percent_signs() {
        assert_eq!(decode("a%2Cb+c%zz%4"), "a,b c%zz%4");
    }
}
