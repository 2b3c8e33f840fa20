//! Prometheus text exposition (format 0.0.4), written by both binaries' `/metrics`.
//!
//! One small writer rather than a metrics library: the counters are plain atomics updated on the
//! hot path, and rendering is a few dozen lines of text per scrape.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

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

/// A histogram of durations whose observations are lock-free (atomics), for counting on hot
/// paths and from several threads.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cli_support::prometheus::{Exposition, Kind, Seconds};
///
/// static BOUNDS: [f64; 2] = [0.001, 0.1];
/// let latency = Seconds::new(&BOUNDS);
/// latency.observe(Duration::from_micros(400));
/// latency.observe(Duration::from_secs(1));
/// let mut text = Exposition::default();
/// latency.render(&mut text.family("demo_seconds", Kind::Histogram, "Time."), &[]);
/// assert!(text.finish().contains("demo_seconds_bucket{le=\"0.001\"} 1\ndemo_seconds_bucket{le=\"0.1\"} 1\ndemo_seconds_bucket{le=\"+Inf\"} 2\n"));
/// ```
#[derive(Debug)]
pub struct Seconds {
    bounds: &'static [f64],
    /// Per bucket, observations at most its bound and above the previous one.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Seconds {
    /// An empty histogram with these bucket upper bounds (seconds, increasing).
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = self.bounds.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// Writes the histogram's lines with these labels into `family`.
    pub fn render(&self, family: &mut Family<'_>, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, count)| {
                cumulative += count.load(Relaxed);
                (bound, cumulative)
            })
            .collect();
        family.histogram(
            labels,
            &buckets,
            self.sum_ns.load(Relaxed) as f64 / 1e9,
            self.count.load(Relaxed),
        );
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
