//! Round-trip times from data/ACK pairs, as tshark's `tcp.analysis.ack_rtt` defines them: for
//! an ACK that acknowledges a segment exactly (the ACK number is one past the segment's last
//! byte, SYN and FIN counting one), the time from that segment to the ACK, both as seen on the
//! interface. Pure: fed one packet at a time.
//!
//! Each side keeps the segments it sent that are not acknowledged yet, as Wireshark's
//! `packet-tcp.c` keeps its list of unacked segments (`tcp_analyze_sequence_number`):
//!
//! - every segment with payload, SYN or FIN is added, retransmissions included, except one that
//!   ends where a segment already waiting ends: tshark keeps both, but only the older can give a
//!   sample and an ACK drops or cuts both alike, so keeping one gives the same samples and leaves
//!   room for more segments;
//! - an ACK takes a sample from a segment it acknowledges exactly; when a retransmission and its
//!   original both end there, the sample runs from the **original** (tshark keeps the oldest
//!   match; it does not apply Karn's rule, which TCP stacks use to leave such samples out);
//! - segments the ACK covers are dropped; a segment it covers in part is cut to the unacknowledged
//!   part (and gives no sample); SACK blocks play no part;
//! - at most [`MAX_UNACKED`] segments are kept per side (tshark keeps 10,000): while that many
//!   wait, a new segment is not kept, and is counted ([`AckRtt::untracked`]); an ACK of it then
//!   gives no sample. The first [`INLINE`] live in the connection's entry, beside what every
//!   packet reads; more (a transfer with more segments in flight) in a block allocated for that
//!   side the first time it is needed, and kept while the connection is tracked (a connection
//!   that had that many in flight once will again: allocating it again every time would cost
//!   more than the 176 bytes).
//!
//! Times are kept to the microsecond (a segment's time as 32 bits of microseconds, wrapping after
//! 71 minutes, longer than any segment waits for its ACK): an entry takes 8 bytes.

use super::analysis::seq_lt;

/// The most unacknowledged segments kept per side.
pub const MAX_UNACKED: usize = 24;
/// Of those, the ones kept in the connection's entry.
pub const INLINE: usize = 2;

/// A segment waiting for its ACK. Its first sequence number is not kept: tshark cuts a segment
/// an ACK covers in part, but what it does with a segment afterwards depends on its end alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Unacked {
    /// One past its last byte (SYN and FIN count one).
    next: u32,
    /// When it was seen, microseconds (wrapping).
    at_us: u32,
}

/// The samples of one side's ACKs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    /// How many.
    pub count: u32,
    /// The smallest, microseconds.
    pub min_us: u32,
    /// The largest, microseconds.
    pub max_us: u32,
    /// Their sum, microseconds.
    pub sum_us: u64,
}

impl Samples {
    /// Adds a sample of `us` microseconds.
    pub fn add(&mut self, us: u32) {
        if self.count == 0 {
            (self.min_us, self.max_us) = (us, us);
        } else {
            self.min_us = self.min_us.min(us);
            self.max_us = self.max_us.max(us);
        }
        self.count = self.count.saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(u64::from(us));
    }

    /// (min, mean, max) in nanoseconds, or `None` without samples.
    #[must_use]
    pub fn summary_ns(&self) -> Option<(u64, u64, u64)> {
        (self.count > 0).then(|| {
            let mean = (self.sum_us + u64::from(self.count) / 2) / u64::from(self.count);
            (
                u64::from(self.min_us) * 1000,
                mean * 1000,
                u64::from(self.max_us) * 1000,
            )
        })
    }
}

/// One side's segments waiting for an ACK. (The samples the other side's ACKs take from them
/// are kept apart, in [`Samples`]: they are written far less often.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AckRtt {
    /// Entries in use, oldest first.
    len: u8,
    /// Segments not kept because [`MAX_UNACKED`] were waiting.
    pub untracked: u32,
    /// Entries beyond [`INLINE`], while there are any.
    spill: Option<Box<[Unacked; MAX_UNACKED - INLINE]>>,
    inline: [Unacked; INLINE],
}

