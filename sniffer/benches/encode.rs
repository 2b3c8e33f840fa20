//! Userspace cost per record: kernel record → the bytes sent, as stdout lines and as a body in
//! each `OUTPUT_FORMAT`.
//!
//! `cargo bench -p sniffer --bench encode` prints nanoseconds per record; `cargo xtask bench
//! --only encode` runs it and puts the numbers into docs/benchmarks.md.

use std::{hint::black_box, io, sync::Arc, time::Instant};

use sniffer::{
    capture::clock::WallClock,
    deliver::stdout::Lines,
    encode::{AgentInfo, Encoder, Format, Item, packet::Record},
    metrics::Stats,
    pipeline::Sink as _,
};
use sniffer_common::{PACKET_OUTGOING, PacketRecord, addr_words, tcp_flags};

const RECORDS: u64 = 500_000;
const BATCH: usize = 1000;

/// Varied records like a busy connection's: both directions, moving sequence numbers, every
/// tenth one IPv6.
fn raw(i: u64) -> PacketRecord {
    let v4 = |a: [u8; 4]| [u32::from_ne_bytes(a), 0, 0, 0];
    let v6 = addr_words([
        0xfd,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        (i % 250) as u8,
    ]);
    let six = i.is_multiple_of(10);
    PacketRecord {
        ts_ns: 96_123_456_789 + i * 4_321,
        src_addr: if six { v6 } else { v4([10, 0, 0, 7]) },
        dst_addr: if six {
            v6
        } else {
            v4([10, 0, 1, (i % 250) as u8])
        },
        seq: 1_438_223_591u32.wrapping_add((i * 64) as u32),
        ack: 2_000_000_000u32.wrapping_add(i as u32),
        len: 130,
        payload_len: 64,
        src_port: 51_234,
        dst_port: 8080,
        window: 64_240,
        tcp_flags: tcp_flags::PSH | tcp_flags::ACK,
        ip_version: if six { 6 } else { 4 },
        pkt_type: if i.is_multiple_of(2) {
            0
        } else {
            PACKET_OUTGOING
        },
        headers_len: 0,
    }
}

/// Counts bytes and throws them away, like stdout redirected to /dev/null.
struct Discard(u64);

impl io::Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Rounds per variant, taken in turn so that a slow moment of the machine touches them all; the
/// median is reported.
const ROUNDS: usize = 7;

fn main() {
    let clock = WallClock::now();
    let raws: Vec<PacketRecord> = (0..4096).map(raw).collect();
    let agent = Arc::new(AgentInfo {
        pod: Some("web-7d9c".into()),
        namespace: Some("shop".into()),
        node: Some("node-3".into()),
        interface: "eth0".into(),
        version: env!("CARGO_PKG_VERSION"),
        instance: "6f1c2b9e-0000-4000-8000-000000000000".into(),
    });
    let formats = [
        Format::Batch,
        Format::Ndjson,
        Format::OtlpProtobuf,
        Format::OtlpJson,
        Format::Loki,
    ];
    // Per variant: nanoseconds per record of each round, and bytes per record.
    let mut results: Vec<(String, Vec<f64>, u64)> = Vec::new();
    for _ in 0..ROUNDS {
        let lines = RECORDS / 4096 * 4096;
        let mut sink = Lines::new(Discard(0), lines as usize, Arc::new(Stats::default()))
            .expect("writer thread");
        let start = Instant::now();
        for _ in 0..RECORDS / 4096 {
            sink.take(black_box(&raws), &clock)
                .expect("discard cannot fail");
        }
        // Until the writer thread has written every line.
        let written = sink.close().expect("discard cannot fail").0;
        let ns = start.elapsed().as_nanos() as f64 / lines as f64;
        record(&mut results, "stdout lines".to_owned(), ns, written / lines);
        for format in formats {
            let mut encoder = Encoder::new(format, Arc::clone(&agent), false);
            let mut bytes = 0;
            let start = Instant::now();
            for chunk in 0..RECORDS / BATCH as u64 {
                let records: Vec<Item> = (0..BATCH as u64)
                    .map(|i| {
                        Item::Packet(Record::from_kernel(
                            &raws[((chunk + i) % 4096) as usize],
                            &clock,
                        ))
                    })
                    .collect();
                let body = encoder.body(chunk, 0, &records).expect("in memory");
                bytes += black_box(body.as_slice()).len() as u64;
            }
            let ns = start.elapsed().as_nanos() as f64 / RECORDS as f64;
            record(
                &mut results,
                format!("{format} body ({BATCH} records)"),
                ns,
                bytes / RECORDS,
            );
        }
    }
    for (name, mut rounds, bytes) in results {
        rounds.sort_by(f64::total_cmp);
        println!(
            "{name}: {:.0} ns/record ({bytes} bytes/record; rounds {:.0}–{:.0})",
            rounds[rounds.len() / 2],
            rounds[0],
            rounds[rounds.len() - 1]
        );
    }
}

fn record(results: &mut Vec<(String, Vec<f64>, u64)>, name: String, ns: f64, bytes: u64) {
    match results.iter_mut().find(|(n, _, _)| *n == name) {
        Some((_, rounds, _)) => rounds.push(ns),
        None => results.push((name, vec![ns], bytes)),
    }
}
