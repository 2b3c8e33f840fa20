//! The tracking stage: a [`Sink`] in front of the output that feeds every packet to the
//! [`Tracker`], passes packets on when they are wanted (`RECORDS=both`), and hands the output a
//! connection record for each connection reported.

use std::{
    io,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use cli_support::{
    clock::monotonic_ns,
    exit::{OutOfRange, in_range},
};
use sidecar_contract::env;
use sniffer_common::PacketRecord;

use super::Sink;
use crate::{
    capture::clock::WallClock,
    connections::{
        Tracker, TrackerConfig,
        record::{ConnectionRecord, Report},
    },
    metrics::{Stats, add},
};

/// Connections reported at a time at shutdown.
const FINISH_CHUNK: usize = 1024;

/// How often ended, idle and long-lived connections are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The `CONNECTION_*` variables, as given (flattened into the sniffer's arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct TrackerArgs {
    /// Connections tracked at once (`RECORDS` `connections` or `both`); beyond it the least
    /// recently seen is reported as evicted.
    #[arg(long, env = env::CONNECTION_MAX, default_value_t = 32_768)]
    pub connection_max: u64,
    /// A connection with no packet for this long is reported as timed out.
    #[arg(long, env = env::CONNECTION_IDLE_TIMEOUT_MS, default_value_t = 300_000)]
    pub connection_idle_timeout_ms: u64,
    /// Open connections are reported this often; 0 never.
    #[arg(long, env = env::CONNECTION_REPORT_INTERVAL_MS, default_value_t = 60_000)]
    pub connection_report_interval_ms: u64,
}

impl TrackerArgs {
    /// Checks the tracker's limits.
    pub fn validate(&self) -> Result<TrackerConfig, OutOfRange> {
        in_range("CONNECTION_MAX", self.connection_max, 1, 10_000_000)?;
        in_range(
            "CONNECTION_IDLE_TIMEOUT_MS",
            self.connection_idle_timeout_ms,
            1_000,
            86_400_000,
        )?;
        if self.connection_report_interval_ms != 0 {
            in_range(
                "CONNECTION_REPORT_INTERVAL_MS",
                self.connection_report_interval_ms,
                1_000,
                86_400_000,
            )?;
        }
        Ok(TrackerConfig {
            max_connections: usize::try_from(self.connection_max).unwrap_or(usize::MAX),
            idle_timeout: Duration::from_millis(self.connection_idle_timeout_ms),
            report_interval: (self.connection_report_interval_ms > 0)
                .then(|| Duration::from_millis(self.connection_report_interval_ms)),
        })
    }
}

/// Tracks connections in front of `output`.
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::{Duration, Instant}};
/// use sniffer::{capture::clock::WallClock, connections::TrackerConfig, deliver::stdout::Lines,
///               metrics::{Stats, get}, pipeline::{Sink, tracking::Tracking}};
/// use sniffer_common::{PacketRecord, tcp_flags};
///
/// let stats = Arc::new(Stats::default());
/// let output = Box::new(Lines::new(Vec::new(), 1000, Arc::clone(&stats)).unwrap());
/// let config = TrackerConfig { max_connections: 10, idle_timeout: Duration::from_secs(60),
///                              report_interval: None };
/// let mut stage = Box::new(Tracking::new(output, config, false, Arc::clone(&stats)));
/// let syn = PacketRecord { ip_version: 4, src_port: 51000, dst_port: 8080,
///                          tcp_flags: tcp_flags::SYN, ..PacketRecord::default() };
/// stage.take(&[syn], &WallClock::from_offset(0)).unwrap();
/// stage.finish(Instant::now() + Duration::from_secs(5)).unwrap();
/// assert_eq!(get(&stats.connection_records), 1);
/// assert_eq!(get(&stats.records_delivered), 1, "the connection record, not the packet");
/// ```
pub struct Tracking {
    output: Box<dyn Sink>,
    tracker: Tracker,
    /// Whether packet records are passed on too.
    packets: bool,
    reports: Vec<Report>,
    records: Vec<ConnectionRecord>,
    next_sweep: Instant,
    /// A failure to hand over records during [`Sink::tick`], returned by the next call that can.
    failed: Option<io::Error>,
    stats: Arc<Stats>,
}

impl Tracking {
    /// Connections tracked within `config`, reported to `output` along with the packets when
    /// `packets`.
    #[must_use]
    pub fn new(
        output: Box<dyn Sink>,
        config: TrackerConfig,
        packets: bool,
        stats: Arc<Stats>,
    ) -> Self {
        let tracker = Tracker::new(config);
        // Published now, so the connection families are scraped at zero from the start.
        *stats
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((tracker.counts(), 0));
        Self {
            output,
            tracker,
            packets,
            reports: Vec::new(),
            records: Vec::new(),
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            failed: None,
            stats,
        }
    }

    /// Hands the reports made so far to the output as records, and publishes the counts.
    fn hand_over(&mut self, clock: &WallClock) -> io::Result<()> {
        *self
            .stats
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some((self.tracker.counts(), self.tracker.len() as u64));
        if self.reports.is_empty() {
            return Ok(());
        }
        self.records.clear();
        self.records.extend(
            self.reports
                .drain(..)
                .map(|report| ConnectionRecord::new(report, clock)),
        );
        add(&self.stats.connection_records, self.records.len() as u64);
        self.output.take_connections(&self.records)
    }
}

impl Sink for Tracking {
    fn take(&mut self, records: &[PacketRecord], clock: &WallClock) -> io::Result<()> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        self.tracker.observe_all(records, &mut self.reports);
        if self.packets {
            self.output.take(records, clock)?;
        }
        self.hand_over(clock)
    }

    fn take_connections(&mut self, records: &[ConnectionRecord]) -> io::Result<()> {
        self.output.take_connections(records)
    }

    fn due(&self) -> Option<Instant> {
        // Nothing tracked, nothing to sweep: an idle agent is not woken for it.
        if self.tracker.is_empty() {
            return self.output.due();
        }
        Some(
            self.output
                .due()
                .map_or(self.next_sweep, |due| due.min(self.next_sweep)),
        )
    }

    fn tick(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL;
            self.tracker.sweep(
                u64::try_from(monotonic_ns()).unwrap_or(0),
                &mut self.reports,
            );
            // Only stdout fails to take records (closed): the agent stops at the next take.
            if let Err(err) = self.hand_over(&WallClock::now()) {
                self.failed = Some(err);
            }
        }
        self.output.tick(now);
    }

    fn finish(mut self: Box<Self>, deadline: Instant) -> io::Result<()> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        let (now_ns, clock) = (u64::try_from(monotonic_ns()).unwrap_or(0), WallClock::now());
        // A batch's worth at a time: the connections leave the table as their records go out.
        loop {
            self.tracker.finish(now_ns, FINISH_CHUNK, &mut self.reports);
            self.hand_over(&clock)?;
            if self.tracker.is_empty() {
                break;
            }
        }
        self.records = Vec::new();
        self.output.finish(deadline)
    }
}
