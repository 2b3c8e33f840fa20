//! The connection tracker's cost per packet, without a kernel: reads of 4,096 records (the most
//! one ring read takes, as under the flood) fed to [`Tracker::observe_all`] as the tracking stage
//! feeds them.
//!
//! `cargo bench -p sniffer --bench track` prints nanoseconds per packet for the flood benchmark's
//! pattern (a data segment of every connection in turn, over 1,024 and 40,001 connections) and for
//! bulk transfers (data one way, an ACK for every second segment, so that round trips are
//! measured); with 40,001 connections, also with the caches emptied between reads, as the rest of
//! the sniffer's work empties them. The flood benchmark (`cargo xtask bench --only flood`)
//! measures the whole process; this isolates the tracker, so that two versions compare on a noisy
//! machine.

use std::{hint::black_box, time::Duration, time::Instant};

use sniffer::connections::{Tracker, TrackerConfig};
use sniffer_common::{PacketRecord, tcp_flags};

const PACKETS: u32 = 2_000_000;
const READ: usize = 4096;

fn packet(
    connection: u32,
    from_client: bool,
    (seq, ack, window): (u32, u32, u16),
    payload: u32,
) -> PacketRecord {
    let port = 20_000 + (connection % 45_000) as u16;
    let host = [0x0a00_0001 + (connection / 45_000), 0, 0, 0];
    let server = [0x0a00_0002, 0, 0, 0];
    let (src_addr, dst_addr, src_port, dst_port) = if from_client {
        (host, server, port, 5201)
    } else {
        (server, host, 5201, port)
    };
    PacketRecord {
        src_addr,
        dst_addr,
        seq,
        ack,
        len: 54 + payload,
        payload_len: payload,
        src_port,
        dst_port,
        window,
        tcp_flags: tcp_flags::ACK,
        ip_version: 4,
        ..PacketRecord::default()
    }
}

/// The flood's frames: the same segment of each connection in turn, as trafgen sends them
/// (`dinc` ports; sequence and acknowledgment numbers and the window 0).
fn flood(connections: u32) -> Vec<PacketRecord> {
    (0..PACKETS)
        .map(|i| packet(i % connections, true, (0, 0, 0), 10))
        .collect()
}

/// Bulk transfers over `connections` connections taking turns a few segments at a time: the
/// client sends 1448-byte segments, the server acknowledges every second one.
fn bulk(connections: u32) -> Vec<PacketRecord> {
    let mut packets = Vec::with_capacity(PACKETS as usize);
    let mut sent = vec![0u32; connections as usize];
    let mut c = 0;
    while packets.len() < PACKETS as usize {
        let next = &mut sent[c as usize];
        for _ in 0..2 {
            packets.push(packet(c, true, (1000 + *next * 1448, 1, 512), 1448));
            *next += 1;
        }
        packets.push(packet(c, false, (1, 1000 + *next * 1448, 512), 0));
        c = (c + 1) % connections;
    }
    packets
}

/// Bytes written between two reads in the cases that say so: twice the last-level cache here,
/// more than the rest of the sniffer (encoding, sending) moves between two of the tracker's reads.
const BETWEEN_READS: usize = 64 << 20;

/// Nanoseconds per packet to track `packets` (the tracker's calls only), best of three passes
/// over a fresh tracker; with `other_work`, [`BETWEEN_READS`] bytes are written between reads.
fn per_packet(packets: &[PacketRecord], other_work: bool) -> f64 {
    let mut scratch = vec![0u8; if other_work { BETWEEN_READS } else { 0 }];
    (0..3)
        .map(|_| {
            let mut tracker = Tracker::new(TrackerConfig {
                max_connections: 100_000,
                idle_timeout: Duration::from_secs(3600),
                report_interval: None,
            });
            let mut reports = Vec::new();
            let mut clock = 0;
            let mut elapsed = Duration::ZERO;
            for read in packets.chunks(READ) {
                // Time moves on per read, as it does between the ring's reads.
                let read: Vec<PacketRecord> = read
                    .iter()
                    .map(|p| {
                        clock += 2_000;
                        PacketRecord { ts_ns: clock, ..*p }
                    })
                    .collect();
                for line in scratch.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(1);
                }
                black_box(&scratch);
                let start = Instant::now();
                tracker.observe_all(black_box(&read), &mut reports);
                elapsed += start.elapsed();
            }
            black_box(&reports);
            elapsed.as_nanos() as f64 / packets.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// A named way of making the packets.
type Traffic = fn() -> Vec<PacketRecord>;

fn main() {
    // `cargo bench -p sniffer --bench track -- flood` runs the cases whose name holds `flood`.
    let wanted = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cases: [(&str, Traffic, bool); 6] = [
        ("flood, 1024 connections", || flood(1024), false),
        ("flood, 40001 connections", || flood(40_001), false),
        (
            "flood, 40001 connections, 64 MiB written between reads",
            || flood(40_001),
            true,
        ),
        ("bulk, 1024 connections", || bulk(1024), false),
        ("bulk, 40001 connections", || bulk(40_001), false),
        (
            "bulk, 40001 connections, 64 MiB written between reads",
            || bulk(40_001),
            true,
        ),
    ];
    for (name, packets, other_work) in cases {
        if wanted.as_deref().is_none_or(|w| name.contains(w)) {
            println!(
                "{name}: {:.1} ns/packet",
                per_packet(&packets(), other_work)
            );
        }
    }
}
