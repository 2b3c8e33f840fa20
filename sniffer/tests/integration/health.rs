//! Connection health in connection records: round trips per side against tshark's
//! `tcp.analysis.ack_rtt` on a pcap of the same interface, and Zeek's `conn_state` and
//! `history` for each kind of connection a veth can produce.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use serde_json::Value;
use sniffer::connections::rtt::MAX_UNACKED;

use crate::{
    agent::{Agent, SNIFFER},
    connections::{Pcap, epoch_ns, in_recorded_order, nft, reset, tshark_fields},
    netns::{Netns, SERVER_V4, SERVER_V6, topology},
};

/// The port of the round-trip test.
const RTT_PORT: u16 = 8095;

/// Reads the request line: a mode and a size.
fn request(stream: &mut TcpStream) -> (String, usize) {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).expect("read request") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).expect("request line");
    let (mode, n) = line.split_once(' ').expect("mode and size");
    (mode.to_owned(), n.parse().expect("size"))
}

/// Sends `n` bytes on a clone of `stream` while reading `n` from it: bulk data in both
/// directions at once.
fn duplex(stream: &mut TcpStream, n: usize) {
    let mut writer = stream.try_clone().expect("clone");
    let sending = thread::spawn(move || writer.write_all(&vec![b'd'; n]).expect("send"));
    let mut received = vec![0u8; n];
    stream.read_exact(&mut received).expect("receive");
    sending.join().expect("sender");
}

/// Serves `duplex N` requests on `listener` until the test ends.
fn duplex_server(listener: TcpListener) {
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut stream = stream;
                let (_, n) = request(&mut stream);
                duplex(&mut stream, n);
                stream.shutdown(Shutdown::Write).expect("server FIN");
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            });
        }
    });
}

/// The client's receive buffer: it bounds the server's data in flight, so that the segments
/// waiting for an ACK stay within what the sniffer keeps per side (`rtt::MAX_UNACKED`).
const CLIENT_RECEIVE_BUFFER: libc::c_int = 24 * 1024;

/// A TCP connection to `server` whose receive buffer is set before the handshake (so the window
/// it advertises is small from the start).
fn connect_small_window(server: SocketAddr) -> TcpStream {
    let (family, address, length) = match server {
        SocketAddr::V4(v4) => {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            (libc::AF_INET, storage, size_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(v6) => {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            (libc::AF_INET6, storage, size_of::<libc::sockaddr_in6>())
        }
    };
    let buffer = CLIENT_RECEIVE_BUFFER;
    // SAFETY: plain socket calls on a descriptor owned here until from_raw_fd.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        assert_eq!(
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const buffer).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ),
            0,
            "SO_RCVBUF"
        );
        assert_eq!(
            libc::connect(fd, (&raw const address).cast(), length as libc::socklen_t),
            0,
            "connect to {server}"
        );
        <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }
}

/// A connection from the client namespace exchanging `n` bytes each way at once; returns the
/// client's port.
fn duplex_client(ns: &Netns, server: SocketAddr, n: usize) -> u16 {
    ns.run(move || {
        let mut stream = connect_small_window(server);
        let port = stream.local_addr().expect("local").port();
        stream
            .write_all(format!("duplex {n}\n").as_bytes())
            .expect("request");
        duplex(&mut stream, n);
        stream.shutdown(Shutdown::Write).expect("client FIN");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("server FIN");
        port
    })
}

/// A client: over IPv6 (else IPv4), and its port. An IPv4 and an IPv6 connection may get the
/// same client port.
type Client = (bool, u16);

/// tshark's `tcp.analysis.ack_rtt` samples in nanoseconds, by client and the side that sent the
/// ACK (`true`: the client).
fn tshark_ack_rtt(pcap: &std::path::Path) -> BTreeMap<(Client, bool), Vec<i128>> {
    let syn = "tcp.flags.syn == 1 && tcp.flags.ack == 0";
    let fields = ["tcp.stream", "tcp.srcport", "ipv6.src"];
    let clients: BTreeMap<u64, Client> = tshark_fields(pcap, syn, &fields)
        .iter()
        .map(|f| {
            let port = f[1].parse().expect("port");
            (f[0].parse().expect("stream"), (!f[2].is_empty(), port))
        })
        .collect();
    let mut samples: BTreeMap<(Client, bool), Vec<i128>> = BTreeMap::new();
    let fields = ["tcp.stream", "tcp.srcport", "tcp.analysis.ack_rtt"];
    for f in tshark_fields(pcap, "tcp.analysis.ack_rtt", &fields) {
        let stream: u64 = f[0].parse().expect("stream");
        let source: u16 = f[1].parse().expect("port");
        let client = clients[&stream];
        samples
            .entry((client, source == client.1))
            .or_default()
            .push(epoch_ns(&f[2]));
    }
    samples
}

