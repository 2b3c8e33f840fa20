//! Connection tracking (`RECORDS=connections` or `both`): packets grouped into connections by
//! their endpoints, each analysed as it goes ([`analysis`]) and reported once when it ends, as a
//! [`record::ConnectionRecord`]; [`crate::pipeline::tracking::Tracking`] is the pipeline stage between the ring and the
//! output.
//!
//! Memory is bounded: at most `CONNECTION_MAX` connections are tracked; a new one beyond that
//! pushes out the least recently seen (approximately: a second-chance queue, so that a flood of
//! new connections costs O(1) per packet), which is reported with `end_reason` `evicted`. The
//! connections live in a [`table::Table`] built for the memory latency of many connections.

pub mod analysis;
pub mod record;
pub mod rtt;
pub mod table;
pub mod zeek;

use std::{collections::VecDeque, time::Duration};

use sniffer_common::PacketRecord;

use crate::counts::Counts;

use self::{
    analysis::{Analysis, End, Key, Observed, Side},
    record::Report,
    table::Table,
};

/// How long a connection that ended (FIN exchange or RST) stays in the table before it is
/// reported: the last ACK, retransmitted FINs and further RSTs still count in it.
pub const LINGER: Duration = Duration::from_secs(1);

/// A tracked connection (in C order: what packets touch first).
#[derive(Debug)]
#[repr(C)]
struct Entry {
    analysis: Analysis,
    /// Tells this connection from an earlier one on the same endpoints in the eviction queue.
    id: u64,
    /// When it was last reported (or first seen), monotonic nanoseconds.
    reported_ns: u64,
}

/// The index of `end` in [`Counts::closed`]: its name's in [`Counts::REASONS`].
#[must_use]
pub const fn closed_index(end: End) -> usize {
    match end {
        End::Fin => 0,
        End::Rst(_) => 1,
        End::Timeout => 2,
        End::Evicted => 3,
        End::Shutdown => 4,
    }
}

/// Limits and timings of the connection tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Connections tracked at once (`CONNECTION_MAX`).
    pub max_connections: usize,
    /// A connection with no packet for this long is reported as `timeout`
    /// (`CONNECTION_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// Open connections are reported (`state` `open`) this often
    /// (`CONNECTION_REPORT_INTERVAL_MS`); `None` never.
    pub report_interval: Option<Duration>,
}

/// Connection tracking: turns packets into connection records. It keeps each open connection's
/// analysis in a [`Table`] (the hash table alone), evicts the least recently seen when full,
/// reports connections that end, time out or are due an interim report, and counts all of it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sniffer::connections::{Tracker, TrackerConfig};
/// use sniffer_common::{PacketRecord, tcp_flags};
///
/// let mut tracker = Tracker::new(TrackerConfig {
///     max_connections: 100, idle_timeout: Duration::from_secs(60), report_interval: None,
/// });
/// let syn = PacketRecord { ip_version: 4, src_port: 51000, dst_port: 8080,
///                          tcp_flags: tcp_flags::SYN, ..PacketRecord::default() };
/// let mut reports = Vec::new();
/// tracker.observe(&syn, &mut reports);
/// assert_eq!(tracker.len(), 1);
/// tracker.finish(1_000, usize::MAX, &mut reports);
/// assert_eq!(reports.len(), 1);
/// ```
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    table: Table<Entry>,
    /// Connections in the order they were last queued, as (hash, id, last-seen time they had
    /// then): the front is the eviction candidate unless seen since (then it goes to the back).
    /// The hash and id find the entry again in 16 bytes, where the key would take 40.
    queue: VecDeque<(u64, u64, u64)>,
    next_id: u64,
    /// No connection is due a report before this (monotonic nanoseconds): the earliest deadline
    /// the last sweep left, lowered by every connection that opens or ends since. A sweep before
    /// it has nothing to do and reads no entry (reading tens of thousands of entries once a
    /// second also pushed the packets' own out of the caches).
    next_due_ns: u64,
    counts: Counts,
    /// The keys of the packets of one [`Tracker::observe_all`] call (memory kept between calls).
    keys: Vec<(Key, Side, u64)>,
}

