//! Connection records (`RECORDS=both`) against tshark's analysis of the same packets.
//!
//! Real connections between the two namespaces, with loss induced by nftables: data segments
//! are dropped at random on the receiving side, *after* the interface where both the sniffer and
//! tcpdump capture (packet taps run before the IP input hook), so that both see every original
//! and every retransmission. tcpdump writes a pcap of the same interface; tshark analyses it;
//! per connection (tshark's `tcp.stream`), the sniffer's counts must equal tshark's, by the
//! definitions in docs/specs/OUTPUT_FORMAT.md ("Connection records").
//!
//! The two taps may see packets in different orders: a veth delivers what each CPU sends on
//! that CPU, and when both CPUs deliver at once, tcpdump's ring and the sniffer's may each take
//! the two packets first (a run once had two of a client's segments swapped, so tshark counted
//! one lost segment and one retransmission the sniffer never saw). The analysis of a stream
//! depends on the order of its segments, so tshark analyses the pcap rewritten in the order the
//! sniffer recorded the packets ([`in_recorded_order`]), after checking that both hold the same
//! packets.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use testbed::paths::ScratchFile;

use crate::{
    agent::{Agent, SNIFFER},
    netns::{Netns, SERVER_V4, SERVER_V6, http_get, topology},
};

/// The port most connections use.
const PORT: u16 = 8090;
/// A port whose listener has a tiny receive buffer, so that its server advertises zero windows.
const SMALL_WINDOW_PORT: u16 = 8091;
/// The sniffer's idle timeout in this test.
const IDLE_TIMEOUT_MS: u64 = 2_000;
/// The sniffer's metrics endpoint, inside the server namespace.
const METRICS: &str = "127.0.0.1:9464";
/// Percent of data segments dropped in each direction.
const LOSS_PERCENT: u32 = 3;

/// What a test connection does, and how its record must say it ended.
#[derive(Clone, Copy, Debug)]
enum Workload {
    /// Sends `n` bytes, reads `n` back, then both close.
    Echo(usize),
    /// Sends `n` bytes and half-closes; the server reads to the end, then sends `n` and closes.
    HalfClose(usize),
    /// Sends a little, then closes with `SO_LINGER` 0: a RST from the client.
    Reset,
    /// Sends a little, then stays open and silent past the idle timeout.
    Idle,
    /// Sends `n` bytes to the small-window port, whose server reads only after a pause.
    ZeroWindow(usize),
}

impl Workload {
    fn end_reason(self) -> &'static str {
        match self {
            Self::Echo(_) | Self::HalfClose(_) | Self::ZeroWindow(_) => "fin",
            Self::Reset => "rst",
            Self::Idle => "timeout",
        }
    }

    /// The request line the server reads first.
    fn request(self) -> String {
        match self {
            Self::Echo(n) => format!("echo {n}\n"),
            Self::HalfClose(n) => format!("half {n}\n"),
            Self::Reset | Self::Idle => "hold 0\n".to_owned(),
            Self::ZeroWindow(n) => format!("slow {n}\n"),
        }
    }
}

/// A listener whose receive buffer is set before `listen`, so that the window it advertises
/// from the handshake on is small.
fn small_window_listener(addr: SocketAddr) -> TcpListener {
    // SAFETY: plain socket calls on a descriptor this function owns until from_raw_fd.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        let one: libc::c_int = 1;
        for (option, value) in [(libc::SO_RCVBUF, size), (libc::SO_REUSEADDR, one)] {
            assert_eq!(
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    (&raw const value).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                ),
                0
            );
        }
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only")
        };
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::bind(
                fd,
                (&raw const sockaddr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            ),
            0,
            "bind"
        );
        assert_eq!(libc::listen(fd, 16), 0, "listen");
        TcpListener::from_raw_fd(fd)
    }
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).expect("read request") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).expect("request line")
}