/// How far apart the sniffer's and tcpdump's stamps of the same packets are, at most: the
/// spread of (packet record's `ts` − frame time) over every packet of `as_recorded`, a pcap
/// whose frames are in the order of the packet records `packets`.
fn stamp_spread(as_recorded: &std::path::Path, packets: &[&Value]) -> i128 {
    let frames = tshark_fields(as_recorded, "", &["frame.time_epoch"]);
    assert_eq!(packets.len(), frames.len(), "packet records against frames");
    let offsets: Vec<i128> = packets
        .iter()
        .zip(&frames)
        .map(|(record, frame)| {
            crate::connections::rfc3339_ns(record["ts"].as_str().unwrap()) - epoch_ns(&frame[0])
        })
        .collect();
    offsets.iter().max().unwrap() - offsets.iter().min().unwrap()
}

/// (samples, min, mean, max) in nanoseconds.
type Summary = (u64, i128, i128, i128);

fn summary(samples: &[i128]) -> Option<Summary> {
    let (min, max) = (*samples.iter().min()?, *samples.iter().max()?);
    let mean = samples.iter().sum::<i128>() / samples.len() as i128;
    Some((samples.len() as u64, min, mean, max))
}

fn recorded_summary(record: &Value, side: &str) -> Option<Summary> {
    let field = |name: &str| record[format!("{side}_ack_rtt_{name}")].clone();
    let samples = field("samples").as_u64().expect("samples");
    let ns = |name: &str| field(name).as_u64().map(i128::from);
    Some((samples, ns("min_ns")?, ns("mean_ns")?, ns("max_ns")?))
}

