//! Time as the records and logs print it: a nanosecond UTC instant and its RFC 3339 text.

use core::fmt;

/// A UTC instant with nanosecond precision that displays as RFC 3339 (`…T…Z`).
///
/// Nanoseconds since the Unix epoch in an `i64`, like most nanosecond clocks: it spans
/// 1677-09-21 to 2262-04-11, so the year always has four digits and the text a fixed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    unix_nanos: i64,
}

impl Timestamp {
    /// Length of [`Timestamp::rfc3339`]: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
    pub const RFC3339_LEN: usize = 30;

    /// The instant `unix_nanos` nanoseconds after 1970-01-01T00:00:00Z.
    #[must_use]
    pub const fn from_unix_nanos(unix_nanos: i64) -> Self {
        Self { unix_nanos }
    }

    /// Nanoseconds since the Unix epoch.
    #[must_use]
    pub const fn unix_nanos(&self) -> i64 {
        self.unix_nanos
    }

    /// The RFC 3339 text as ASCII bytes, e.g. `2026-11-27T18:44:56.123456789Z`.
    ///
    /// # Examples
    ///
    /// ```
    /// use cli_support::time::Timestamp;
    ///
    /// let ts = Timestamp::from_unix_nanos(1_795_805_096_123_456_789);
    /// assert_eq!(&ts.rfc3339(), b"2026-11-27T18:44:56.123456789Z");
    /// ```
    #[must_use]
    pub fn rfc3339(&self) -> [u8; Self::RFC3339_LEN] {
        Rfc3339Writer::default().write(*self)
    }
}

/// Writes RFC 3339 text digit by digit, keeping the text of the last second it wrote: the
/// sniffer formats one timestamp per captured packet, consecutive ones mostly share their second,
/// and `core::fmt` would cost several times more.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339Writer {
    /// The last second written and its `YYYY-MM-DDTHH:MM:SS` text.
    last: (i64, [u8; DATE_LEN]),
}

impl Default for Rfc3339Writer {
    fn default() -> Self {
        Self {
            last: (i64::MIN, [0; DATE_LEN]),
        }
    }
}

impl Rfc3339Writer {
    /// The text of `ts`.
    ///
    /// # Examples
    ///
    /// ```
    /// use cli_support::time::{Rfc3339Writer, Timestamp};
    ///
    /// let mut writer = Rfc3339Writer::default();
    /// let ts = Timestamp::from_unix_nanos(1_795_805_096_123_456_789);
    /// assert_eq!(&writer.write(ts), b"2026-11-27T18:44:56.123456789Z");
    /// ```
    #[must_use]
    #[inline]
    pub fn write(&mut self, ts: Timestamp) -> [u8; Timestamp::RFC3339_LEN] {
        let (date, nanos) = self.split(ts);
        let nanos = nanos as usize;
        let mut text = [0; Timestamp::RFC3339_LEN];
        text[..DATE_LEN].copy_from_slice(date);
        text[DATE_LEN] = b'.';
        // Nine digits, the last eight two at a time.
        text[20] = b'0' + (nanos / 100_000_000) as u8;
        let mut rest = nanos % 100_000_000;
        let mut at = 29;
        while at > 21 {
            let pair = rest % 100 * 2;
            rest /= 100;
            text[at - 2] = DIGIT_PAIRS[pair];
            text[at - 1] = DIGIT_PAIRS[pair + 1];
            at -= 2;
        }
        text[29] = b'Z';
        text
    }