/// Serves one connection as its request line asks.
fn serve(mut stream: TcpStream) {
    let line = read_line(&mut stream);
    let (mode, n) = line.split_once(' ').expect("mode and size");
    let n: usize = n.parse().expect("size");
    let mut data = vec![0u8; n];
    match mode {
        "echo" => {
            stream.read_exact(&mut data).expect("echo read");
            stream.write_all(&data).expect("echo write");
            let mut rest = Vec::new();
            stream
                .read_to_end(&mut rest)
                .expect("wait for the client's FIN");
        }
        "half" => {
            let mut request = Vec::new();
            stream.read_to_end(&mut request).expect("half read");
            assert_eq!(request.len(), n);
            stream.write_all(&vec![b'h'; n]).expect("half write");
        }
        "slow" => {
            thread::sleep(Duration::from_millis(800));
            stream.read_exact(&mut data).expect("slow read");
            stream.write_all(b"done").expect("slow write");
            let mut rest = Vec::new();
            stream
                .read_to_end(&mut rest)
                .expect("wait for the client's FIN");
        }
        "hold" => {
            let mut rest = Vec::new();
            // Ends at the client's FIN or RST.
            let _ = stream.read_to_end(&mut rest);
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Accepts connections in `ns` on every listener until the test ends.
fn servers(ns: &Netns) {
    let listeners = ns.run(|| {
        vec![
            TcpListener::bind((SERVER_V4, PORT)).expect("bind v4"),
            TcpListener::bind(format!("[{SERVER_V6}]:{PORT}")).expect("bind v6"),
            small_window_listener(format!("{SERVER_V4}:{SMALL_WINDOW_PORT}").parse().unwrap()),
        ]
    });
    for listener in listeners {
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                thread::spawn(move || serve(stream));
            }
        });
    }
}

/// Runs `workload` from the client namespace; returns the client's port and, for `Idle`, the
/// still-open stream (closed once the capture is over).
fn run(ns: &Netns, server: SocketAddr, workload: Workload) -> (u16, Option<TcpStream>) {
    ns.run(move || {
        let mut stream =
            TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
        let port = stream.local_addr().expect("local").port();
        stream
            .write_all(workload.request().as_bytes())
            .expect("request");
        match workload {
            Workload::Echo(n) => {
                stream.write_all(&vec![b'e'; n]).expect("send");
                let mut back = vec![0u8; n];
                stream.read_exact(&mut back).expect("echo back");
                stream.shutdown(Shutdown::Write).expect("shutdown");
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).expect("server FIN");
                (port, None)
            }
            Workload::HalfClose(n) => {
                stream.write_all(&vec![b'q'; n]).expect("send");
                stream.shutdown(Shutdown::Write).expect("half close");
                let mut back = Vec::new();
                stream
                    .read_to_end(&mut back)
                    .expect("reply after half close");
                assert_eq!(back.len(), n);
                (port, None)
            }
            Workload::Reset => {
                stream.write_all(b"bye").expect("send");
                thread::sleep(Duration::from_millis(50));
                reset(stream);
                (port, None)
            }
            Workload::Idle => {
                stream.write_all(b"idle").expect("send");
                (port, Some(stream))
            }
            Workload::ZeroWindow(n) => {
                stream.write_all(&vec![b'z'; n]).expect("send");
                let mut done = [0u8; 4];
                stream.read_exact(&mut done).expect("done");
                stream.shutdown(Shutdown::Write).expect("shutdown");
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).expect("server FIN");
                (port, None)
            }
        }
    })
}

/// Drops `LOSS_PERCENT` % of the data segments `ns` receives from `sport` or on `dport`.
fn induce_loss(ns: &Netns, rule: &str) {
    nft(
        ns,
        &format!(
            "table inet tcp_sniffer_loss {{\n chain input {{\n type filter hook input priority 0;\n \
             {rule} meta length > 200 numgen random mod 100 < {LOSS_PERCENT} drop\n }}\n}}\n"
        ),
    );
}

