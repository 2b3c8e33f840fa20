//! Userspace cost per record: kernel record → JSON, as NDJSON lines and as batch bodies.
//!
//! `cargo bench -p sniffer --bench encode` prints nanoseconds per record; `cargo xtask bench
//! --only encode` runs it and puts the numbers into docs/benchmarks.md.

use std::{hint::black_box, io, sync::Arc, time::Instant};

use sniffer::{
    capture::clock::WallClock,
    deliver::{Sink as _, stdout::Lines},
    encode::{AgentInfo, Encoder, record::Record},
    metrics::Stats,
};
use sniffer_common::{PACKET_OUTGOING, PacketRecord, addr_words, tcp_flags};

const RECORDS: u64 = 2_000_000;
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
        _pad: 0,
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

fn main() {
    let clock = WallClock::now();
    let raws: Vec<PacketRecord> = (0..4096).map(raw).collect();

    let mut sink = Box::new(Lines::new(Discard(0), Arc::new(Stats::default())));
    let start = Instant::now();
    for i in 0..RECORDS / 4096 {
        black_box(i);
        sink.take(&raws, &clock).expect("discard cannot fail");
    }
    let ndjson = start.elapsed();
    let bytes = sink.get_ref().0;
    let lines = RECORDS / 4096 * 4096;

    let agent = AgentInfo {
        pod: Some("web-7d9c".into()),
        namespace: Some("shop".into()),
        node: Some("node-3".into()),
        interface: "eth0".into(),
        version: env!("CARGO_PKG_VERSION"),
        instance: "6f1c2b9e-0000-4000-8000-000000000000".into(),
    };
    let mut encoder = Encoder::new(Arc::new(agent), false);
    let mut body_bytes = 0;
    let start = Instant::now();
    for chunk in 0..RECORDS / BATCH as u64 {
        let records: Vec<Record> = (0..BATCH as u64)
            .map(|i| Record::from_kernel(&raws[((chunk + i) % 4096) as usize], &clock))
            .collect();
        body_bytes += black_box(encoder.body(chunk, 0, &records).expect("in memory")).len();
    }
    let batches = start.elapsed();

    let per = |d: std::time::Duration, n: u64| d.as_nanos() as f64 / n as f64;
    println!(
        "ndjson: {:.0} ns/record ({} bytes/record)",
        per(ndjson, lines),
        bytes / lines
    );
    println!(
        "batch body ({BATCH} records): {:.0} ns/record ({} bytes/record)",
        per(batches, RECORDS),
        body_bytes as u64 / RECORDS
    );
}
