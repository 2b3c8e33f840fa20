//! Real traffic between two network namespaces, captured by the sniffer on the server's `eth0`,
//! checked against TCP semantics and, packet by packet, against an independent capture.

use std::{
    net::{SocketAddr, TcpListener},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::{
    agent::{Agent, SNIFFER},
    dissector::{RawCapture, expected_record},
    netns::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, Topology, topology},
    traffic::{MATCHED, REQUEST_SIZES, UNMATCHED, check_flow, exchange, serve},
};

/// The sniffer on the server's `eth0` for the matched port, with extra variables; attached.
fn start(topology: &Topology, extra: &[(&str, &str)]) -> Agent {
    let mut sniffer = topology.server.command(SNIFFER);
    sniffer
        .env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0");
    for (key, value) in extra {
        sniffer.env(key, value);
    }
    Agent::attached(sniffer)
}

#[test]
fn records_every_packet_of_matched_flows_ipv4_and_ipv6() {
    testbed::skip_unless_root!();
    let topology = topology();
    let v4: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let v6: SocketAddr = format!("[{SERVER_V6}]:{MATCHED}").parse().unwrap();
    let other: SocketAddr = format!("{SERVER_V4}:{UNMATCHED}").parse().unwrap();
    let listeners = topology
        .server
        .run(move || [v4, v6, other].map(|addr| TcpListener::bind(addr).expect("bind")));

    let raw = RawCapture::start(&topology.server, "eth0");
    let agent = start(&topology, &[]);

    let [l4, l6, lo] = listeners;
    let servers = [
        serve(l4, REQUEST_SIZES.len()),
        serve(l6, REQUEST_SIZES.len()),
        serve(lo, 1),
    ];
    let flows = topology.client.run(move || {
        let mut flows = Vec::new();
        for size in REQUEST_SIZES {
            flows.push((4, size, exchange(v4, size)));
            flows.push((6, size, exchange(v6, size)));
        }
        exchange(other, 1000);
        flows
    });
    for server in servers {
        server.join().expect("server");
    }
    // The last ACKs are on the wire once both ends have closed; give them a moment.
    thread::sleep(Duration::from_millis(300));
    let frames = raw.stop();
    let finished = agent.terminate();
    assert!(
        finished.status.success(),
        "exit {}: {:#?}",
        finished.status,
        finished.logs
    );

    let records = finished.records();
    assert!(!records.is_empty(), "no records");
    assert!(
        records
            .iter()
            .all(|r| r["src_port"] == MATCHED || r["dst_port"] == MATCHED),
        "a record of an unmatched port"
    );
    for (version, size, client_port) in flows {
        let (client_ip, server_ip) = if version == 4 {
            (CLIENT_V4, SERVER_V4)
        } else {
            (CLIENT_V6, SERVER_V6)
        };
        let flow: Vec<&Value> = records
            .iter()
            .filter(|r| {
                r["ip_version"] == version
                    && (r["src_port"] == client_port || r["dst_port"] == client_port)
            })
            .collect();
        check_flow(&flow, client_ip, server_ip, version, size);
    }

    // Packet by packet: the independent capture saw exactly the same TCP packets on port 8080.
    let mut expected: Vec<String> = frames
        .iter()
        .filter_map(expected_record)
        .filter(|r| r["src_port"] == MATCHED || r["dst_port"] == MATCHED)
        .map(|r| r.to_string())
        .collect();
    let unmatched_seen = frames
        .iter()
        .filter_map(expected_record)
        .filter(|r| r["dst_port"] == UNMATCHED)
        .count();
    assert!(
        unmatched_seen >= 3,
        "the unmatched-port connection did not happen"
    );
    let mut actual: Vec<String> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let ts = r.as_object_mut().unwrap().remove("ts").expect("ts");
            assert!(
                ts.as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() == 30),
                "ts {ts}"
            );
            r.to_string()
        })
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(
        actual.len(),
        expected.len(),
        "record count vs independent capture"
    );
    assert_eq!(actual, expected);
    assert!(records.iter().any(|r| r["direction"] == "egress"));

    let stopped = finished.log("stopped");
    assert_eq!(stopped["records"], records.len());
    assert_eq!(stopped["matched"], records.len());
    assert_eq!(stopped["dropped_ring_full"], 0);
}