/// Round trips per side equal tshark's `ack_rtt`, connection by connection: IPv4 and IPv6, 20
/// connections with bulk data both ways, four at a time through a token bucket on the client's
/// side of the link, so that ACKs queue for milliseconds behind data, and by varying amounts.
/// On a machine too busy to deliver ACKs promptly, more than `MAX_UNACKED` segments may wait
/// on a side: the sniffer counts those it could not keep, and those sides may miss at most that
/// many samples (checked), the rest matching exactly.
#[test]
fn ack_round_trips_match_tshark_side_by_side() {
    testbed::skip_unless_root!();
    let topology = topology();
    let out = topology
        .client
        .command("tc")
        .args([
            "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "40mbit", "burst", "32kb",
            "latency", "200ms",
        ])
        .output()
        .expect("tc");
    assert!(
        out.status.success(),
        "tc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listeners = topology.server.run(|| {
        [
            TcpListener::bind((SERVER_V4, RTT_PORT)).expect("bind v4"),
            TcpListener::bind(format!("[{SERVER_V6}]:{RTT_PORT}")).expect("bind v6"),
        ]
    });
    for listener in listeners {
        duplex_server(listener);
    }
    let pcap = Pcap::start(&topology.server, "eth0", &format!("tcp port {RTT_PORT}"));
    let mut sniffer = topology.server.command(SNIFFER);
    sniffer
        .env("PORTS", RTT_PORT.to_string())
        .env("INTERFACE", "eth0")
        .env("RECORDS", "both")
        .env("METRICS_ADDR", "127.0.0.1:9464");
    let agent = Agent::attached(sniffer);

    let v4: SocketAddr = format!("{SERVER_V4}:{RTT_PORT}").parse().unwrap();
    let v6: SocketAddr = format!("[{SERVER_V6}]:{RTT_PORT}").parse().unwrap();
    let ports = Arc::new(Mutex::new(Vec::new()));
    for round in 0..5 {
        thread::scope(|scope| {
            for i in 0..4 {
                let (server, client, ports) = (
                    if (round + i) % 2 == 0 { v4 } else { v6 },
                    &topology.client,
                    Arc::clone(&ports),
                );
                let n = 100_000 + 150_000 * ((round * 4 + i) % 7);
                scope.spawn(move || {
                    let port = duplex_client(client, server, n);
                    ports.lock().unwrap().push((server.is_ipv6(), port));
                });
            }
        });
    }
    // The last connection's linger, and a sweep.
    thread::sleep(Duration::from_millis(1_500));
    let metrics = crate::netns::http_get(&topology, "127.0.0.1:9464".parse().unwrap(), "/metrics");
    let pcap = pcap.stop();
    let finished = agent.terminate();
    assert!(finished.status.success(), "{:?}", finished.status);
    let untracked: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tcp_sniffer_ack_rtt_untracked_segments_total "))
        .and_then(|v| v.parse().ok())
        .expect("the untracked segments counter");

    let records = finished.records();
    // tshark analyses the packets in the order the sniffer saw them (see connections.rs).
    let packets: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] != "connection")
        .collect();
    let (as_recorded, moved) = in_recorded_order(&pcap, &packets);
    let theirs = tshark_ack_rtt(&as_recorded);

    // The sniffer and tcpdump stamp each packet at slightly different moments; a round trip is
    // a difference of two stamps, so it may differ by the spread of those offsets (and by the
    // microsecond the sniffer keeps), never more.
    let spread = stamp_spread(&as_recorded, &packets);
    let ports = ports.lock().unwrap().clone();
    assert_eq!(ports.len(), 20);
    println!(
        "client port | ip | conn_state | history | side | samples | min/mean/max µs (sniffer) | min/mean/max µs (tshark); stamps spread {spread} ns, {untracked} segments untracked, {moved} frames reordered"
    );
    let mut varied = false;
    let (mut exact, mut missing) = (0, 0);
    for (ipv6, port) in ports {
        let version = if ipv6 { 6 } else { 4 };
        let record = records
            .iter()
            .find(|r| r["client_port"] == port && r["ip_version"] == version)
            .unwrap_or_else(|| panic!("no record for client port {port}, IPv{version}"));
        assert_eq!(record["conn_state"], "SF", "{record}");
        for (side, is_client) in [("client", true), ("server", false)] {
            let ours = recorded_summary(record, side);
            let expected = theirs
                .get(&((ipv6, port), is_client))
                .and_then(|s| summary(s));
            let (Some(ours), Some(expected)) = (ours, expected) else {
                panic!("{side} of {port}: sniffer {ours:?}, tshark {expected:?}: {record}");
            };
            let tolerance = spread + 2_000;
            if ours.0 != expected.0 && untracked > 0 {
                // A machine slow to deliver ACKs let more than MAX_UNACKED segments wait: those
                // the sniffer could not keep (counted) give no sample, so this side's samples
                // are a subset of tshark's, at most one fewer per untracked segment (below).
                assert!(
                    ours.0 < expected.0
                        && ours.1 + tolerance >= expected.1
                        && ours.3 <= expected.3 + tolerance,
                    "{side} of {port} with {untracked} segments untracked: sniffer {ours:?}, \
                     tshark {expected:?}: {record}"
                );
                missing += expected.0 - ours.0;
            } else {
                assert_eq!(ours.0, expected.0, "{side} samples of {port}: {record}");
                for (what, a, b) in [
                    ("min", ours.1, expected.1),
                    ("mean", ours.2, expected.2),
                    ("max", ours.3, expected.3),
                ] {
                    assert!(
                        (a - b).abs() <= tolerance,
                        "{side} {what} of {port}: sniffer {a} ns, tshark {b} ns, stamps spread \
                         {spread} ns: {record}"
                    );
                }
                exact += 1;
            }
            varied |= is_client && expected.3 > 1_000_000 && expected.3 > 4 * expected.1;
            let us = |ns: i128| format!("{:.1}", ns as f64 / 1000.0);
            println!(
                "{port} | {} | {} | {} | {side} | {} | {}/{}/{} | {}/{}/{}",
                record["ip_version"],
                record["conn_state"],
                record["history"],
                ours.0,
                us(ours.1),
                us(ours.2),
                us(ours.3),
                us(expected.1),
                us(expected.2),
                us(expected.3),
            );
        }
    }
    assert!(
        varied,
        "no client round trip over 1 ms and varying: the link was not loaded"
    );
    assert!(
        missing <= untracked,
        "{missing} samples missing, more than the {untracked} segments the sniffer left untracked \
         (at most {MAX_UNACKED} wait per side)"
    );
    // Untracked segments are the exception (a slow machine), not the test.
    assert!(
        exact >= 30,
        "only {exact} of 40 sides compared exactly ({untracked} segments untracked)"
    );
}

/// Ports of the state test, each a behaviour of the server namespace.
const ECHO: u16 = 8096;
const LOSSY: u16 = 8097;
const CLOSED: u16 = 8098;
const BLACKHOLE: u16 = 8099;
const HOLD: u16 = 8100;
const RESETS: u16 = 8101;