/// Loads an nftables `script` in `ns`. The input hook runs after the interface's packet taps:
/// what it drops, the sniffer and tcpdump still see.
pub fn nft(ns: &Netns, script: &str) {
    let out = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .expect("nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tcpdump writing a pcap of `interface` in `ns`, nanosecond timestamps; stopped on drop.
pub struct Pcap {
    child: Child,
    file: Option<ScratchFile>,
}

impl Pcap {
    /// Starts capturing what `filter` (a capture filter) matches; returns once tcpdump listens.
    pub fn start(ns: &Netns, interface: &str, filter: &str) -> Self {
        let file = ScratchFile::named(&format!("tcp-sniffer-conn-{}.pcap", ns.name));
        let mut child = ns
            .command("tcpdump")
            .args(["-i", interface, "-U", "-s", "128"])
            .args(["--time-stamp-precision", "nano", "-w"])
            .arg(&*file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let mut stderr = child.stderr.take().expect("stderr");
        let mut seen = Vec::new();
        let mut byte = [0u8];
        while !String::from_utf8_lossy(&seen).contains("listening on") {
            assert_eq!(
                stderr.read(&mut byte).expect("tcpdump stderr"),
                1,
                "tcpdump exited"
            );
            seen.push(byte[0]);
        }
        thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self {
            child,
            file: Some(file),
        }
    }

    /// Stops tcpdump; returns the pcap, removed when dropped.
    pub fn stop(mut self) -> ScratchFile {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        testbed::wait_within(&mut self.child, Duration::from_secs(10), "tcpdump");
        self.file.take().expect("stopped once")
    }
}

impl Drop for Pcap {
    /// A test that fails before `stop` leaves no tcpdump running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One packet as tshark sees it, and its analysis flags.
#[derive(Debug)]
struct Packet {
    stream: u64,
    /// Over IPv6 (else IPv4).
    ipv6: bool,
    src_port: u16,
    dst_port: u16,
    len: u64,
    time_ns: i128,
    syn: bool,
    ack: bool,
    retransmission: bool,
    lost_segment: bool,
    zero_window: bool,
    duplicate_ack: bool,
}

/// What tshark prints reading `pcap` with `args`.
pub fn tshark(pcap: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(args)
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark output")
}

/// The values of `fields`, one row per frame of `pcap` matching the display filter `filter`
/// (every frame when empty).
pub fn tshark_fields(pcap: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-T", "fields", "-E", "separator=,"];
    if !filter.is_empty() {
        args.extend(["-Y", filter]);
    }
    for field in fields {
        args.extend(["-e", field]);
    }
    tshark(pcap, &args)
        .lines()
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

/// The frames of a classic pcap file: its 24-byte file header, then each record whole (16-byte
/// record header and data).
fn pcap_frames(bytes: &[u8]) -> (&[u8], Vec<&[u8]>) {
    assert!(bytes.len() >= 24, "a pcap file header");
    let (header, mut rest) = bytes.split_at(24);
    assert_eq!(
        &header[..4],
        &0xa1b2_3c4d_u32.to_le_bytes(),
        "tcpdump's nanosecond pcap, in this machine's byte order"
    );
    let mut frames = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 16, "a whole record header");
        let captured = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let (frame, after) = rest.split_at(16 + captured);
        frames.push(frame);
        rest = after;
    }
    (header, frames)
}

/// `pcap` rewritten with its frames in the order of `records` (the sniffer's packet records),
/// and how many frames changed place. Each record is matched to a frame by its ports, sequence
/// and acknowledgment numbers and payload length, equal ones in turn; every record must find a
/// frame and every frame a record.
pub fn in_recorded_order(pcap: &Path, records: &[&Value]) -> (ScratchFile, usize) {
    // Ports, sequence and acknowledgment numbers, payload length.
    let mut frames_of: HashMap<[u64; 5], VecDeque<usize>> = HashMap::new();
    let fields = [
        "tcp.srcport",
        "tcp.dstport",
        "tcp.seq_raw",
        "tcp.ack_raw",
        "tcp.len",
    ];
    for (index, row) in tshark_fields(pcap, "", &fields).iter().enumerate() {
        let n = |i: usize| -> u64 { row[i].parse().unwrap_or_else(|_| panic!("{row:?}")) };
        frames_of
            .entry([0, 1, 2, 3, 4].map(n))
            .or_default()
            .push_back(index);
    }
    let order: Vec<usize> = records
        .iter()
        .map(|r| {
            let n = |name: &str| r[name].as_u64().unwrap_or_else(|| panic!("{name} in {r}"));
            let wanted = ["src_port", "dst_port", "seq", "ack", "payload_len"].map(n);
            frames_of
                .get_mut(&wanted)
                .and_then(VecDeque::pop_front)
                .unwrap_or_else(|| panic!("no frame in the pcap for the record {r}"))
        })
        .collect();
    let left: usize = frames_of.values().map(VecDeque::len).sum();
    assert_eq!(left, 0, "frames in the pcap the sniffer did not record");
    let bytes = std::fs::read(pcap).expect("read the pcap");
    let (header, frames) = pcap_frames(&bytes);
    assert_eq!(
        frames.len(),
        order.len(),
        "tshark's frames against the file's"
    );
    let file = ScratchFile::named(&format!(
        "{}-as-recorded.pcap",
        pcap.file_stem()
            .and_then(|s| s.to_str())
            .expect("a pcap name")
    ));
    let mut out = header.to_vec();
    for &index in &order {
        out.extend_from_slice(frames[index]);
    }
    std::fs::write(&file, out).expect("write the reordered pcap");
    let moved = order.iter().enumerate().filter(|(i, f)| i != *f).count();
    (file, moved)
}

/// Closes `stream` with `SO_LINGER` 0: the kernel sends a RST.
pub fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the stream's own descriptor.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// The frame numbers matching a display filter.
fn frames(pcap: &Path, filter: &str) -> HashSet<u64> {
    tshark(pcap, &["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .lines()
        .map(|l| l.trim().parse().expect("frame number"))
        .collect()
}

/// "1700000000.123456789" → nanoseconds.
pub fn epoch_ns(text: &str) -> i128 {
    let (seconds, fraction) = text.split_once('.').expect("epoch time");
    let fraction = format!("{fraction:0<9}");
    seconds.parse::<i128>().expect("seconds") * 1_000_000_000
        + fraction[..9].parse::<i128>().expect("nanoseconds")
}

fn dissect(pcap: &Path) -> Vec<Packet> {
    let retransmissions = frames(
        pcap,
        "tcp.len > 0 && (tcp.analysis.retransmission || tcp.analysis.fast_retransmission \
         || tcp.analysis.spurious_retransmission || tcp.analysis.out_of_order)",
    );
    let lost = frames(pcap, "tcp.len > 0 && tcp.analysis.lost_segment");
    let zero = frames(pcap, "tcp.analysis.zero_window");
    let dup = frames(pcap, "tcp.analysis.duplicate_ack");
    let fields = [
        "frame.number",
        "tcp.stream",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.len",
        "frame.time_epoch",
        "tcp.flags.syn",
        "tcp.flags.ack",
        "ipv6.src",
    ];
    let mut args = vec!["-T", "fields", "-E", "separator=,"];
    for field in &fields {
        args.extend(["-e", field]);
    }
    tshark(pcap, &args)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let number: u64 = f[0].parse().expect("frame");
            Packet {
                stream: f[1].parse().expect("stream"),
                src_port: f[2].parse().expect("sport"),
                dst_port: f[3].parse().expect("dport"),
                len: f[4].parse().expect("len"),
                time_ns: epoch_ns(f[5]),
                syn: f[6] == "1",
                ack: f[7] == "1",
                ipv6: !f[8].is_empty(),
                retransmission: retransmissions.contains(&number),
                lost_segment: lost.contains(&number),
                zero_window: zero.contains(&number),
                duplicate_ack: dup.contains(&number),
            }
        })
        .collect()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// "2026-11-28T10:00:00.123456789Z" → nanoseconds since the epoch.
pub fn rfc3339_ns(text: &str) -> i128 {
    let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().expect("number");
    let day = days(n(0..4), n(5..7), n(8..10));
    let seconds = day * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    i128::from(seconds) * 1_000_000_000 + i128::from(n(20..29))
}

/// What tshark says one side of a stream sent.
#[derive(Debug, Default, PartialEq, Eq)]
struct Side {
    packets: u64,
    bytes: u64,
    retransmits: u64,
    out_of_order: u64,
    zero_windows: u64,
    dup_acks: u64,
}

fn side(packets: &[&Packet], port: u16) -> Side {
    let from: Vec<&&Packet> = packets.iter().filter(|p| p.src_port == port).collect();
    let count = |f: fn(&Packet) -> bool| from.iter().filter(|p| f(p)).count() as u64;
    Side {
        packets: from.len() as u64,
        bytes: from.iter().map(|p| p.len).sum(),
        retransmits: count(|p| p.retransmission),
        out_of_order: count(|p| p.lost_segment),
        zero_windows: count(|p| p.zero_window),
        dup_acks: count(|p| p.duplicate_ack),
    }
}

fn recorded_side(record: &Value, prefix: &str) -> Side {
    let n = |name: &str| {
        record[format!("{prefix}_{name}")]
            .as_u64()
            .unwrap_or_else(|| panic!("{prefix}_{name} in {record}"))
    };
    Side {
        packets: n("packets"),
        bytes: n("bytes"),
        retransmits: n("retransmits"),
        out_of_order: n("out_of_order"),
        zero_windows: n("zero_windows"),
        dup_acks: n("dup_acks"),
    }
}

#[test]
fn connection_records_match_tshark_under_induced_loss() {
    testbed::skip_unless_root!();
    let topology = topology();
    servers(&topology.server);
    induce_loss(
        &topology.server,
        &format!("tcp dport {{ {PORT}, {SMALL_WINDOW_PORT} }}"),
    );
    induce_loss(
        &topology.client,
        &format!("tcp sport {{ {PORT}, {SMALL_WINDOW_PORT} }}"),
    );
    let pcap = Pcap::start(
        &topology.server,
        "eth0",
        &format!("tcp port {PORT} or tcp port {SMALL_WINDOW_PORT}"),
    );
    let mut sniffer = topology.server.command(SNIFFER);
    sniffer
        .env("PORTS", format!("{PORT},{SMALL_WINDOW_PORT}"))
        .env("INTERFACE", "eth0")
        .env("RECORDS", "both")
        .env("CONNECTION_IDLE_TIMEOUT_MS", IDLE_TIMEOUT_MS.to_string())
        .env("METRICS_ADDR", METRICS);
    let agent = Agent::attached(sniffer);

    let v4: SocketAddr = format!("{SERVER_V4}:{PORT}").parse().unwrap();
    let v6: SocketAddr = format!("[{SERVER_V6}]:{PORT}").parse().unwrap();
    let small: SocketAddr = format!("{SERVER_V4}:{SMALL_WINDOW_PORT}").parse().unwrap();
    let plan = [
        (v4, Workload::Idle),
        (v4, Workload::Echo(1_000)),
        (v4, Workload::Echo(3_000_000)),
        (v4, Workload::Reset),
        (v4, Workload::HalfClose(400_000)),
        (small, Workload::ZeroWindow(300_000)),
        (v6, Workload::Echo(1_000)),
        (v6, Workload::Echo(2_000_000)),
        // A second bulk transfer each way: the check below needs a duplicate ACK, which only
        // some losses bring (5 to 14 a run with the transfers above; a run once had none).
        (v4, Workload::Echo(3_000_000)),
    ];
    let mut expected = BTreeMap::new();
    let mut idle = Vec::new();
    for (server, workload) in plan {
        let (port, open) = run(&topology.client, server, workload);
        // An IPv4 and an IPv6 connection may get the same client port.
        expected.insert((server.is_ipv6(), port), (server, workload));
        idle.extend(open);
    }
    // Past the idle timeout, and the 1 s linger of the last closed connection, plus a sweep.
    thread::sleep(Duration::from_millis(IDLE_TIMEOUT_MS + 1_500));
    let pcap = pcap.stop();
    let metrics = http_get(&topology, METRICS.parse().unwrap(), "/metrics");
    let finished = agent.terminate();
    drop(idle);
    assert!(finished.status.success(), "{:?}", finished.status);

    let records = finished.records();
    let (connections, packet_records): (Vec<&Value>, Vec<&Value>) =
        records.iter().partition(|r| r["type"] == "connection");
    let (as_recorded, moved) = in_recorded_order(&pcap, &packet_records);
    println!("{moved} frames of the pcap were in another order than the sniffer's records");
    let dissected = dissect(&as_recorded);
    let stopped = finished.log("stopped");
    assert_eq!(stopped["connection_records"], connections.len() as u64);
    assert_eq!(
        stopped["delivered"],
        (records.len()) as u64,
        "stdout delivers packet and connection records: {stopped}"
    );

    let streams: BTreeMap<u64, Vec<&Packet>> =
        dissected.iter().fold(BTreeMap::new(), |mut map, p| {
            map.entry(p.stream).or_insert_with(Vec::new).push(p);
            map
        });
    assert_eq!(streams.len(), expected.len(), "tshark streams");
    assert_eq!(connections.len(), expected.len(), "{connections:#?}");
    let mut totals = Side::default();
    println!(
        "client port | workload | end | side | packets | bytes | retransmits | out of order | zero windows | dup acks | SYN→SYN-ACK ns (sniffer, pcap)"
    );
    for packets in streams.values() {
        let syn = packets
            .iter()
            .find(|p| p.syn && !p.ack)
            .expect("the handshake is in the capture");
        let synack = packets.iter().find(|p| p.syn && p.ack).expect("SYN-ACK");
        let (client, server) = (syn.src_port, syn.dst_port);
        let (_, workload) = expected[&(syn.ipv6, client)];
        let version = if syn.ipv6 { 6 } else { 4 };
        let record = connections
            .iter()
            .find(|r| r["client_port"] == client && r["ip_version"] == version)
            .unwrap_or_else(|| {
                panic!("no connection record for client port {client}, IPv{version}")
            });
        println!("{record}");
        assert_eq!(record["server_port"], server, "{record}");
        assert_eq!(record["handshake_seen"], true, "{record}");
        assert_eq!(record["state"], "closed", "{record}");
        assert_eq!(record["end_reason"], workload.end_reason(), "{record}");
        if matches!(workload, Workload::Reset) {
            assert_eq!(record["rst_by"], "client", "{record}");
        }
        for (name, port, prefix) in [("client", client, "client"), ("server", server, "server")] {
            let theirs = side(packets, port);
            let ours = recorded_side(record, prefix);
            assert_eq!(
                ours, theirs,
                "{name} of {workload:?} (client port {client}): {record}"
            );
            totals.retransmits += ours.retransmits;
            totals.zero_windows += ours.zero_windows;
            totals.dup_acks += ours.dup_acks;
            println!(
                "{client} | {workload:?} | {} | {name} | {} | {} | {} | {} | {} | {} | {}, {}",
                record["end_reason"],
                ours.packets,
                ours.bytes,
                ours.retransmits,
                ours.out_of_order,
                ours.zero_windows,
                ours.dup_acks,
                record["syn_to_synack_ns"],
                synack.time_ns - syn.time_ns
            );
        }
        // The handshake time is the difference of the same two packets' own records.
        let own = |flags: &str, from: u16, to: u16| -> i128 {
            let record = packet_record(&packet_records, (from, to), flags);
            rfc3339_ns(record["ts"].as_str().expect("ts"))
        };
        let recorded = i128::from(record["syn_to_synack_ns"].as_u64().expect("handshake"));
        let from_records = own("SYN,ACK", server, client) - own("SYN", client, server);
        assert!(
            (recorded - from_records).abs() <= 1_000,
            "SYN→SYN-ACK {recorded} ns, packet records say {from_records} ns"
        );
    }
    // The metrics count what the records say (every connection was reported before the scrape).
    for (name, value) in [
        (
            "tcp_sniffer_retransmitted_segments_total",
            totals.retransmits,
        ),
        (
            "tcp_sniffer_connections_opened_total",
            expected.len() as u64,
        ),
        (
            "tcp_sniffer_handshake_syn_to_synack_seconds_count",
            expected.len() as u64,
        ),
        (
            "tcp_sniffer_connections_closed_total{end_reason=\"timeout\"}",
            1,
        ),
        (
            "tcp_sniffer_connections_closed_total{end_reason=\"rst\"}",
            1,
        ),
        ("tcp_sniffer_connections_tracked", 0),
    ] {
        assert!(
            metrics.contains(&format!("\n{name} {value}\n")),
            "{name} {value} in {metrics}"
        );
    }
    assert!(
        totals.retransmits > 0,
        "the induced loss caused no retransmission"
    );
    assert!(totals.zero_windows > 0, "no zero window advertised");
    assert!(totals.dup_acks > 0, "no duplicate ACK");
}

/// The first packet record between these ports whose flags are exactly `flags` (comma-separated).
fn packet_record<'a>(records: &[&'a Value], (from, to): (u16, u16), flags: &str) -> &'a Value {
    let wanted: Vec<&str> = flags.split(',').collect();
    records
        .iter()
        .copied()
        .find(|r| {
            r["src_port"] == from
                && r["dst_port"] == to
                && r["flags"].as_array().is_some_and(|f| {
                    f.iter()
                        .map(|v| v.as_str().unwrap_or(""))
                        .eq(wanted.iter().copied())
                })
        })
        .unwrap_or_else(|| panic!("no {flags} packet record from {from}"))
}

/// The MAC address of `interface` in `ns`.
fn mac(ns: &Netns, interface: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j", "link", "show", interface])
        .output()
        .expect("ip link");
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    let text = links[0]["address"].as_str().expect("address");
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("six bytes")
}

/// Sends `count` SYNs from distinct (address, port) pairs in 10.1.0.0/16 to the server's port,
/// `per_burst` at a time with a pause between bursts. The server's answers have no route back,
/// so every one of them stays an open, silent connection for the tracker.
fn syn_flood(client: &Netns, server: &Netns, count: u32, per_burst: u32) {
    let (src_mac, dst_mac) = (mac(client, "eth0"), mac(server, "eth0"));
    client.run(move || {
        let socket = crate::dissector::open("eth0");
        let server_ip: std::net::Ipv4Addr = SERVER_V4.parse().unwrap();
        let mut frame = Vec::with_capacity(64);
        for i in 0..count {
            let host = i / 50_000;
            let port = u16::try_from(1024 + i % 50_000).unwrap();
            let builder = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(
                    [10, 1, u8::try_from(host).unwrap(), 1],
                    server_ip.octets(),
                    64,
                )
                .tcp(port, PORT, i, 64_240)
                .syn();
            frame.clear();
            builder.write(&mut frame, &[]).expect("build SYN");
            // SAFETY: send(2) of an initialised buffer on a bound packet socket.
            let sent =
                unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(
                sent,
                frame.len() as isize,
                "send: {}",
                std::io::Error::last_os_error()
            );
            if (i + 1) % per_burst == 0 {
                thread::sleep(Duration::from_millis(50));
            }
        }
    });
}

/// A memory figure of a process (`VmHWM` peak or `VmRSS` now), in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    testbed::memory_kib(pid, field).expect("memory figure")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .expect("integer sample")
}