impl Tracker {
    /// Tracking nothing yet.
    #[must_use]
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            table: Table::with_limit(config.max_connections),
            keys: Vec::new(),
            queue: VecDeque::new(),
            next_id: 0,
            next_due_ns: 0,
            counts: Counts::default(),
        }
    }

    /// Connections tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no connection is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// What the tracker has done so far.
    #[must_use]
    pub const fn counts(&self) -> Counts {
        self.counts
    }

    /// Adds one packet; a connection it pushes out (a full table, or its endpoints reused after
    /// it ended) is reported into `out`.
    pub fn observe(&mut self, raw: &PacketRecord, out: &mut Vec<Report>) {
        let (key, side) = Key::of(raw);
        let hash = self.table.hash(&key);
        self.observe_keyed(key, side, hash, raw, out);
    }

    /// Adds the packets of one read from the ring, in order, as [`Tracker::observe`] does; while
    /// one packet is analysed, the connections of packets a few places ahead are fetched from
    /// memory (with many connections, waiting for memory was most of the tracker's time).
    pub fn observe_all(&mut self, records: &[PacketRecord], out: &mut Vec<Report>) {
        const AHEAD: usize = 8;
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.extend(records.iter().map(|raw| {
            let (key, side) = Key::of(raw);
            (key, side, self.table.hash(&key))
        }));
        for (i, raw) in records.iter().enumerate() {
            // Two steps, as reading a slot is itself a wait: its slot first, its entry later.
            if let Some(&(_, _, hash)) = keys.get(i + 2 * AHEAD) {
                self.table.prefetch_slot(hash);
            }
            if let Some(&(_, _, hash)) = keys.get(i + AHEAD) {
                self.table.prefetch(hash, Analysis::HOT_BYTES);
            }
            let (key, side, hash) = keys[i];
            self.observe_keyed(key, side, hash, raw, out);
        }
        self.keys = keys;
    }

    fn observe_keyed(
        &mut self,
        key: Key,
        side: Side,
        hash: u64,
        raw: &PacketRecord,
        out: &mut Vec<Report>,
    ) {
        if let Some(entry) = self.table.get_mut(&key, hash) {
            if !entry.analysis.is_reuse(raw) {
                let was_open = entry.analysis.end.is_none();
                let analysis = &mut entry.analysis;
                let Observed {
                    ack_rtt_us,
                    retransmit,
                    rtt_untracked,
                    handshake_ns,
                } = analysis.observe(side, raw);
                self.counts.retransmits += u64::from(retransmit);
                self.counts.rtt_untracked += u64::from(rtt_untracked);
                if let Some(us) = ack_rtt_us {
                    let by = usize::from(analysis.client().0 != side);
                    self.counts.ack_rtt[by].observe(u64::from(us) * 1000);
                }
                if let Some(ns) = handshake_ns {
                    self.counts.handshakes.observe(ns);
                }
                if was_open && analysis.end.is_some() {
                    self.next_due_ns = self
                        .next_due_ns
                        .min(analysis.last_ns.saturating_add(duration_ns(LINGER)));
                }
                return;
            }
            let old = self.table.remove(&key, hash).expect("just found");
            self.report(key, old, None, raw.ts_ns, out);
        }
        if self.table.len() >= self.config.max_connections {
            self.evict(raw.ts_ns, out);
        }
        let mut analysis = Analysis::new(side, raw.ts_ns);
        // The first packet of a connection acknowledges nothing it has seen.
        let _ = analysis.observe(side, raw);
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((hash, id, raw.ts_ns));
        let entry = Entry {
            id,
            analysis,
            reported_ns: raw.ts_ns,
        };
        self.next_due_ns = self.next_due_ns.min(deadline(&self.config, &entry));
        self.table.insert(key, hash, entry);
        self.counts.opened += 1;
        // Entries of connections that left the table otherwise stay queued: drop them now and
        // then, so that the queue stays proportional to the table.
        if self.queue.len() > 2 * self.table.len() + 1024 {
            let table = &self.table;
            self.queue
                .retain(|&(hash, id, _)| table.get_by(hash, |e| e.id == id).is_some());
        }
    }

    /// Pushes out the least recently seen connection (second chance: one seen since it was
    /// queued goes back to the end of the queue).
    fn evict(&mut self, now_ns: u64, out: &mut Vec<Report>) {
        while let Some((hash, id, queued_seen)) = self.queue.pop_front() {
            let Some((_, entry)) = self.table.get_by(hash, |e| e.id == id) else {
                continue;
            };
            if entry.analysis.last_ns != queued_seen {
                self.queue.push_back((hash, id, entry.analysis.last_ns));
                continue;
            }
            let (key, entry) = self
                .table
                .remove_by(hash, |e| e.id == id)
                .expect("just found");
            self.report(key, entry, Some(End::Evicted), now_ns, out);
            return;
        }
    }

    /// Reports and removes the connection: with its own end (FIN, RST) if it has one,
    /// otherwise with `end`, or `Timeout` when `end` is `None`.
    fn report(
        &mut self,
        key: Key,
        entry: Entry,
        end: Option<End>,
        at_ns: u64,
        out: &mut Vec<Report>,
    ) {
        let end = entry.analysis.end.or(end).unwrap_or(End::Timeout);
        self.counts.closed[closed_index(end)] += 1;
        out.push(Report {
            key,
            analysis: entry.analysis,
            end: Some(end),
            at_ns,
        });
    }

    /// Time-driven work at `now_ns` (monotonic): connections that ended and lingered
    /// [`LINGER`], and open ones idle for the idle timeout, are reported and removed; open ones
    /// due an interim report get one.
    pub fn sweep(&mut self, now_ns: u64, out: &mut Vec<Report>) {
        if now_ns < self.next_due_ns {
            return;
        }
        let linger = duration_ns(LINGER);
        let idle = duration_ns(self.config.idle_timeout);
        let interval = self.config.report_interval.map(duration_ns);
        let mut done = Vec::new();
        let mut next_due = u64::MAX;
        for (key, entry) in self.table.iter_mut() {
            let quiet = now_ns.saturating_sub(entry.analysis.last_ns);
            match entry.analysis.end {
                Some(_) if quiet >= linger => {
                    done.push(*key);
                    continue;
                }
                None if quiet >= idle => {
                    done.push(*key);
                    continue;
                }
                None => {
                    if let Some(interval) = interval
                        && now_ns.saturating_sub(entry.reported_ns) >= interval
                    {
                        entry.reported_ns = now_ns;
                        self.counts.interim += 1;
                        out.push(Report {
                            key: *key,
                            analysis: entry.analysis.clone(),
                            end: None,
                            at_ns: now_ns,
                        });
                    }
                }
                Some(_) => {}
            }
            next_due = next_due.min(deadline(&self.config, entry));
        }
        self.next_due_ns = next_due;
        for key in done {
            let hash = self.table.hash(&key);
            let entry = self
                .table
                .remove(&key, hash)
                .expect("collected from the table");
            self.report(key, entry, None, now_ns, out);
        }
    }

    /// Reports up to `max` of the connections still tracked (`shutdown` unless they ended),
    /// removing them: called until the tracker is empty, a few at a time, the records on their way
    /// out take the place of the connections' memory rather than doubling it.
    pub fn finish(&mut self, now_ns: u64, max: usize, out: &mut Vec<Report>) {
        for _ in 0..max {
            let Some((key, entry)) = self.table.pop() else {
                break;
            };
            self.report(key, entry, Some(End::Shutdown), now_ns, out);
        }
        if self.table.is_empty() {
            self.queue = VecDeque::new();
        }
    }
}