    /// The `YYYY-MM-DDTHH:MM:SS` text of `ts`'s second (kept for the next call) and its
    /// nanoseconds: for a writer that puts the fraction's digits where they go itself, rather
    /// than copying [`Rfc3339Writer::write`]'s array just made (whose bytes a copy reads back
    /// before they are stored).
    ///
    /// # Examples
    ///
    /// ```
    /// use cli_support::time::{Rfc3339Writer, Timestamp};
    ///
    /// let mut writer = Rfc3339Writer::default();
    /// let ts = Timestamp::from_unix_nanos(1_795_805_096_123_456_789);
    /// let (date, nanos) = writer.split(ts);
    /// assert_eq!((&date[..], nanos), (&b"2026-11-27T18:44:56"[..], 123_456_789));
    /// ```
    #[must_use]
    #[inline]
    pub fn split(&mut self, ts: Timestamp) -> (&[u8; DATE_LEN], u32) {
        let secs = ts.unix_nanos.div_euclid(1_000_000_000);
        let nanos = ts.unix_nanos.rem_euclid(1_000_000_000) as u32;
        if self.last.0 != secs {
            self.remember(secs);
        }
        (&self.last.1, nanos)
    }

    /// Makes the date and time of day of `secs` the cached text (once a second at most).
    #[cold]
    fn remember(&mut self, secs: i64) {
        let mut date = *b"0000-00-00T00:00:00";
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let of_day = secs.rem_euclid(86_400);
        digits(&mut date[0..4], year);
        digits(&mut date[5..7], i64::from(month));
        digits(&mut date[8..10], i64::from(day));
        digits(&mut date[11..13], of_day / 3600);
        digits(&mut date[14..16], of_day % 3600 / 60);
        digits(&mut date[17..19], of_day % 60);
        self.last = (secs, date);
    }
}

/// The two-digit texts `00`, `01`, … `99`, back to back: formatting numbers two digits at a
/// time halves the divisions, which dominate writing timestamps and records.
pub const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Length of `YYYY-MM-DDTHH:MM:SS`.
pub const DATE_LEN: usize = 19;

/// Writes `value` (non-negative) as decimal into all of `out`, zero-padded on the left.
fn digits(out: &mut [u8], mut value: i64) {
    for digit in out.iter_mut().rev() {
        // In 0..10 by construction.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.rfc3339();
        f.write_str(core::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_nanos: i64) -> String {
        Timestamp::from_unix_nanos(unix_nanos).to_string()
    }

    #[test]
    fn formats_rfc3339_with_nanoseconds() {
        assert_eq!(at(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            at(1_795_805_096_123_456_789),
            "2026-11-27T18:44:56.123456789Z"
        );
        assert_eq!(at(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn cached_second_is_not_reused_for_another_second() {
        // Same second twice (cache hit), then its neighbours and a distant instant.
        let mut writer = Rfc3339Writer::default();
        let mut at = |nanos: i64| {
            String::from_utf8(writer.write(Timestamp::from_unix_nanos(nanos)).to_vec()).unwrap()
        };
        let base = 1_795_805_096_000_000_000;
        assert_eq!(at(base + 1), "2026-11-27T18:44:56.000000001Z");
        assert_eq!(at(base + 999_999_999), "2026-11-27T18:44:56.999999999Z");
        assert_eq!(at(base + 1_000_000_000), "2026-11-27T18:44:57.000000000Z");
        assert_eq!(at(base - 1), "2026-11-27T18:44:55.999999999Z");
        assert_eq!(at(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(base + 5), "2026-11-27T18:44:56.000000005Z");
    }

    #[test]
    fn whole_range_has_four_digit_years() {
        assert_eq!(at(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(at(i64::MAX), "2262-04-11T23:47:16.854775807Z");
    }

    #[test]
    fn leap_days_and_year_ends() {
        assert_eq!(
            at(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            at(4_107_542_399 * 1_000_000_000),
            "2100-02-28T23:59:59.000000000Z"
        );
        assert_eq!(
            at(4_107_542_400 * 1_000_000_000),
            "2100-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            at(1_735_689_599 * 1_000_000_000),
            "2024-12-31T23:59:59.000000000Z"
        );
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // Compare with an independent day-by-day walk of the calendar from 1970.
        let mut expected = (1970i64, 1u32, 1u32);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            expected = if d < month_len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }
}
