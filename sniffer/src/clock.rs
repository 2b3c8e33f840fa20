//! Wall-clock time for kernel timestamps.
//!
//! The kernel stamps records with `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`). [`WallClock`] maps
//! that onto `CLOCK_REALTIME` with an offset sampled when a batch of records is read, so a clock
//! step (NTP) shows up in the next batch. [`Timestamp`] prints RFC 3339 UTC with nanoseconds.

use std::fmt;

/// Offset between `CLOCK_REALTIME` and `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// `realtime − monotonic`, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    /// Samples both clocks now.
    ///
    /// Reads monotonic, realtime, monotonic and pairs realtime with the midpoint, so the error is
    /// at most half the time the three reads take (tens of nanoseconds through the vDSO).
    #[must_use]
    pub fn now() -> Self {
        let before = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let after = clock_ns(libc::CLOCK_MONOTONIC);
        Self::from_offset(real - (before + after) / 2)
    }

    /// A clock with a known `realtime − monotonic` offset in nanoseconds.
    #[must_use]
    pub const fn from_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Wall-clock time of a `CLOCK_MONOTONIC` reading.
    ///
    /// # Examples
    ///
    /// ```
    /// use sniffer::clock::WallClock;
    ///
    /// let clock = WallClock::from_offset(1_700_000_000_000_000_000);
    /// assert_eq!(clock.wall(5).to_string(), "2023-11-14T22:13:20.000000005Z");
    /// ```
    #[must_use]
    pub fn wall(&self, monotonic_ns: u64) -> Timestamp {
        Timestamp::from_unix_nanos(i128::from(monotonic_ns) + self.offset_ns)
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// A UTC instant with nanosecond precision that displays as RFC 3339 (`…T…Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    unix_nanos: i128,
}

impl Timestamp {
    /// The instant `unix_nanos` nanoseconds after 1970-01-01T00:00:00Z.
    #[must_use]
    pub const fn from_unix_nanos(unix_nanos: i128) -> Self {
        Self { unix_nanos }
    }

    /// The current wall-clock time.
    #[must_use]
    pub fn now() -> Self {
        Self::from_unix_nanos(clock_ns(libc::CLOCK_REALTIME))
    }

    /// Nanoseconds since the Unix epoch.
    #[must_use]
    pub const fn unix_nanos(&self) -> i128 {
        self.unix_nanos
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.unix_nanos.div_euclid(1_000_000_000);
        let nanos = self.unix_nanos.rem_euclid(1_000_000_000);
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        )
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_nanos: i128) -> String {
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
        let mut expected = (1970i128, 1u32, 1u32);
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

    #[test]
    fn wall_clock_adds_the_offset() {
        let clock = WallClock::from_offset(1_795_805_000_000_000_000);
        assert_eq!(
            clock.wall(96_123_456_789).to_string(),
            "2026-11-27T18:44:56.123456789Z"
        );
    }

    #[test]
    fn sampled_offset_matches_the_system_clock() {
        let clock = WallClock::now();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let converted = clock.wall(mono).unix_nanos();
        let real = Timestamp::now().unix_nanos();
        assert!(
            (real - converted).abs() < 50_000_000,
            "off by {} ns",
            real - converted
        );
    }
}