/// The microsecond clock of `ts_ns`, as kept.
const fn micros(ts_ns: u64) -> u32 {
    // Wrapping on purpose: only differences of times minutes apart are taken.
    (ts_ns / 1000) as u32
}

impl AckRtt {
    fn get(&self, i: usize) -> Unacked {
        match &self.spill {
            Some(spill) if i >= INLINE => spill[i - INLINE],
            _ => self.inline[i],
        }
    }

    fn set(&mut self, i: usize, segment: Unacked) {
        if i < INLINE {
            self.inline[i] = segment;
        } else {
            self.spill
                .get_or_insert_with(|| Box::new([Unacked::default(); MAX_UNACKED - INLINE]))
                [i - INLINE] = segment;
        }
    }

    /// A segment this side sent: `seq` and `len` in sequence space (payload, plus one each for
    /// SYN and FIN); nothing to keep when `len` is 0. `repeat` says it may end where a segment
    /// already waiting ends (it does not end beyond everything this side sent): only then are the
    /// waiting ones searched. Returns `false` when it was not kept because [`MAX_UNACKED`] were
    /// waiting (it is counted in [`AckRtt::untracked`]).
    pub fn sent(&mut self, seq: u32, len: u32, ts_ns: u64, repeat: bool) -> bool {
        if len == 0 {
            return true;
        }
        let next = seq.wrapping_add(len);
        let used = usize::from(self.len);
        if repeat && (0..used).any(|i| self.get(i).next == next) {
            return true;
        }
        if used == MAX_UNACKED {
            self.untracked = self.untracked.saturating_add(1);
            return false;
        }
        self.set(
            used,
            Unacked {
                next,
                at_us: micros(ts_ns),
            },
        );
        self.len += 1;
        true
    }

    /// The other side acknowledged up to `ack` at `ts_ns`: drops what it covers, and returns
    /// the time since the oldest segment it acknowledges exactly (microseconds), if any.
    pub fn acked(&mut self, ack: u32, ts_ns: u64) -> Option<u32> {
        let len = usize::from(self.len);
        if len == 0 {
            return None;
        }
        let now = micros(ts_ns);
        let mut sample = None;
        let mut kept = 0;
        for i in 0..len {
            let segment = self.get(i);
            if segment.next == ack {
                // Oldest first: the first exact match is the one tshark ends with.
                sample.get_or_insert(now.wrapping_sub(segment.at_us));
                continue;
            }
            if !seq_lt(ack, segment.next) {
                // Acknowledged before, wholly.
                continue;
            }
            // Not acknowledged, or in part: it waits on.
            if kept != i {
                self.set(kept, segment);
            }
            kept += 1;
        }
        if kept != len {
            self.len = u8::try_from(kept).expect("at most MAX_UNACKED");
        }
        sample
    }

