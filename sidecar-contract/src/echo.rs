//! Quoting user-supplied values in messages and logs without echoing all of them.
//!
//! A hostile or careless value (a 2 MiB annotation, a uid, an environment variable) must not come
//! back whole in an error message, an admission response or a log line.

use core::fmt;

/// The most bytes of a value that a message repeats.
pub const ECHO_MAX_BYTES: usize = 256;

/// A value to quote in a message: formats like `{:?}` of a `str` when it is short, and as its first
/// [`ECHO_MAX_BYTES`] bytes (cut at a character boundary) plus a marker with its length otherwise.
///
/// # Examples
///
/// ```
/// use sidecar_contract::echo::Echo;
///
/// assert_eq!(format!("{:?}", Echo("8080,http")), r#""8080,http""#);
/// let long = "x".repeat(1000);
/// let quoted = format!("{:?}", Echo(&long));
/// assert!(quoted.len() < 300);
/// assert!(quoted.ends_with(r#"x…" (1000 bytes, truncated)"#));
/// ```
#[derive(Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

impl Echo<'_> {
    /// The part of the value that is repeated.
    #[must_use]
    pub fn shown(&self) -> &str {
        let value = self.0;
        if value.len() <= ECHO_MAX_BYTES {
            return value;
        }
        let mut end = ECHO_MAX_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        &value[..end]
    }

    /// Whether the value is longer than what is shown.
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        self.0.len() > ECHO_MAX_BYTES
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_truncated() {
            return fmt::Debug::fmt(self.0, f);
        }
        // The Debug form of the prefix, with the closing quote moved after the ellipsis.
        let mut quoted = QuoteCutter {
            f,
            pending_quote: false,
        };
        fmt::write(&mut quoted, format_args!("{:?}", self.shown()))?;
        write!(f, "…\" ({} bytes, truncated)", self.0.len())
    }
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())?;
        if self.is_truncated() {
            write!(f, "… ({} bytes, truncated)", self.0.len())?;
        }
        Ok(())
    }
}

/// Passes text through but holds back a final `"`, so a quoted string can be reopened.
struct QuoteCutter<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    pending_quote: bool,
}

impl fmt::Write for QuoteCutter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.pending_quote {
            self.f.write_str("\"")?;
            self.pending_quote = false;
        }
        match s.strip_suffix('"') {
            Some(head) => {
                self.pending_quote = true;
                self.f.write_str(head)
            }
            None => self.f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(format!("{:?}", Echo("a\"b\n")), r#""a\"b\n""#);
        assert_eq!(format!("{}", Echo("plain")), "plain");
        let exact = "y".repeat(ECHO_MAX_BYTES);
        assert_eq!(format!("{:?}", Echo(&exact)), format!("{exact:?}"));
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        // 'é' is two bytes: 255 'a's then 'é' straddles the limit.
        let value = format!("{}é{}", "a".repeat(255), "b".repeat(2 << 20));
        let debug = format!("{:?}", Echo(&value));
        assert_eq!(
            debug,
            format!(
                "\"{}…\" ({} bytes, truncated)",
                "a".repeat(255),
                value.len()
            )
        );
        let display = format!("{}", Echo(&value));
        assert!(display.starts_with(&"a".repeat(255)));
        assert!(display.ends_with("bytes, truncated)"));
        assert!(display.len() < ECHO_MAX_BYTES + 40);
    }

    #[test]
    fn a_quote_at_the_cut_stays_escaped() {
        let value: String = core::iter::repeat_n('"', 1000).collect();
        let debug = format!("{:?}", Echo(&value));
        assert!(debug.starts_with("\"\\\"\\\""), "{debug}");
        assert!(
            debug.ends_with("\\\"…\" (1000 bytes, truncated)"),
            "{debug}"
        );
    }
}
