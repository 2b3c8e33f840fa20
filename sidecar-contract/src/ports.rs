//! `PORTS` lists (`8080, 8443`): the sniffer's variable and the injector's `tcp-sniffer/ports`
//! annotation accept exactly the same thing, through this one parser.

use std::collections::BTreeSet;

use crate::{MAX_PORTS, echo::Echo};

/// Why a port list was refused; the caller names the variable or annotation.
#[derive(Debug, PartialEq, Eq)]
pub enum PortsError {
    /// Nothing but whitespace.
    Empty,
    /// Two commas in a row, or a leading or trailing comma.
    EmptyEntry {
        /// 1-based position of the empty entry.
        position: usize,
    },
    /// Not a decimal number.
    NotANumber {
        /// The offending entry.
        token: String,
    },
    /// 0 or above 65535.
    OutOfRange {
        /// The offending entry.
        token: String,
    },
    /// Listed twice.
    Duplicate {
        /// The repeated port.
        port: u16,
    },
    /// More ports than the kernel map holds.
    TooMany {
        /// How many were listed.
        count: usize,
    },
}

impl core::fmt::Display for PortsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => write!(f, "no port is listed: give at least one, e.g. 8080,8443"),
            Self::EmptyEntry { position } => write!(f, "entry {position} is empty"),
            Self::NotANumber { token } => write!(f, "entry {:?} is not a port number", Echo(token)),
            Self::OutOfRange { token } => {
                write!(
                    f,
                    "entry {:?} is out of range: TCP ports are 1-65535",
                    Echo(token)
                )
            }
            Self::Duplicate { port } => write!(f, "port {port} is listed more than once"),
            Self::TooMany { count } => {
                write!(
                    f,
                    "{count} ports are listed; at most {MAX_PORTS} are supported"
                )
            }
        }
    }
}

impl core::error::Error for PortsError {}

/// Parses a comma-separated port list; spaces around entries are allowed. Returns the ports
/// sorted.
///
/// # Examples
///
/// ```
/// use sidecar_contract::ports::{parse_ports, PortsError};
///
/// assert_eq!(parse_ports(" 8443, 8080 "), Ok(vec![8080, 8443]));
/// assert_eq!(parse_ports("80,http"), Err(PortsError::NotANumber { token: "http".into() }));
/// ```
pub fn parse_ports(value: &str) -> Result<Vec<u16>, PortsError> {
    if value.trim().is_empty() {
        return Err(PortsError::Empty);
    }
    let mut ports = BTreeSet::new();
    for (index, token) in value.split(',').enumerate() {
        let token = token.trim();
        if token.is_empty() {
            return Err(PortsError::EmptyEntry {
                position: index + 1,
            });
        }
        if !token.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PortsError::NotANumber {
                token: token.to_string(),
            });
        }
        let port = token
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| PortsError::OutOfRange {
                token: token.to_string(),
            })?;
        if !ports.insert(port) {
            return Err(PortsError::Duplicate { port });
        }
    }
    if ports.len() > MAX_PORTS as usize {
        return Err(PortsError::TooMany { count: ports.len() });
    }
    Ok(ports.into_iter().collect())
}

/// Formats ports as the sniffer's `PORTS` value (`8080,8443`).
#[must_use]
pub fn format_ports(ports: &[u16]) -> String {
    let mut out = String::new();
    for (i, port) in ports.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&port.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lists_with_spaces() {
        assert_eq!(parse_ports("8080,8443"), Ok(vec![8080, 8443]));
        assert_eq!(parse_ports(" 8080 , 8443 "), Ok(vec![8080, 8443]));
        assert_eq!(parse_ports("1,65535"), Ok(vec![1, 65535]));
        assert_eq!(parse_ports("443"), Ok(vec![443]));
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(parse_ports(""), Err(PortsError::Empty));
        assert_eq!(parse_ports("  "), Err(PortsError::Empty));
        assert_eq!(
            parse_ports("8080,,8443"),
            Err(PortsError::EmptyEntry { position: 2 })
        );
        assert!(matches!(
            parse_ports("8080,"),
            Err(PortsError::EmptyEntry { position: 2 })
        ));
        assert!(matches!(
            parse_ports(",8080"),
            Err(PortsError::EmptyEntry { position: 1 })
        ));
    }

    #[test]
    fn rejects_zero_and_out_of_range() {
        for token in ["0", "65536", "70000", "99999999999999999999"] {
            assert_eq!(
                parse_ports(&format!("80,{token}")),
                Err(PortsError::OutOfRange {
                    token: token.into()
                })
            );
        }
    }

    #[test]
    fn rejects_non_numbers() {
        for token in ["http", "-1", "+80", "80a", "8 080", "0x50", "８０"] {
            assert_eq!(
                parse_ports(token),
                Err(PortsError::NotANumber {
                    token: token.into()
                }),
                "{token}"
            );
        }
    }

    #[test]
    fn rejects_duplicates() {
        assert_eq!(
            parse_ports("80,80"),
            Err(PortsError::Duplicate { port: 80 })
        );
        assert_eq!(
            parse_ports("80, 443, 080"),
            Err(PortsError::Duplicate { port: 80 })
        );
    }

    #[test]
    fn rejects_more_than_the_map_holds() {
        let max: Vec<String> = (1..=MAX_PORTS).map(|p| p.to_string()).collect();
        assert_eq!(
            parse_ports(&max.join(",")).unwrap().len(),
            MAX_PORTS as usize
        );
        let over: Vec<String> = (1..=MAX_PORTS + 1).map(|p| p.to_string()).collect();
        assert_eq!(
            parse_ports(&over.join(",")),
            Err(PortsError::TooMany {
                count: MAX_PORTS as usize + 1
            })
        );
    }

    #[test]
    fn messages_name_the_bad_entry() {
        assert_eq!(
            parse_ports("8080,80x").unwrap_err().to_string(),
            r#"entry "80x" is not a port number"#
        );
        assert!(
            parse_ports("8080,70000")
                .unwrap_err()
                .to_string()
                .contains("70000")
        );
        assert_eq!(
            parse_ports("80,80").unwrap_err().to_string(),
            "port 80 is listed more than once"
        );
    }

    #[test]
    fn formats_as_the_variable() {
        assert_eq!(format_ports(&[8080, 8443]), "8080,8443");
        assert_eq!(format_ports(&[80]), "80");
        assert_eq!(
            parse_ports(&format_ports(&[1, 2, 65535])),
            Ok(vec![1, 2, 65535])
        );
    }
}