/// Serves the state test's ports: `ECHO` and `LOSSY` echo `n` bytes then close after the
/// client; `HOLD` keeps every connection open, even after the client's FIN; `RESETS` reads the
/// request and resets. Nothing listens on `CLOSED`; `BLACKHOLE` never answers.
fn state_servers(ns: &Netns) {
    let listeners = ns.run(|| {
        [ECHO, LOSSY, HOLD, RESETS]
            .map(|port| (port, TcpListener::bind((SERVER_V4, port)).expect("bind")))
    });
    let held = Arc::new(Mutex::new(Vec::new()));
    for (port, listener) in listeners {
        let held = Arc::clone(&held);
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let held = Arc::clone(&held);
                thread::spawn(move || {
                    let mut stream = stream;
                    let (_, n) = request(&mut stream);
                    match port {
                        HOLD => {
                            let mut buf = [0u8; 4096];
                            while stream.read(&mut buf).is_ok_and(|read| read > 0) {}
                            held.lock().unwrap().push(stream);
                        }
                        RESETS => reset(stream),
                        _ => {
                            let mut data = vec![0u8; n];
                            stream.read_exact(&mut data).expect("echo read");
                            stream.write_all(&data).expect("echo write");
                            let mut rest = Vec::new();
                            let _ = stream.read_to_end(&mut rest);
                        }
                    }
                });
            }
        });
    }
}

/// What a test connection does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Echo of 2 KB, then both close.
    Normal,
    /// Echo of 400 KB through a lossy input, then both close.
    Lossy,
    /// A SYN to a closed port.
    Rejected,
    /// A SYN nobody answers.
    Unanswered,
    /// Some data, then the client resets.
    ClientReset,
    /// The server resets after the request.
    ServerReset,
    /// Some data, then the client's FIN; the server never closes.
    ClientClosedOnly,
    /// Some data; nobody closes before the sniffer stops.
    Open,
}

impl Kind {
    /// The verdict, letters its history must hold, and letters it must not.
    fn expected(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Normal => ("SF", "ShADadFf", "TtRrGg"),
            Self::Lossy => ("SF", "ShADadFf", "Rr"),
            Self::Rejected => ("REJ", "Sr", "hADdFfR"),
            Self::Unanswered => ("S0", "S", "hHADaFfRr"),
            Self::ClientReset => ("RSTO", "ShADR", "Ffr"),
            Self::ServerReset => ("RSTR", "ShADr", "FfR"),
            Self::ClientClosedOnly => ("S2", "ShADF", "fRr"),
            Self::Open => ("S1", "ShAD", "FfRr"),
        }
    }

    fn port(self) -> u16 {
        match self {
            Self::Normal => ECHO,
            Self::Lossy => LOSSY,
            Self::Rejected => CLOSED,
            Self::Unanswered => BLACKHOLE,
            Self::ClientReset | Self::ClientClosedOnly | Self::Open => HOLD,
            Self::ServerReset => RESETS,
        }
    }
}

/// Runs `kind` from the client namespace; returns the client's port and any stream that must
/// stay open until the sniffer stops.
fn connect(ns: &Netns, kind: Kind) -> (u16, Option<TcpStream>) {
    let server: SocketAddr = format!("{SERVER_V4}:{}", kind.port()).parse().unwrap();
    ns.run(move || {
        if matches!(kind, Kind::Rejected | Kind::Unanswered) {
            // Refused, or timed out: its record is found by the server's port.
            assert!(TcpStream::connect_timeout(&server, Duration::from_millis(2500)).is_err());
            return (0, None);
        }
        let mut stream =
            TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
        let port = stream.local_addr().unwrap().port();
        match kind {
            Kind::Normal | Kind::Lossy => {
                let n = if matches!(kind, Kind::Lossy) {
                    400_000
                } else {
                    2_000
                };
                stream.write_all(format!("echo {n}\n").as_bytes()).unwrap();
                stream.write_all(&vec![b'e'; n]).unwrap();
                let mut back = vec![0u8; n];
                stream.read_exact(&mut back).expect("echo back");
                stream.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).expect("server FIN");
                (port, None)
            }
            Kind::ClientReset => {
                stream.write_all(b"hold 0\nbye").unwrap();
                thread::sleep(Duration::from_millis(50));
                reset(stream);
                (port, None)
            }
            Kind::ServerReset => {
                stream.write_all(b"reset 0\n").unwrap();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
                (port, None)
            }
            Kind::ClientClosedOnly => {
                stream.write_all(b"hold 0\nbye").unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                (port, Some(stream))
            }
            Kind::Open => {
                stream.write_all(b"hold 0\nstill here").unwrap();
                (port, Some(stream))
            }
            Kind::Rejected | Kind::Unanswered => unreachable!("handled above"),
        }
    })
}

