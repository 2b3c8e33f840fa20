//! The flight recorder: the most recent packets within a byte budget, the oldest forgotten
//! first (and counted). Pure.

use std::{collections::VecDeque, sync::Arc};

use crate::capture::packets::CapturedPacket;

/// Bytes a kept packet costs beyond its data: its entry and its shared allocation's header.
pub const PER_PACKET_BYTES: usize = size_of::<CapturedPacket>() + 2 * size_of::<usize>();

/// The most recent packets within `capacity` bytes.
#[derive(Debug)]
pub struct Recorder {
    packets: VecDeque<Arc<CapturedPacket>>,
    bytes: usize,
    capacity: usize,
    forgotten: u64,
}

impl Recorder {
    /// An empty recorder of `capacity` bytes.
    #[must_use]
    pub const fn new(capacity: usize) -> Self {
        Self {
            packets: VecDeque::new(),
            bytes: 0,
            capacity,
            forgotten: 0,
        }
    }

    /// Keeps `packet`, forgetting the oldest until the newest fit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sniffer::{capture::packets::CapturedPacket, pcap::recorder::{PER_PACKET_BYTES, Recorder}};
    ///
    /// let packet = |n: u64| Arc::new(CapturedPacket {
    ///     ts_ns: n, len: 60, headers_len: 54, src_port: 1, dst_port: 2, data: vec![0; 54].into(),
    /// });
    /// let mut recorder = Recorder::new(2 * (54 + PER_PACKET_BYTES));
    /// for n in 0..3 {
    ///     recorder.record(packet(n));
    /// }
    /// assert_eq!(recorder.forgotten(), 1);
    /// assert_eq!(recorder.packets(None).iter().map(|p| p.ts_ns).collect::<Vec<_>>(), [1, 2]);
    /// ```
    pub fn record(&mut self, packet: Arc<CapturedPacket>) {
        let cost = Self::cost(&packet);
        if cost > self.capacity {
            self.forgotten += 1;
            return;
        }
        self.bytes += cost;
        self.packets.push_back(packet);
        while self.bytes > self.capacity {
            let oldest = self.packets.pop_front().expect("bytes > 0 means packets");
            self.bytes -= Self::cost(&oldest);
            self.forgotten += 1;
        }
    }

    fn cost(packet: &CapturedPacket) -> usize {
        packet.data.len() + PER_PACKET_BYTES
    }

    /// The packets kept, oldest first, only those from or to `ports` if given.
    #[must_use]
    pub fn packets(&self, ports: Option<&[u16]>) -> Vec<Arc<CapturedPacket>> {
        self.packets
            .iter()
            .filter(|p| ports.is_none_or(|ports| p.as_packet().matches(ports)))
            .cloned()
            .collect()
    }

    /// Packets forgotten (or too large to keep) since the start.
    #[must_use]
    pub const fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Packets kept now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether nothing is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(n: u64, port: u16, bytes: usize) -> Arc<CapturedPacket> {
        Arc::new(CapturedPacket {
            ts_ns: n,
            len: 1514,
            headers_len: 54,
            src_port: port,
            dst_port: 40_000,
            data: vec![0; bytes].into(),
        })
    }

    #[test]
    fn the_budget_holds_and_every_forgotten_packet_is_counted() {
        let budget = 10 * (54 + PER_PACKET_BYTES);
        let mut recorder = Recorder::new(budget);
        for n in 0..1000 {
            recorder.record(packet(n, 8080, 54));
        }
        assert_eq!(recorder.len(), 10);
        assert_eq!(recorder.forgotten(), 990);
        let kept: Vec<u64> = recorder.packets(None).iter().map(|p| p.ts_ns).collect();
        assert_eq!(kept, (990..1000).collect::<Vec<_>>());
        // A larger packet pushes out as many small ones as it needs.
        recorder.record(packet(1000, 8080, 54 * 3 + 2 * PER_PACKET_BYTES));
        assert_eq!(recorder.len(), 8);
        assert_eq!(recorder.forgotten(), 993);
    }

    #[test]
    fn a_packet_larger_than_the_budget_is_counted_not_kept() {
        let mut recorder = Recorder::new(100);
        recorder.record(packet(1, 8080, 4096));
        assert!(recorder.is_empty());
        assert_eq!(recorder.forgotten(), 1);
    }

    #[test]
    fn ports_filter_what_is_returned() {
        let mut recorder = Recorder::new(1 << 20);
        recorder.record(packet(1, 8080, 54));
        recorder.record(packet(2, 8443, 54));
        let ports: Vec<u64> = recorder
            .packets(Some(&[8443]))
            .iter()
            .map(|p| p.ts_ns)
            .collect();
        assert_eq!(ports, [2]);
        assert!(
            recorder.packets(Some(&[40_000])).len() == 2,
            "either end matches"
        );
    }
}
