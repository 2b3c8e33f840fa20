//! The pod's annotations as the kubelet writes them into a downward-API volume, and what a new
//! `tcp-sniffer/ports` value there means for the captured ports (`PORTS_FILE`).
//!
//! Pure: text in, a [`PortsChange`] out; reading the file and changing the kernel's ports is the
//! caller's.
//!
//! The kubelet writes one line per annotation, sorted by key, as Go's `fmt` `%s=%q` does:
//! `tcp-sniffer/ports="8080,8443"`. Keys cannot hold `=` or a line break; values are quoted
//! with Go's escapes, so each annotation is exactly one line.

use sidecar_contract::{
    echo::Echo,
    ports::{PortsError, parse_ports},
};
use thiserror::Error;

/// The annotation holding the ports, as the injector reads it at admission.
pub const PORTS_ANNOTATION: &str = "tcp-sniffer/ports";

/// A line of the annotations file that is not `key="value"` as the kubelet writes it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line} of the annotations file is not key=\"value\": {problem}")]
pub struct AnnotationsError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// The value of annotation `key` in an annotations file, unquoted; `None` when the pod does not
/// have it. Only the line of `key` is parsed: a line this parser cannot read elsewhere in the
/// file does not hide the ports.
///
/// # Errors
///
/// When the line of `key` is not a Go-quoted string.
///
/// # Examples
///
/// ```
/// use sniffer::ports::podinfo::annotation;
///
/// let text = "app=\"web\"\ntcp-sniffer/ports=\"8080,8443\"\n";
/// assert_eq!(annotation(text, "tcp-sniffer/ports"), Ok(Some("8080,8443".to_owned())));
/// assert_eq!(annotation(text, "tcp-sniffer/inject"), Ok(None));
/// ```
pub fn annotation(text: &str, key: &str) -> Result<Option<String>, AnnotationsError> {
    for (index, line) in text.lines().enumerate() {
        let Some(quoted) = line
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            continue;
        };
        return unquote(quoted)
            .map(Some)
            .map_err(|problem| AnnotationsError {
                line: index + 1,
                problem,
            });
    }
    Ok(None)
}

/// Undoes Go's `strconv.Quote`: a double-quoted string with backslash escapes.
fn unquote(quoted: &str) -> Result<String, &'static str> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or("the value is not in double quotes")?;
    let mut out = String::with_capacity(inner.len());
    let mut bytes = Vec::new();
    let mut chars = inner.chars();
    // `\x` escapes are bytes (of possibly invalid UTF-8): gathered, then decoded lossily.
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("an unescaped quote inside the value"),
            '\\' => {
                let escape = chars.next().ok_or("a backslash ends the value")?;
                let simple = match escape {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    '\'' => Some('\''),
                    _ => None,
                };
                if let Some(simple) = simple {
                    flush(&mut bytes, &mut out);
                    out.push(simple);
                    continue;
                }
                let digits = match escape {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => return Err("an unknown escape"),
                };
                let hex: String = chars.by_ref().take(digits).collect();
                let value = (hex.len() == digits)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or("a malformed hexadecimal escape")?;
                if escape == 'x' {
                    bytes.push(value as u8);
                } else {
                    flush(&mut bytes, &mut out);
                    out.push(char::from_u32(value).ok_or("an escape that is not a character")?);
                }
            }
            c => {
                flush(&mut bytes, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut bytes, &mut out);
    Ok(out)
}

/// What a read of the annotations file asks of the captured ports.
#[derive(Debug, PartialEq, Eq)]
pub enum PortsChange {
    /// Nothing to do: the ports asked for are the ones captured.
    Unchanged,
    /// Capture these ports instead (sorted, unique).
    Apply(Vec<u16>),
    /// The annotation's value cannot be used; the current ports stay.
    Refuse(RefusedPorts),
}

/// Why a new `tcp-sniffer/ports` value was not applied.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RefusedPorts {
    /// The file could not be parsed.
    #[error(transparent)]
    File(#[from] AnnotationsError),
    /// The annotation's value is not a port list.
    #[error(
        "annotation {PORTS_ANNOTATION} {:?} is invalid: {problem}",
        Echo(value)
    )]
    Ports {
        /// The value.
        value: String,
        /// What is wrong with it.
        problem: PortsError,
    },
}

