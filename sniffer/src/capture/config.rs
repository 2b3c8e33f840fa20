//! The kernel ring's settings (`RING_*`), flattened into the sniffer's arguments, and their
//! validation; the interface looked up by name.

use std::{ffi::CString, time::Duration};

use sidecar_contract::env;
use sniffer_common::{DEFAULT_RING_BYTES, RING_ENTRY_BYTES};
use thiserror::Error;

/// The `RING_*` variables, as given.
#[derive(Clone, Debug, clap::Args)]
pub struct RingArgs {
    /// Ring buffer size in bytes (a power of two, at least one page).
    #[arg(long, env = env::RING_BUFFER_BYTES, default_value_t = DEFAULT_RING_BYTES)]
    pub ring_buffer_bytes: u32,
    /// Unread ring bytes that wake the reader (a power of two, at most half the ring); a
    /// sixteenth of the ring when not given. Larger values mean fewer wakeups at high packet
    /// rates.
    #[arg(long, env = env::RING_WAKEUP_BYTES)]
    pub ring_wakeup_bytes: Option<u64>,
    /// The reader reads the ring at most this often (milliseconds) while less than
    /// `RING_WAKEUP_BYTES` waits: the longest a record of slow traffic waits before it is read.
    /// An empty ring is not polled: the kernel wakes the reader for its first record.
    #[arg(long, env = env::RING_POLL_INTERVAL_MS, default_value_t = 50)]
    pub ring_poll_interval_ms: u64,
}

/// The validated ring settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Ring buffer size in bytes.
    pub bytes: u32,
    /// Unread ring bytes that wake the reader.
    pub wakeup_bytes: u64,
    /// How often the reader checks the ring without a wakeup.
    pub poll_interval: Duration,
}

/// A ring setting the sniffer cannot start with.
#[derive(Debug, Error)]
pub enum RingConfigError {
    /// `RING_BUFFER_BYTES` is not a power of two of at least one page.
    #[error("RING_BUFFER_BYTES={value} must be a power of two and at least {page} bytes")]
    BufferSize {
        /// The value given.
        value: u32,
        /// The page size.
        page: u32,
    },
    /// `RING_WAKEUP_BYTES` is not a power of two between one record and half the ring.
    #[error(
        "RING_WAKEUP_BYTES={value} must be a power of two from {min} to half of RING_BUFFER_BYTES ({max})"
    )]
    WakeupBytes {
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// `RING_POLL_INTERVAL_MS` is 0 or above a minute.
    #[error("RING_POLL_INTERVAL_MS={value} must be from 1 to 60000")]
    PollInterval {
        /// The value given.
        value: u64,
    },
}

impl RingArgs {
    /// Checks the ring's size, wake-up threshold and poll interval.
    pub fn validate(&self) -> Result<RingConfig, RingConfigError> {
        let page = page_size();
        if !self.ring_buffer_bytes.is_power_of_two() || self.ring_buffer_bytes < page {
            return Err(RingConfigError::BufferSize {
                value: self.ring_buffer_bytes,
                page,
            });
        }
        let min = RING_ENTRY_BYTES.next_power_of_two();
        let max = u64::from(self.ring_buffer_bytes / 2);
        // A sixteenth: 256 KiB of the default 4 MiB, so that a flood wakes the reader (a context
        // switch of microseconds) every few thousand records while the ring keeps 15/16 free
        // for the time the reader takes to come (64 KiB, a sixty-fourth, cost the flood's HTTP
        // delivery 20 to 40 ns of process CPU a packet more).
        let wakeup = self
            .ring_wakeup_bytes
            .unwrap_or_else(|| (u64::from(self.ring_buffer_bytes) / 16).max(min));
        if !wakeup.is_power_of_two() || wakeup < min || wakeup > max {
            return Err(RingConfigError::WakeupBytes {
                value: wakeup,
                min,
                max,
            });
        }
        if !(1..=60_000).contains(&self.ring_poll_interval_ms) {
            return Err(RingConfigError::PollInterval {
                value: self.ring_poll_interval_ms,
            });
        }
        Ok(RingConfig {
            bytes: self.ring_buffer_bytes,
            wakeup_bytes: wakeup,
            poll_interval: Duration::from_millis(self.ring_poll_interval_ms),
        })
    }
}

/// This machine's page size: the smallest ring the kernel makes.
#[must_use]
pub fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// The index of interface `name` in this network namespace, if it exists.
#[must_use]
pub fn interface_index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
