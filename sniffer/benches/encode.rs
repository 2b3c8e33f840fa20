//! Userspace cost per record: kernel record → the bytes sent, as stdout lines and as a body in
//! each `OUTPUT_FORMAT`; and for connection records, a tracked connection's report → the bytes
//! sent, in each format.
//!
//! `cargo bench -p sniffer --bench encode` prints nanoseconds per record; `cargo xtask bench
//! --only encode` runs it and puts the numbers into docs/benchmarks.md.

use std::{
    hint::black_box,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use sniffer::{
    capture::clock::WallClock,
    connections::{
        Tracker, TrackerConfig,
        record::{ConnectionRecord, Report},
    },
    deliver::stdout::Lines,
    encode::{AgentInfo, Encoder, Format, Item, packet::Record},
    metrics::Stats,
    pipeline::Sink as _,
};
use sniffer_common::{PACKET_OUTGOING, PacketRecord, addr_words, tcp_flags};

const RECORDS: u64 = 500_000;
const BATCH: usize = 1000;
/// Connection records per round: one for each connection, so far fewer than packet records.
const CONNECTION_RECORDS: u64 = 50_000;

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

/// The reports of `n` short connections as the tracker makes them: a handshake, a request and
/// its answer, both FINs; every tenth over IPv6, round trips of a few hundred microseconds.
fn connection_reports(n: u64) -> Vec<Report> {
    let mut tracker = Tracker::new(TrackerConfig {
        max_connections: usize::try_from(n).expect("small"),
        idle_timeout: Duration::from_secs(3600),
        report_interval: None,
    });
    let mut reports = Vec::new();
    let (syn, ack, psh, fin) = (
        tcp_flags::SYN,
        tcp_flags::ACK,
        tcp_flags::PSH | tcp_flags::ACK,
        tcp_flags::FIN | tcp_flags::ACK,
    );
    for c in 0..n {
        let client = raw(c);
        let client = PacketRecord {
            src_port: 20_000 + (c % 40_000) as u16,
            ..client
        };
        let server = PacketRecord {
            src_addr: client.dst_addr,
            dst_addr: client.src_addr,
            src_port: client.dst_port,
            dst_port: client.src_port,
            ..client
        };
        let at = |step: u64| 1_000_000_000 + c * 10_000_000 + step * (150_000 + c % 97 * 1_000);
        // (from the client, flags, seq, ack, payload)
        let exchange = [
            (true, syn, 1000, 0, 0),
            (false, syn | ack, 5000, 1001, 0),
            (true, ack, 1001, 5001, 0),
            (true, psh, 1001, 5001, 120),
            (false, ack, 5001, 1121, 0),
            (false, psh, 5001, 1121, 1400),
            (true, ack, 1121, 6401, 0),
            (true, fin, 1121, 6401, 0),
            (false, fin, 6401, 1122, 0),
            (true, ack, 1122, 6402, 0),
        ];
        for (step, (from_client, flags, seq, ack, payload)) in exchange.into_iter().enumerate() {
            let base = if from_client { client } else { server };
            let packet = PacketRecord {
                ts_ns: at(step as u64),
                tcp_flags: flags,
                seq,
                ack,
                payload_len: payload,
                len: 66 + payload,
                ..base
            };
            tracker.observe(&packet, &mut reports);
        }
    }
    tracker.finish(u64::MAX / 2, usize::MAX, &mut reports);
    reports
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
    let reports = connection_reports(BATCH as u64);
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
            let encoder = Encoder::new(format, Arc::clone(&agent), false);
            let (ns, bytes) = bodies(encoder, RECORDS, |chunk| {
                (0..BATCH as u64)
                    .map(|i| {
                        Item::Packet(Record::from_kernel(
                            &raws[((chunk + i) % 4096) as usize],
                            &clock,
                        ))
                    })
                    .collect()
            });
            let name = format!("{format} body ({BATCH} records)");
            record(&mut results, name, ns, bytes);
        }
        for format in formats {
            let encoder = Encoder::new(format, Arc::clone(&agent), false);
            let (ns, bytes) = bodies(encoder, CONNECTION_RECORDS, |_| {
                reports
                    .iter()
                    .map(|report| Item::from(ConnectionRecord::new(report.clone(), &clock)))
                    .collect()
            });
            let name = format!("{format} body ({BATCH} connection records)");
            record(&mut results, name, ns, bytes);
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

/// Encodes `records` records into bodies of [`BATCH`] made by `batch` (given the body's
/// number), timing the making and the encoding: nanoseconds and bytes per record.
fn bodies(
    mut encoder: Encoder,
    records: u64,
    mut batch: impl FnMut(u64) -> Vec<Item>,
) -> (f64, u64) {
    let mut bytes = 0;
    let start = Instant::now();
    for chunk in 0..records / BATCH as u64 {
        let items = batch(chunk);
        let body = encoder.body(chunk, 0, &items).expect("in memory");
        bytes += black_box(body.as_slice()).len() as u64;
    }
    (
        start.elapsed().as_nanos() as f64 / records as f64,
        bytes / records,
    )
}

fn record(results: &mut Vec<(String, Vec<f64>, u64)>, name: String, ns: f64, bytes: u64) {
    match results.iter_mut().find(|(n, _, _)| *n == name) {
        Some((_, rounds, _)) => rounds.push(ns),
        None => results.push((name, vec![ns], bytes)),
    }
}