/// What `text` (the annotations file) asks of the ports, given the ones captured now and the
/// ones the sniffer started with (`PORTS`, which a pod without the annotation keeps: removing
/// the annotation goes back to what admission chose).
///
/// # Examples
///
/// ```
/// use sniffer::ports::podinfo::{PortsChange, ports_change};
///
/// let text = "tcp-sniffer/ports=\"8443, 8080\"\n";
/// assert_eq!(ports_change(text, &[8080], &[8080]), PortsChange::Apply(vec![8080, 8443]));
/// assert_eq!(ports_change("", &[8443], &[8080]), PortsChange::Apply(vec![8080]));
/// ```
#[must_use]
pub fn ports_change(text: &str, current: &[u16], initial: &[u16]) -> PortsChange {
    let wanted = match annotation(text, PORTS_ANNOTATION) {
        Err(err) => return PortsChange::Refuse(err.into()),
        Ok(None) => initial.to_vec(),
        Ok(Some(value)) => match parse_ports(&value) {
            Ok(ports) => ports,
            Err(problem) => return PortsChange::Refuse(RefusedPorts::Ports { value, problem }),
        },
    };
    if wanted == current {
        PortsChange::Unchanged
    } else {
        PortsChange::Apply(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kubelet writes (`%s=%q`), for the values these tests use.
    fn go_quote(value: &str) -> String {
        let mut out = String::from("\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn reads_the_kubelet_file_with_other_annotations_around() {
        // As a real pod's file looks, with a JSON annotation holding quotes and a newline.
        let text = format!(
            "kubectl.kubernetes.io/default-container={}\nkubectl.kubernetes.io/last-applied-configuration={}\ntcp-sniffer/injected=\"true\"\ntcp-sniffer/ports={}\n",
            go_quote("web"),
            go_quote("{\"apiVersion\":\"v1\",\n\"kind\":\"Pod\"}"),
            go_quote("8080, 9090")
        );
        assert_eq!(
            annotation(&text, PORTS_ANNOTATION),
            Ok(Some("8080, 9090".into()))
        );
        assert_eq!(
            annotation(&text, "kubectl.kubernetes.io/last-applied-configuration"),
            Ok(Some("{\"apiVersion\":\"v1\",\n\"kind\":\"Pod\"}".into()))
        );
        assert_eq!(annotation(&text, "tcp-sniffer/inject"), Ok(None));
    }

    #[test]
    fn go_escapes_round_trip() {
        for value in [
            "",
            "plain",
            "quote \" and \\",
            "tab\tnew\nline",
            "bell \u{7}",
            "é ✓",
        ] {
            let line = format!("k={}", go_quote(value));
            assert_eq!(annotation(&line, "k"), Ok(Some(value.to_owned())), "{line}");
        }
        assert_eq!(
            annotation(r#"k="\x41\u00e9\U0001F600\a\v\f\b\r\'""#, "k"),
            Ok(Some("Aé😀\u{7}\u{b}\u{c}\u{8}\r'".into()))
        );
        // Invalid UTF-8 written as \x bytes is replaced, not an error.
        assert_eq!(annotation(r#"k="\xff""#, "k"), Ok(Some("\u{fffd}".into())));
    }

    #[test]
    fn a_key_that_only_starts_like_ours_is_another_annotation() {
        let text = "tcp-sniffer/ports-old=\"1\"\ntcp-sniffer/ports=\"2\"\n";
        assert_eq!(annotation(text, PORTS_ANNOTATION), Ok(Some("2".into())));
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_problem() {
        for (text, problem) in [
            (
                "tcp-sniffer/ports=8080",
                "the value is not in double quotes",
            ),
            (
                "tcp-sniffer/ports=\"8080",
                "the value is not in double quotes",
            ),
            (
                "tcp-sniffer/ports=\"80\"80\"",
                "an unescaped quote inside the value",
            ),
            ("tcp-sniffer/ports=\"\\q\"", "an unknown escape"),
            (
                "tcp-sniffer/ports=\"\\x4\"",
                "a malformed hexadecimal escape",
            ),
            (
                "tcp-sniffer/ports=\"\\ud800\"",
                "an escape that is not a character",
            ),
        ] {
            let text = format!("a=\"b\"\n{text}\n");
            assert_eq!(
                annotation(&text, PORTS_ANNOTATION),
                Err(AnnotationsError { line: 2, problem }),
                "{text}"
            );
        }
        // A broken line of another annotation does not matter.
        assert_eq!(
            annotation("a=oops\ntcp-sniffer/ports=\"1\"", PORTS_ANNOTATION),
            Ok(Some("1".into()))
        );
    }

    #[test]
    fn changes_follow_the_annotation_and_fall_back_to_the_start_ports() {
        let file = |ports: &str| format!("tcp-sniffer/ports={}\n", go_quote(ports));
        assert_eq!(
            ports_change(&file("8080"), &[8080], &[8080]),
            PortsChange::Unchanged
        );
        assert_eq!(
            ports_change(&file("9090,8080"), &[8080], &[8080]),
            PortsChange::Apply(vec![8080, 9090])
        );
        assert_eq!(
            ports_change("other=\"x\"\n", &[9090], &[8080]),
            PortsChange::Apply(vec![8080])
        );
        assert_eq!(ports_change("", &[8080], &[8080]), PortsChange::Unchanged);
        let refused = ports_change(&file("0"), &[8080], &[8080]);
        let PortsChange::Refuse(reason) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(
            reason.to_string(),
            "annotation tcp-sniffer/ports \"0\" is invalid: entry \"0\" is out of range: TCP ports are 1-65535"
        );
        assert!(matches!(
            ports_change("tcp-sniffer/ports=80", &[8080], &[8080]),
            PortsChange::Refuse(RefusedPorts::File(_))
        ));
    }
}