    /// Segments waiting for an ACK now.
    #[cfg(test)]
    const fn waiting(&self) -> usize {
        self.len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1000;

    #[test]
    fn an_exact_ack_times_its_segment_and_drops_what_it_covers() {
        let mut rtt = AckRtt::default();
        rtt.sent(1000, 100, 10 * US, false);
        rtt.sent(1100, 100, 20 * US, false);
        rtt.sent(1200, 100, 30 * US, false);
        // Acknowledges the first two, exactly the second.
        assert_eq!(rtt.acked(1200, 70 * US), Some(50));
        assert_eq!(rtt.waiting(), 1);
        // A duplicate ACK acknowledges nothing new.
        assert_eq!(rtt.acked(1200, 75 * US), None);
        assert_eq!(rtt.acked(1300, 130 * US), Some(100));
        assert_eq!(rtt.waiting(), 0);
    }

    #[test]
    fn a_partial_ack_cuts_the_segment_and_gives_no_sample() {
        let mut rtt = AckRtt::default();
        rtt.sent(1000, 3000, 0, false);
        assert_eq!(rtt.acked(2448, 40 * US), None);
        assert_eq!(rtt.waiting(), 1);
        assert_eq!(rtt.acked(4000, 90 * US), Some(90));
    }

    #[test]
    fn a_retransmitted_segment_is_timed_from_its_original() {
        let mut rtt = AckRtt::default();
        rtt.sent(1000, 100, 0, false);
        rtt.sent(1100, 100, 10 * US, false);
        // Retransmitted three times: one entry, the original's.
        for i in 1..=3 {
            rtt.sent(1000, 100, i * 200_000 * US, true);
        }
        assert_eq!(rtt.waiting(), 2);
        assert_eq!(rtt.acked(1100, 600_030 * US), Some(600_030));
        assert_eq!(rtt.waiting(), 1);
    }

    #[test]
    fn a_retransmission_that_ends_elsewhere_is_kept() {
        let mut rtt = AckRtt::default();
        rtt.sent(1000, 100, 0, false);
        rtt.sent(1100, 100, 0, false);
        // Repacketised: both segments' data in one.
        rtt.sent(1000, 150, 50 * US, true);
        assert_eq!(rtt.waiting(), 3);
        assert_eq!(
            rtt.acked(1150, 80 * US),
            Some(30),
            "the retransmission, exactly"
        );
        assert_eq!(rtt.acked(1200, 90 * US), Some(90), "the second original");
        assert_eq!(rtt.waiting(), 0);
    }

    #[test]
    fn syn_and_fin_count_one_and_sequence_numbers_wrap() {
        let mut rtt = AckRtt::default();
        rtt.sent(u32::MAX, 1, 0, false);
        assert_eq!(rtt.acked(0, 40 * US), Some(40));
        rtt.sent(u32::MAX - 9, 20, 0, false);
        assert_eq!(rtt.acked(5, US), None, "part of it");
        assert_eq!(rtt.acked(10, 2 * US), Some(2));
    }

    #[test]
    fn a_full_list_keeps_no_more_and_counts_what_it_did_not_keep() {
        let mut rtt = AckRtt::default();
        let sent = MAX_UNACKED as u32 + 2;
        for i in 0..sent {
            rtt.sent(i * 10, 10, u64::from(i) * US, false);
        }
        assert_eq!((rtt.waiting(), rtt.untracked), (MAX_UNACKED, 2));
        // The last segment was not kept: its ACK only drops the others.
        assert_eq!(rtt.acked(sent * 10, 100 * US), None);
        assert_eq!(rtt.acked(sent * 10 - 10, 100 * US), None, "covered already");
        assert_eq!(rtt.waiting(), 0);
    }

    #[test]
    fn a_burst_spills_out_of_the_entry_and_the_block_is_reused() {
        let mut rtt = AckRtt::default();
        assert!(rtt.spill.is_none(), "nothing allocated until needed");
        for burst in 0..2u32 {
            let base = burst * 10_000;
            for i in 0..20u32 {
                rtt.sent(base + i * 100, 100, u64::from(i) * US, false);
            }
            // Every other segment acknowledged exactly, in order.
            for i in (1..20u32).step_by(2) {
                let ack = base + (i + 1) * 100;
                assert_eq!(rtt.acked(ack, (u64::from(i) + 50) * US), Some(50));
            }
            assert_eq!(rtt.waiting(), 0);
            assert!(rtt.spill.is_some());
        }
    }

    #[test]
    fn samples_summarise_in_nanoseconds() {
        let mut samples = Samples::default();
        assert_eq!(samples.summary_ns(), None);
        for us in [30, 10, 21] {
            samples.add(us);
        }
        assert_eq!(samples.summary_ns(), Some((10_000, 20_000, 30_000)));
    }

    #[test]
    fn times_wrap_after_71_minutes() {
        let mut rtt = AckRtt::default();
        let start = (u64::from(u32::MAX) - 5) * US;
        rtt.sent(1, 1, start, false);
        assert_eq!(rtt.acked(2, start + 10 * US), Some(10));
    }
}
