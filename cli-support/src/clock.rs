//! The clocks: one place reads them.

use crate::time::Timestamp;

fn read(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// `CLOCK_REALTIME`, in nanoseconds since the Unix epoch.
#[must_use]
pub fn realtime_ns() -> i64 {
    read(libc::CLOCK_REALTIME)
}

/// `CLOCK_MONOTONIC` (what the kernel program's `bpf_ktime_get_ns()` reads), in nanoseconds.
#[must_use]
pub fn monotonic_ns() -> i64 {
    read(libc::CLOCK_MONOTONIC)
}

/// The current wall-clock time.
#[must_use]
pub fn now() -> Timestamp {
    Timestamp::from_unix_nanos(realtime_ns())
}

/// The current Unix time in whole seconds.
#[must_use]
pub fn unix_seconds() -> u64 {
    u64::try_from(realtime_ns() / 1_000_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_agrees_with_the_standard_library() {
        let std_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert!((realtime_ns() - std_now).abs() < 1_000_000_000);
        assert!(monotonic_ns() > 0);
        assert!(unix_seconds() > 1_700_000_000);
    }
}
