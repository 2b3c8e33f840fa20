//! What connection tracking counts across connections: kept by
//! [`crate::connections::Tracker`], published by the tracking stage and rendered by
//! [`crate::metrics`]. Plain data, imported by both, so that the metrics need not know the
//! tracker.

/// Upper bounds of the time histograms' buckets (handshakes, ACK round trips), in nanoseconds:
/// 10 µs to 2.5 s.
pub const TIME_BOUNDS_NS: [u64; 17] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// Times observed: handshakes (SYN → SYN-ACK), or one side's ACK round trips.
///
/// # Examples
///
/// ```
/// use sniffer::counts::TimeHistogram;
///
/// let mut times = TimeHistogram::default();
/// times.observe(30_000);
/// times.observe(3_000_000_000);
/// assert_eq!((times.buckets[2], times.count, times.sum_ns), (1, 2, 3_000_030_000));
/// assert_eq!(times.buckets.iter().sum::<u64>(), 1, "beyond the last bound: in the count only");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeHistogram {
    /// Times at most each bound of [`TIME_BOUNDS_NS`] and above the one before.
    pub buckets: [u64; 17],
    /// Every time observed.
    pub count: u64,
    /// Their sum, nanoseconds.
    pub sum_ns: u64,
}

impl TimeHistogram {
    /// Adds a time of `ns` nanoseconds.
    pub fn observe(&mut self, ns: u64) {
        if let Some(i) = TIME_BOUNDS_NS.iter().position(|&bound| ns <= bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }
}

/// What the tracker has done, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections that entered the table.
    pub opened: u64,
    /// Connections reported with each end, in [`Counts::REASONS`] order.
    pub closed: [u64; 5],
    /// Interim reports of open connections.
    pub interim: u64,
    /// Retransmitted segments (as `connections::analysis::Sent::retransmits` counts them), both
    /// directions.
    pub retransmits: u64,
    /// SYN → SYN-ACK times.
    pub handshakes: TimeHistogram,
    /// ACK round trips (`connections::rtt`) of the clients' ACKs and of the servers'.
    pub ack_rtt: [TimeHistogram; 2],
    /// Segments not kept for round trips because `connections::rtt::MAX_UNACKED` were waiting
    /// on their side.
    pub rtt_untracked: u64,
}

impl Counts {
    /// The `end_reason` names, in [`Counts::closed`] order.
    pub const REASONS: [&'static str; 5] = ["fin", "rst", "timeout", "evicted", "shutdown"];
}
