//! Overload: a flood on a matched port into a tiny ring, a small buffer and a slow collector.
//! Every packet the kernel saw is accounted for, checked against an independent capture, and the
//! process stays responsive.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    agent::{Agent, SNIFFER},
    collector::{Collector, Reply},
    dissector::{RawCapture, expected_record},
    netns::{SERVER_V4, Topology, topology},
    traffic::MATCHED,
};

/// Sends 64-byte writes with `TCP_NODELAY` for `duration` on each of `connections`.
pub fn flood(topology: &Topology, connections: usize, duration: Duration) {
    let addr: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let listener = topology
        .server
        .run(move || TcpListener::bind(addr).expect("bind"));
    let sink = thread::spawn(move || {
        let mut readers = Vec::new();
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            readers.push(thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
            }));
        }
        for reader in readers {
            reader.join().unwrap();
        }
    });
    topology.client.run(move || {
        let writers: Vec<_> = (0..connections)
            .map(|_| {
                thread::spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    stream.set_nodelay(true).unwrap();
                    let start = Instant::now();
                    while start.elapsed() < duration {
                        stream.write_all(&[b'f'; 64]).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
    });
    sink.join().unwrap();
}

fn metrics(topology: &Topology, addr: SocketAddr) -> (Duration, String) {
    topology.server.run(move || {
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        (start.elapsed(), text)
    })
}

#[test]
fn flood_is_accounted_exactly_and_the_process_stays_responsive() {
    testbed::skip_unless_root!();
    let topology = topology();
    let slow = Collector::start(
        topology
            .server
            .run(|| TcpListener::bind("127.0.0.1:0").unwrap()),
        |_, _| {
            thread::sleep(Duration::from_millis(200));
            Reply::Status(200, Vec::new())
        },
    );
    let metrics_addr = topology.server.run(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    });
    let raw = RawCapture::start(&topology.server, "eth0");
    let mut cmd = topology.server.command(SNIFFER);
    cmd.env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0")
        .env("OUTPUT_URL", format!("http://{}/", slow.addr))
        .env("RING_BUFFER_BYTES", "16384")
        .env("RING_WAKEUP_BYTES", "4096")
        .env("BATCH_MAX_RECORDS", "100")
        .env("BATCH_MAX_WAIT_MS", "50")
        .env("BUFFER_MAX_RECORDS", "300")
        .env("OUTPUT_CONCURRENCY", "1")
        .env("SHUTDOWN_GRACE_MS", "1000")
        .env("METRICS_ADDR", metrics_addr.to_string());
    let agent = Agent::attached(cmd);

    let during = thread::scope(|scope| {
        let probe = scope.spawn(|| {
            thread::sleep(Duration::from_millis(700));
            metrics(&topology, metrics_addr)
        });
        flood(&topology, 2, Duration::from_millis(1500));
        probe.join().unwrap()
    });
    let (latency, text) = during;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        latency < Duration::from_secs(1),
        "metrics took {latency:?} under load"
    );

    thread::sleep(Duration::from_millis(300));
    let frames = raw.stop();
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    assert!(
        finished.elapsed < Duration::from_secs(4),
        "stop took {:?}",
        finished.elapsed
    );

    let stopped = finished.log("stopped");
    let count = |field: &str| stopped[field].as_u64().unwrap_or_else(|| panic!("{field}"));
    // The independent capture saw exactly the packets the kernel program matched.
    let seen = frames
        .iter()
        .filter_map(expected_record)
        .filter(|r: &Value| r["src_port"] == MATCHED || r["dst_port"] == MATCHED)
        .count() as u64;
    assert!(seen > 10_000, "the flood was too small: {seen} packets");
    assert_eq!(
        count("matched"),
        seen,
        "kernel count vs independent capture"
    );
    // Everything matched was delivered or counted as dropped, and losses really happened.
    assert_eq!(
        count("delivered") + count("dropped"),
        count("matched"),
        "{stopped}"
    );
    assert!(
        count("dropped_ring_full") + count("dropped_buffer_full") > 0,
        "{stopped}"
    );
    let received: u64 = slow
        .received()
        .iter()
        .map(|r| r.body["records"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(received, count("delivered"));
}