/// When `entry` is next due a report if no packet comes: [`LINGER`] after its last packet once
/// it ended; otherwise the idle timeout after its last packet, or its interim report if that
/// comes first.
fn deadline(config: &TrackerConfig, entry: &Entry) -> u64 {
    let last = entry.analysis.last_ns;
    if entry.analysis.end.is_some() {
        return last.saturating_add(duration_ns(LINGER));
    }
    let idle = last.saturating_add(duration_ns(config.idle_timeout));
    config.report_interval.map_or(idle, |interval| {
        idle.min(entry.reported_ns.saturating_add(duration_ns(interval)))
    })
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use sniffer_common::tcp_flags;

    use super::*;

    #[test]
    fn every_end_has_its_own_reason() {
        let ends = [
            (End::Fin, "fin"),
            (End::Rst(Side::A), "rst"),
            (End::Rst(Side::B), "rst"),
            (End::Timeout, "timeout"),
            (End::Evicted, "evicted"),
            (End::Shutdown, "shutdown"),
        ];
        for (end, reason) in ends {
            assert_eq!(Counts::REASONS[closed_index(end)], reason, "{end:?}");
        }
    }

    fn config(max_connections: usize) -> TrackerConfig {
        TrackerConfig {
            max_connections,
            idle_timeout: Duration::from_secs(10),
            report_interval: Some(Duration::from_secs(3)),
        }
    }

    /// A packet from client port `port` to 8080.
    fn packet(ts_ns: u64, port: u16, flags: u8) -> PacketRecord {
        PacketRecord {
            ts_ns,
            ip_version: 4,
            src_port: port,
            dst_port: 8080,
            tcp_flags: flags,
            ..PacketRecord::default()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_connection_s_hot_bytes_fit_five_cache_lines() {
        let (size, value_at) = table::item_layout::<Entry>();
        assert_eq!(
            size, 512,
            "an entry and its key in whole cache lines, no more"
        );
        assert!(
            value_at + Analysis::HOT_BYTES <= 5 * 64,
            "{value_at} + {} bytes",
            Analysis::HOT_BYTES
        );
    }

    #[test]
    fn both_directions_are_one_connection() {
        let mut tracker = Tracker::new(config(10));
        let mut out = Vec::new();
        tracker.observe(&packet(0, 40000, tcp_flags::SYN), &mut out);
        let reply = PacketRecord {
            src_port: 8080,
            dst_port: 40000,
            ..packet(1, 0, tcp_flags::SYN | tcp_flags::ACK)
        };
        tracker.observe(&reply, &mut out);
        assert_eq!(tracker.len(), 1);
        assert!(out.is_empty());
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_seen() {
        let mut tracker = Tracker::new(config(3));
        let mut out = Vec::new();
        for (ts, port) in [(1, 1), (2, 2), (3, 3)] {
            tracker.observe(&packet(ts, port, tcp_flags::ACK), &mut out);
        }
        // Port 1 is seen again: port 2 is now the least recently seen.
        tracker.observe(&packet(4, 1, tcp_flags::ACK), &mut out);
        tracker.observe(&packet(5, 4, tcp_flags::ACK), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end, Some(End::Evicted));
        assert_eq!(out[0].key.a.port.min(out[0].key.b.port), 2);
        assert_eq!(tracker.len(), 3);
        assert_eq!(tracker.counts().closed, [0, 0, 0, 1, 0]);
    }

    #[test]
    fn a_flood_of_new_connections_keeps_the_table_and_queue_bounded() {
        let mut tracker = Tracker::new(config(1000));
        let mut out = Vec::new();
        for i in 0..200_000u64 {
            let port = u16::try_from(i % 60_000).unwrap() + 1;
            let raw = PacketRecord {
                src_addr: [u32::try_from(i / 60_000).unwrap(), 0, 0, 0],
                ..packet(i, port, tcp_flags::SYN)
            };
            tracker.observe(&raw, &mut out);
        }
        assert_eq!(tracker.len(), 1000);
        assert_eq!(out.len(), 199_000);
        assert!(tracker.queue.len() <= 2 * 1000 + 1024);
        assert_eq!(tracker.counts().opened, 200_000);
    }

    #[test]
    fn ended_connections_linger_then_leave_idle_ones_time_out() {
        let mut tracker = Tracker::new(config(10));
        let mut out = Vec::new();
        tracker.observe(&packet(0, 1, tcp_flags::SYN), &mut out);
        tracker.observe(&packet(0, 2, tcp_flags::SYN), &mut out);
        tracker.observe(&packet(S / 2, 1, tcp_flags::RST), &mut out);
        tracker.sweep(S, &mut out);
        assert!(out.is_empty(), "the reset one lingers a second");
        tracker.sweep(S / 2 + S, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].end, Some(End::Rst(_))));
        tracker.sweep(4 * S, &mut out);
        tracker.sweep(10 * S, &mut out);
        assert_eq!(
            out.len(),
            3,
            "an interim report at 4 s, then the timeout at 10 s"
        );
        assert_eq!(out[1].end, None);
        assert_eq!(out[2].end, Some(End::Timeout));
        assert!(tracker.is_empty());
    }

    #[test]
    fn a_sweep_with_nothing_due_reads_nothing_and_what_opens_or_ends_after_it_still_counts() {
        let mut tracker = Tracker::new(TrackerConfig {
            report_interval: None,
            ..config(10)
        });
        let mut out = Vec::new();
        tracker.observe(&packet(0, 1, tcp_flags::SYN), &mut out);
        tracker.sweep(S, &mut out);
        assert_eq!(
            tracker.next_due_ns,
            10 * S,
            "the idle timeout of the only one"
        );
        // Opens after that sweep, and ends: due a second after its RST, before 10 s.
        tracker.observe(&packet(2 * S, 2, tcp_flags::SYN), &mut out);
        tracker.observe(&packet(3 * S, 2, tcp_flags::RST), &mut out);
        assert_eq!(tracker.next_due_ns, 4 * S);
        tracker.sweep(4 * S - 1, &mut out);
        assert!(out.is_empty());
        tracker.sweep(4 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].end, Some(End::Rst(_))));
        // Seen again at 5 s: not due before 15 s, though the sweep at 4 s left 10 s.
        tracker.observe(&packet(5 * S, 1, tcp_flags::ACK), &mut out);
        tracker.sweep(10 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(tracker.next_due_ns, 15 * S);
        tracker.sweep(15 * S, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].end, Some(End::Timeout));
        assert_eq!(tracker.next_due_ns, u64::MAX, "nothing left");
    }

    #[test]
    fn open_connections_get_interim_reports() {
        let mut tracker = Tracker::new(config(10));
        let mut out = Vec::new();
        tracker.observe(&packet(0, 1, tcp_flags::SYN), &mut out);
        for second in 1..=7 {
            tracker.observe(&packet(second * S, 1, tcp_flags::ACK), &mut out);
            tracker.sweep(second * S, &mut out);
        }
        let interim: Vec<u64> = out.iter().map(|r| r.at_ns / S).collect();
        assert_eq!(interim, [3, 6]);
        assert!(out.iter().all(|r| r.end.is_none()));
        assert_eq!(out[1].analysis.sent(out[1].analysis.client().0).packets, 7);
    }

    #[test]
    fn handshakes_and_retransmissions_are_counted_as_they_happen() {
        let mut tracker = Tracker::new(config(10));
        let mut out = Vec::new();
        tracker.observe(&packet(0, 1, tcp_flags::SYN), &mut out);
        let synack = PacketRecord {
            src_port: 8080,
            dst_port: 1,
            ..packet(30_000, 0, tcp_flags::SYN | tcp_flags::ACK)
        };
        tracker.observe(&synack, &mut out);
        tracker.observe(&synack, &mut out);
        let data = PacketRecord {
            seq: 1,
            payload_len: 10,
            ..packet(40_000, 1, tcp_flags::ACK)
        };
        tracker.observe(&data, &mut out);
        tracker.observe(&data, &mut out);
        let counts = tracker.counts();
        assert_eq!(
            counts.handshakes.count, 1,
            "the repeated SYN-ACK is not a new handshake"
        );
        assert_eq!(
            counts.handshakes.buckets[2], 1,
            "30 µs: the bucket above 25 µs, up to 50 µs"
        );
        assert_eq!(counts.handshakes.sum_ns, 30_000);
        assert_eq!(counts.retransmits, 1);
    }

    #[test]
    fn a_new_syn_after_the_end_starts_a_new_connection() {
        let mut tracker = Tracker::new(config(10));
        let mut out = Vec::new();
        tracker.observe(&packet(0, 1, tcp_flags::SYN), &mut out);
        tracker.observe(&packet(1, 1, tcp_flags::RST), &mut out);
        tracker.observe(&packet(2, 1, tcp_flags::SYN), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(tracker.len(), 1);
        tracker.finish(3, usize::MAX, &mut out);
        assert_eq!(out[1].end, Some(End::Shutdown));
        assert_eq!(tracker.counts().closed, [0, 1, 0, 0, 1]);
    }
}