#[test]
fn timestamps_are_wall_clock_time_of_capture() {
    testbed::skip_unless_root!();
    let topology = topology();
    let addr: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let listener = topology
        .server
        .run(move || TcpListener::bind(addr).expect("bind"));
    let agent = start(&topology, &[]);
    let before = std::time::SystemTime::now();
    let server = serve(listener, 1);
    topology.client.run(move || exchange(addr, 10));
    server.join().unwrap();
    thread::sleep(Duration::from_millis(200));
    let after = std::time::SystemTime::now();
    let finished = agent.terminate();
    let records = finished.records();
    assert!(records.len() >= 6, "{records:#?}");
    let rfc3339 = |t: std::time::SystemTime| {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        cli_support::time::Timestamp::from_unix_nanos(i64::try_from(d.as_nanos()).unwrap())
            .to_string()
    };
    let (lo, hi) = (rfc3339(before), rfc3339(after));
    let stamps: Vec<&str> = records.iter().map(|r| r["ts"].as_str().unwrap()).collect();
    for ts in &stamps {
        assert!(
            lo.as_str() <= *ts && *ts <= hi.as_str(),
            "{ts} not within [{lo}, {hi}]"
        );
    }
}

#[test]
fn captures_with_only_net_raw_and_bpf_capabilities() {
    testbed::skip_unless_root!();
    // What the injector grants: the verifier must accept the program without CAP_PERFMON or
    // CAP_SYS_ADMIN, and the socket and maps need nothing more.
    let topology = topology();
    let addr: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let listener = topology
        .server
        .run(move || TcpListener::bind(addr).expect("bind"));
    let mut sniffer = topology.server.command("setpriv");
    sniffer
        .args([
            "--bounding-set=-all,+net_raw,+bpf",
            "--inh-caps=-all",
            SNIFFER,
        ])
        .env("PORTS", MATCHED.to_string())
        .env("INTERFACE", "eth0");
    let agent = Agent::attached(sniffer);
    let server = serve(listener, 1);
    let client_port = topology.client.run(move || exchange(addr, 100));
    server.join().unwrap();
    thread::sleep(Duration::from_millis(200));
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let records = finished.records();
    let flow: Vec<&Value> = records
        .iter()
        .filter(|r| r["src_port"] == client_port || r["dst_port"] == client_port)
        .collect();
    check_flow(&flow, CLIENT_V4, SERVER_V4, 4, 100);
}

#[test]
fn ring_overflow_is_counted_exactly() {
    testbed::skip_unless_root!();
    let topology = topology();
    let addr: SocketAddr = format!("{SERVER_V4}:{MATCHED}").parse().unwrap();
    let listener = topology
        .server
        .run(move || TcpListener::bind(addr).expect("bind"));
    let mut agent = start(
        &topology,
        &[("RING_BUFFER_BYTES", "4096"), ("RING_WAKEUP_BYTES", "2048")],
    );
    // A stopped reader cannot drain: a one-page ring (51 records) overflows during the
    // connections (about 10 packets each).
    agent.pause();
    let connections = 20;
    let server = serve(listener, connections);
    topology.client.run(move || {
        for _ in 0..connections {
            exchange(addr, 100);
        }
    });
    server.join().unwrap();
    agent.resume();
    agent.wait_for_log(
        "kernel ring buffer full: records lost",
        Duration::from_secs(5),
    );
    let finished = agent.terminate();
    assert_eq!(finished.status.code(), Some(0), "{:#?}", finished.logs);
    let stopped = finished.log("stopped");
    let count = |field: &str| stopped[field].as_u64().unwrap();
    assert!(count("dropped_ring_full") > 0, "{stopped}");
    assert_eq!(count("records"), finished.stdout.len() as u64);
    assert_eq!(
        count("matched"),
        count("records") + count("dropped_ring_full"),
        "{stopped}"
    );
    let lost: u64 = finished
        .logs
        .iter()
        .filter(|l| l["msg"] == "kernel ring buffer full: records lost")
        .map(|l| l["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(lost, count("dropped_ring_full"));
}