/// One connection of each `conn_state` a veth can produce, its history letters checked: SF, SF
/// with retransmissions, REJ, S0, RSTO, RSTR, S2 and S1 reported at shutdown, and OTH for a
/// connection open before the sniffer started.
#[test]
fn conn_state_and_history_follow_zeek() {
    testbed::skip_unless_root!();
    let topology = topology();
    state_servers(&topology.server);
    // After the capture point, so the sniffer sees what is dropped: every SYN to BLACKHOLE, and
    // every fifth of LOSSY's data segments (counted, not random: on a veth a few large segments
    // carry the whole transfer, and a random fifth of them is sometimes none).
    nft(
        &topology.server,
        &format!(
            "table inet tcp_sniffer_states {{\n chain input {{\n type filter hook input priority 0;\n \
             tcp dport {BLACKHOLE} drop\n \
             tcp dport {LOSSY} meta length > 200 numgen inc mod 5 == 2 drop\n }}\n}}\n"
        ),
    );
    // Open before the sniffer starts: seen mid-stream.
    let (mid_port, mid_stream) = topology.client.run(move || {
        let mut stream = TcpStream::connect((SERVER_V4, HOLD)).expect("connect");
        stream.write_all(b"hold 0\n").unwrap();
        (stream.local_addr().unwrap().port(), stream)
    });
    thread::sleep(Duration::from_millis(200));

    let mut sniffer = topology.server.command(SNIFFER);
    sniffer
        .env(
            "PORTS",
            format!("{ECHO},{LOSSY},{CLOSED},{BLACKHOLE},{HOLD},{RESETS}"),
        )
        .env("INTERFACE", "eth0")
        .env("RECORDS", "connections");
    let agent = Agent::attached(sniffer);
    let mid = Arc::new(Mutex::new(mid_stream));
    {
        let mid = Arc::clone(&mid);
        topology.client.run(move || {
            mid.lock().unwrap().write_all(b"more data").unwrap();
        });
    }
    let kinds = [
        Kind::Normal,
        Kind::Lossy,
        Kind::Rejected,
        Kind::Unanswered,
        Kind::ClientReset,
        Kind::ServerReset,
        Kind::ClientClosedOnly,
        Kind::Open,
    ];
    let mut ports = Vec::new();
    let mut open = Vec::new();
    for kind in kinds {
        let (port, stream) = connect(&topology.client, kind);
        ports.push((port, kind));
        open.extend(stream);
    }
    thread::sleep(Duration::from_millis(1_500));
    let finished = agent.terminate();
    drop(open);
    assert!(finished.status.success(), "{:?}", finished.status);
    let records = finished.records();
    let verdict = |port: u16, server: u16| -> (String, String) {
        let record = records
            .iter()
            .find(|r| {
                // A client port may repeat towards another server port.
                r["server_port"] == server && (port == 0 || r["client_port"] == port)
            })
            .unwrap_or_else(|| panic!("no record for client port {port}: {records:#?}"));
        (
            record["conn_state"].as_str().unwrap().to_owned(),
            record["history"].as_str().unwrap().to_owned(),
        )
    };
    for (port, kind) in ports {
        let (state, history) = verdict(port, kind.port());
        let (expected, must, must_not) = kind.expected();
        println!("{kind:?}: {state} {history}");
        assert_eq!(state, expected, "{kind:?}: history {history}");
        for letter in must.chars() {
            assert!(
                history.contains(letter),
                "{kind:?}: {history} lacks {letter}"
            );
        }
        for letter in must_not.chars() {
            assert!(
                !history.contains(letter),
                "{kind:?}: {history} has {letter}"
            );
        }
        if matches!(kind, Kind::Lossy) {
            assert!(
                history.contains('t') || history.contains('T'),
                "{kind:?}: no retransmission in {history}"
            );
        }
        // Each of s, h, a, d, f, r at most once per side here: no SYN, FIN or RST was repeated
        // with another sequence number.
        for letter in "ShADFRshadfr".chars() {
            assert!(
                history.matches(letter).count() <= 1,
                "{kind:?}: {letter} repeated in {history}"
            );
        }
    }
    let (state, history) = verdict(mid_port, HOLD);
    println!("mid-stream: {state} {history}");
    assert_eq!(state, "OTH", "{history}");
    assert!(
        history.contains('D') && !history.contains('S') && !history.contains('h'),
        "{history}"
    );
}