#[test]
fn a_flood_of_connections_is_bounded_by_the_cap_and_every_eviction_counted() {
    testbed::skip_unless_root!();
    const SYNS: u32 = 200_000;
    const CAP: u64 = 50_000;
    let topology = topology();
    // Records go to /dev/null: the counts come from the metrics and the stopped line.
    let mut sniffer = topology.server.command("sh");
    sniffer
        .args(["-c", "exec \"$0\" > /dev/null", SNIFFER])
        .env("PORTS", PORT.to_string())
        .env("INTERFACE", "eth0")
        .env("RECORDS", "connections")
        .env("CONNECTION_MAX", CAP.to_string())
        .env("METRICS_ADDR", METRICS);
    let agent = Agent::attached(sniffer);
    let before = memory_kib(agent.pid(), "VmRSS");
    syn_flood(&topology.client, &topology.server, SYNS, 10_000);
    // Until the reader has taken every SYN off the ring (or counted it lost): a loaded machine
    // may take a while, and the kernel's loss counter is read once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        thread::sleep(Duration::from_millis(500));
        let metrics = http_get(&topology, METRICS.parse().unwrap(), "/metrics");
        let seen = metric(&metrics, "tcp_sniffer_connections_opened_total")
            + metric(
                &metrics,
                "tcp_sniffer_records_dropped_total{reason=\"ring_full\"}",
            );
        if seen >= u64::from(SYNS) || std::time::Instant::now() > deadline {
            break metrics;
        }
    };
    let (after, peak) = (
        memory_kib(agent.pid(), "VmRSS"),
        memory_kib(agent.pid(), "VmHWM"),
    );
    let finished = agent.terminate();
    assert!(finished.status.success(), "{:?}", finished.status);

    let opened = metric(&metrics, "tcp_sniffer_connections_opened_total");
    let evicted = metric(
        &metrics,
        "tcp_sniffer_connections_closed_total{end_reason=\"evicted\"}",
    );
    let ring_lost = metric(
        &metrics,
        "tcp_sniffer_records_dropped_total{reason=\"ring_full\"}",
    );
    assert_eq!(
        opened + ring_lost,
        u64::from(SYNS),
        "every SYN opened a connection or was counted as lost in the ring"
    );
    assert_eq!(metric(&metrics, "tcp_sniffer_connections_tracked"), CAP);
    assert_eq!(
        evicted,
        opened - CAP,
        "everything beyond the cap was evicted"
    );
    let stopped = finished.log("stopped");
    assert_eq!(
        stopped["connection_records"], opened,
        "evicted ones, then the rest at shutdown: {stopped}"
    );
    assert_eq!(stopped["delivered"], opened, "{stopped}");
    let steady = after.saturating_sub(before) * 1024 / CAP;
    let at_peak = peak.saturating_sub(before) * 1024 / CAP;
    println!(
        "{SYNS} SYNs, cap {CAP}: opened {opened}, evicted {evicted}, ring losses {ring_lost}; \
         RSS {before} KiB attached, {after} KiB with the table full (peak {peak} KiB): \
         {steady} bytes per tracked connection ({at_peak} at the peak, while the table grows)"
    );
    // The table's vectors double when they grow; the figures also hold what evicted
    // connections' records cost on their way out (this is the debug build).
    assert!(
        steady <= 1_024 && at_peak <= 1_536,
        "{steady} bytes per tracked connection, {at_peak} at the peak"
    );
}
