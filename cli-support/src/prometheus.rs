//! Prometheus text exposition (format 0.0.4), written by both binaries' `/metrics`.
//!
//! One small writer rather than a metrics library: the counters are plain atomics updated on the
//! hot path, and rendering is a few dozen lines of text per scrape.

use std::fmt::Write as _;

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

/// The text of one scrape.
///
/// # Examples
///
/// ```
/// use cli_support::prometheus::{Exposition, Kind};
///
/// let mut text = Exposition::default();
/// text.family("demo_requests_total", Kind::Counter, "Requests.")
///     .sample(&[("result", "ok")], 3)
///     .sample(&[("result", "error")], 1);
/// assert_eq!(
///     text.finish(),
///     "# HELP demo_requests_total Requests.\n# TYPE demo_requests_total counter\n\
///      demo_requests_total{result=\"ok\"} 3\ndemo_requests_total{result=\"error\"} 1\n"
/// );
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its `HELP` and `TYPE` lines. Its samples follow.
    pub fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        let kind_text = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind_text}");
        Family {
            text: &mut self.text,
            name,
        }
    }

    /// The text.
    #[must_use]
    pub fn finish(self) -> String {
        self.text
    }
}

/// The samples of one family.
#[derive(Debug)]
pub struct Family<'a> {
    text: &'a mut String,
    name: &'a str,
}

/// A sample value.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    /// A count.
    Integer(u64),
    /// A measurement.
    Float(f64),
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Self::Integer(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Self::Float(value)
    }
}

impl Family<'_> {
    /// One sample with these labels.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let name = self.name;
        self.line(name, "", labels, value.into());
        self
    }

    /// A histogram's lines: `buckets` are (upper bound, cumulative count) in increasing order;
    /// the `+Inf` bucket is `count`.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Self {
        let name = self.name;
        for &(bound, cumulative) in buckets {
            let le = bound.to_string();
            let labels = [labels, &[("le", le.as_str())]].concat();
            self.line(name, "_bucket", &labels, cumulative.into());
        }
        let labels_inf = [labels, &[("le", "+Inf")]].concat();
        self.line(name, "_bucket", &labels_inf, count.into());
        self.line(name, "_sum", labels, sum.into());
        self.line(name, "_count", labels, count.into());
        self
    }

    fn line(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], value: Value) {
        let text = &mut *self.text;
        text.push_str(name);
        text.push_str(suffix);
        if !labels.is_empty() {
            text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(text, "{key}=\"{escaped}\"");
            }
            text.push('}');
        }
        let _ = match value {
            Value::Integer(v) => writeln!(text, " {v}"),
            Value::Float(v) => writeln!(text, " {v}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_lines_and_escaping() {
        let mut text = Exposition::default();
        text.family("lat_seconds", Kind::Histogram, "Time.\nTwo lines \\ here.")
            .histogram(&[("port", "80\"x")], &[(0.001, 2), (0.25, 5)], 0.5, 7);
        assert_eq!(
            text.finish(),
            "# HELP lat_seconds Time.\\nTwo lines \\\\ here.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{port=\"80\\\"x\",le=\"0.001\"} 2\n\
             lat_seconds_bucket{port=\"80\\\"x\",le=\"0.25\"} 5\n\
             lat_seconds_bucket{port=\"80\\\"x\",le=\"+Inf\"} 7\n\
             lat_seconds_sum{port=\"80\\\"x\"} 0.5\nlat_seconds_count{port=\"80\\\"x\"} 7\n"
        );
    }
}
