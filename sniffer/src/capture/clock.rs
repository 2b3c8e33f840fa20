//! Wall-clock time for kernel timestamps.
//!
//! The kernel stamps records with `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`). [`WallClock`] maps
//! that onto `CLOCK_REALTIME` with an offset sampled each time records are read from the ring, so
//! a clock step (NTP) shows up in the next read.

use cli_support::clock::{monotonic_ns, realtime_ns};
use cli_support::time::Timestamp;

/// How many times [`WallClock::now`] samples the offset.
const SAMPLES: usize = 3;

/// Offset between `CLOCK_REALTIME` and `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// `realtime − monotonic`, in nanoseconds.
    offset_ns: i64,
}

impl WallClock {
    /// Samples both clocks now.
    ///
    /// Reads monotonic, realtime, monotonic and pairs realtime with the midpoint, so the error is
    /// at most half the time the three reads take (tens of nanoseconds through the vDSO). A
    /// preemption between the reads (a virtual CPU descheduled by a busy host) widens that
    /// window to microseconds, so the narrowest of [`SAMPLES`] tries is kept: one preemption no
    /// longer moves every timestamp of a ring pass.
    #[must_use]
    pub fn now() -> Self {
        let mut best = (i64::MAX, 0);
        for _ in 0..SAMPLES {
            let before = monotonic_ns();
            let real = realtime_ns();
            let after = monotonic_ns();
            let width = after - before;
            if width < best.0 {
                best = (width, real - (before + after) / 2);
            }
        }
        Self::from_offset(best.1)
    }

    /// A clock with a known `realtime − monotonic` offset in nanoseconds.
    #[must_use]
    pub const fn from_offset(offset_ns: i64) -> Self {
        Self { offset_ns }
    }

    /// Wall-clock time of a `CLOCK_MONOTONIC` reading, saturating at [`Timestamp`]'s range.
    ///
    /// # Examples
    ///
    /// ```
    /// use sniffer::capture::clock::WallClock;
    ///
    /// let clock = WallClock::from_offset(1_700_000_000_000_000_000);
    /// assert_eq!(clock.wall(5).to_string(), "2023-11-14T22:13:20.000000005Z");
    /// ```
    #[must_use]
    pub fn wall(&self, monotonic_ns: u64) -> Timestamp {
        let monotonic = i64::try_from(monotonic_ns).unwrap_or(i64::MAX);
        Timestamp::from_unix_nanos(monotonic.saturating_add(self.offset_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_adds_the_offset() {
        let clock = WallClock::from_offset(1_795_805_000_000_000_000);
        assert_eq!(
            clock.wall(96_123_456_789).to_string(),
            "2026-11-27T18:44:56.123456789Z"
        );
    }

    #[test]
    fn far_future_saturates_instead_of_wrapping() {
        let clock = WallClock::from_offset(1_795_805_000_000_000_000);
        assert_eq!(clock.wall(u64::MAX).unix_nanos(), i64::MAX);
        assert_eq!(clock.wall(i64::MAX as u64).unix_nanos(), i64::MAX);
    }

    #[test]
    fn sampled_offset_matches_the_system_clock() {
        let clock = WallClock::now();
        let mono = monotonic_ns() as u64;
        let converted = clock.wall(mono).unix_nanos();
        let real = realtime_ns();
        assert!(
            (real - converted).abs() < 50_000_000,
            "off by {} ns",
            real - converted
        );
    }
}
