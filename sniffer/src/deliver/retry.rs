//! What to do after a delivery attempt, and how long to wait before the next one.
//!
//! Which answers are retried depends on the collector's protocol ([`Policy`]); retries wait a
//! capped exponential backoff with jitter, honouring `Retry-After` up to the cap. Everything else
//! but `2xx` rejects the batch (`3xx` too: redirects are not followed with a token). Pure logic;
//! the sender does the I/O.

use std::time::{Duration, SystemTime};

/// Verdict on one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The collector took the batch.
    Delivered,
    /// Try again; `after` is the collector's `Retry-After`, when it sent a usable one.
    Retry {
        /// Minimum wait the collector asked for.
        after: Option<Duration>,
    },
    /// The collector refused the batch for good; it is dropped and counted.
    Reject,
}

/// Which statuses are worth another attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `408`, `429` and every `5xx` (the `batch`, `ndjson` and `loki` formats).
    Standard,
    /// The OTLP/HTTP specification's: `429`, `502`, `503` and `504` only.
    Otlp,
}

/// Classifies an HTTP status (with its `Retry-After` header, if any) under `policy`.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sniffer::deliver::retry::{classify, Policy, Verdict};
///
/// let now = SystemTime::now();
/// assert_eq!(classify(Policy::Standard, 204, None, now), Verdict::Delivered);
/// assert_eq!(
///     classify(Policy::Standard, 503, Some("7"), now),
///     Verdict::Retry { after: Some(Duration::from_secs(7)) }
/// );
/// assert_eq!(classify(Policy::Standard, 400, None, now), Verdict::Reject);
/// assert_eq!(classify(Policy::Otlp, 500, None, now), Verdict::Reject);
/// ```
#[must_use]
pub fn classify(
    policy: Policy,
    status: u16,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Verdict {
    let retried = match policy {
        Policy::Standard => matches!(status, 408 | 429 | 500..=599),
        Policy::Otlp => matches!(status, 429 | 502 | 503 | 504),
    };
    match status {
        200..=299 => Verdict::Delivered,
        _ if retried => Verdict::Retry {
            after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        _ => Verdict::Reject,
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in the past
/// means no wait; anything unparsable is ignored.
#[must_use]
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Capped exponential backoff with "equal jitter": the n-th wait is uniformly drawn from
/// `[d/2, d]` with `d = min(initial × 2ⁿ, max)`, so retries of many agents spread out but never
/// come sooner than half the nominal delay.
#[derive(Clone, Debug)]
#[must_use]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next wait, given `unit` uniformly drawn from `[0, 1)`, and a `Retry-After` floor. No
    /// wait exceeds the cap, whatever the collector asks: a `Retry-After` of years would stop
    /// delivery for good.
    pub fn next_delay(&mut self, unit: f64, retry_after: Option<Duration>) -> Duration {
        let nominal = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jittered = nominal.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
        retry_after
            .map_or(jittered, |floor| jittered.max(floor))
            .min(self.max)
    }

    /// Attempts so far.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(
                classify(Policy::Standard, status, None, now),
                Verdict::Delivered,
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                classify(Policy::Standard, status, None, now),
                Verdict::Retry { after: None },
                "{status}"
            );
        }
        for status in [
            301, 302, 307, 400, 401, 403, 404, 405, 409, 413, 415, 422, 100,
        ] {
            assert_eq!(
                classify(Policy::Standard, status, None, now),
                Verdict::Reject,
                "{status}"
            );
        }
        // Retry-After on a rejecting status changes nothing.
        assert_eq!(
            classify(Policy::Standard, 400, Some("5"), now),
            Verdict::Reject
        );
    }

    #[test]
    fn otlp_retries_only_what_its_specification_allows() {
        let now = SystemTime::now();
        for status in [429, 502, 503, 504] {
            assert!(
                matches!(
                    classify(Policy::Otlp, status, None, now),
                    Verdict::Retry { .. }
                ),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 408, 413, 500, 501, 505, 599] {
            assert_eq!(
                classify(Policy::Otlp, status, None, now),
                Verdict::Reject,
                "{status}"
            );
        }
        assert_eq!(
            classify(Policy::Otlp, 503, Some("2"), now),
            Verdict::Retry {
                after: Some(Duration::from_secs(2))
            }
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Fri, 27 Nov 2026 18:44:56 GMT").unwrap();
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 18:45:06 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 18:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "soon", "-1", "1.5", "27/11/2026"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(
            classify(Policy::Standard, 429, Some("3"), now),
            Verdict::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let top: Vec<u128> = (0..6)
            .map(|_| backoff.next_delay(1.0, None).as_millis())
            .collect();
        assert_eq!(top, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.attempts(), 6);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bottom: Vec<u128> = (0..6)
            .map(|_| backoff.next_delay(0.0, None).as_millis())
            .collect();
        assert_eq!(bottom, [50, 100, 200, 400, 500, 500]);
    }

    #[test]
    fn backoff_never_overflows_and_honours_retry_after() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(backoff.next_delay(0.7, None) <= Duration::from_secs(30));
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(
            backoff.next_delay(0.0, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }

    /// `Retry-After: 999999999` froze delivery and `18446744073709551615` overflowed the
    /// sender's clock arithmetic: every wait is capped at the backoff maximum.
    #[test]
    fn huge_retry_after_is_capped() {
        let now = SystemTime::now();
        let cap = Duration::from_secs(30);
        for value in [
            "999999999",
            "18446744073709551615",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let Verdict::Retry { after } = classify(Policy::Standard, 503, Some(value), now) else {
                panic!("{value}: not retried");
            };
            let mut backoff = Backoff::new(Duration::from_millis(100), cap);
            assert_eq!(backoff.next_delay(0.5, after), cap, "{value}");
        }
        // Too large for a u64 of seconds: ignored, the backoff alone decides.
        assert_eq!(parse_retry_after("18446744073709551616", now), None);
    }
}
