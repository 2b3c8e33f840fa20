//! Packet captures for Wireshark (`CAPTURE_LISTEN`), read by tshark and compared with tcpdump's
//! pcap of the same interface and port: the same packets, every header field tshark decodes
//! equal, no payload byte, timestamps those of the records.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::Path,
    process::{Child, Command, Stdio},
    thread::{self, JoinHandle},
    time::Duration,
};

use testbed::paths::ScratchFile;

use crate::{
    agent::{Agent, SNIFFER},
    connections::{Pcap, epoch_ns, rfc3339_ns, tshark_fields},
    dissector,
    netns::{Netns, SERVER_V4, SERVER_V6, Topology, topology},
};

/// The port captured.
const PORT: u16 = 8070;
/// The capture endpoint, on the server namespace's loopback.
const ENDPOINT: &str = "127.0.0.1:9465";
/// Bytes no capture may contain: the payload, which stays in the kernel by default.
const SECRET: &[u8] = b"PAYLOAD-NEVER-LEAVES-THE-KERNEL";
/// Connections per address family.
const CONNECTIONS: usize = 3;

/// The header fields compared, per frame: everything tshark decodes from the Ethernet, IP and
/// TCP headers, and the frame's length on the wire.
const FIELDS: &[&str] = &[
    "frame.len",
    "eth.src",
    "eth.dst",
    "eth.type",
    "ip.src",
    "ip.dst",
    "ip.hdr_len",
    "ip.dsfield",
    "ip.len",
    "ip.id",
    "ip.flags",
    "ip.ttl",
    "ip.checksum",
    "ip.opt.type",
    "ip.opt.len",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.flow",
    "ipv6.plen",
    "ipv6.hlim",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.hdr_len",
    "tcp.flags",
    "tcp.window_size_value",
    "tcp.checksum",
    "tcp.urgent_pointer",
    "tcp.options",
    "tcp.len",
];

/// The sniffer on the server's `eth0` for [`PORT`], with extra variables; attached.
fn start(topology: &Topology, extra: &[(&str, &str)]) -> Agent {
    let mut sniffer = topology.server.command(SNIFFER);
    sniffer
        .env("PORTS", PORT.to_string())
        .env("INTERFACE", "eth0");
    for (key, value) in extra {
        sniffer.env(key, value);
    }
    let mut agent = Agent::attached(sniffer);
    agent.wait_for_log("packet capture endpoint listening", Duration::from_secs(5));
    agent
}

/// `curl` in `ns` saving `GET target` from the capture endpoint to a file.
struct Download {
    child: Child,
    file: ScratchFile,
}

impl Download {
    fn start(ns: &Netns, target: &str, name: &str) -> Self {
        let file = ScratchFile::named(&format!("tcp-sniffer-{name}-{}.pcapng", ns.name));
        let child = ns
            .command("curl")
            // A deadline, so that a capture that never ends fails the test instead of hanging it.
            .args(["-sSN", "--fail-with-body", "--max-time", "30", "-o"])
            .arg(&*file)
            .arg(format!("http://{ENDPOINT}{target}"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl");
        Self { child, file }
    }

    /// Waits for curl; returns the file, removed when dropped.
    fn finish(self) -> ScratchFile {
        let out = self.child.wait_with_output().expect("curl");
        assert!(
            out.status.success(),
            "curl: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.file).unwrap_or_default()
        );
        self.file
    }
}

/// A client socket with IPv4 options (Record Route, 8 bytes), so that every packet of its
/// connection carries a 28-byte IP header.
fn connect_with_ip_options(server: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it over.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let options: [u8; 8] = [7, 7, 4, 0, 0, 0, 0, 1];
        let rc = libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            options.as_ptr().cast(),
            options.len() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let SocketAddr::V4(v4) = server else {
            panic!("IPv4 only")
        };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Sends [`SECRET`] many times, half-closes, reads the answer to the end.
fn exchange(mut stream: TcpStream) {
    stream.write_all(&SECRET.repeat(200)).expect("send");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    assert_eq!(reply.len(), SECRET.len() * 100);
}

/// Accepts `count` connections; for each reads to the end and answers with [`SECRET`].
fn serve(listener: TcpListener, count: usize) -> JoinHandle<()> {
    thread::spawn(move || {
        for _ in 0..count {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            stream.read_to_end(&mut request).expect("read request");
            stream.write_all(&SECRET.repeat(100)).expect("reply");
        }
    })
}

/// IPv4 connections with IP options and IPv6 connections to [`PORT`] on the server.
fn traffic(topology: &Topology) {
    let v4: SocketAddr = format!("{SERVER_V4}:{PORT}").parse().unwrap();
    let v6: SocketAddr = format!("[{SERVER_V6}]:{PORT}").parse().unwrap();
    let listeners = topology
        .server
        .run(move || [v4, v6].map(|addr| TcpListener::bind(addr).expect("bind")));
    let servers = listeners.map(|listener| serve(listener, CONNECTIONS));
    topology.client.run(move || {
        for _ in 0..CONNECTIONS {
            exchange(connect_with_ip_options(v4));
            exchange(TcpStream::connect_timeout(&v6, Duration::from_secs(5)).expect("connect"));
        }
    });
    for server in servers {
        server.join().expect("server");
    }
    // The last ACKs are on the wire once both ends have closed; give them a moment.
    thread::sleep(Duration::from_millis(300));
}

/// Every frame's [`FIELDS`], in order.
fn headers(pcap: &Path) -> Vec<Vec<String>> {
    tshark_fields(pcap, "tcp", FIELDS)
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_capture_is_tcpdump_s_packets_cut_after_their_headers() {
    testbed::skip_unless_root!();
    let topology = topology();
    let tcpdump = Pcap::start(&topology.server, "eth0", &format!("tcp port {PORT}"));
    let mut agent = start(&topology, &[("CAPTURE_RECORDER_BYTES", "1000000")]);
    let download = Download::start(&topology.server, "/capture?seconds=4", "live");
    agent.wait_for_log("packet capture started", Duration::from_secs(5));

    traffic(&topology);
    let capture = download.finish();
    let recent = Download::start(&topology.server, "/capture/recent", "recent").finish();
    let expected = tcpdump.stop();
    let finished = agent.terminate();
    assert!(finished.status.success(), "{:#?}", finished.logs);
    // The records' accounting stays exact while a capture and the recorder run.
    let stopped = finished.log("stopped");
    assert_eq!(stopped["dropped"], 0, "{stopped}");
    assert_eq!(stopped["delivered"], stopped["matched"], "{stopped}");
    assert_eq!(
        stopped["records"].as_u64().unwrap() as usize,
        finished.records().len()
    );

    let theirs = headers(&expected);
    let ours = headers(&capture);
    assert!(
        theirs.len() >= CONNECTIONS * 2 * 8,
        "tcpdump saw {} packets",
        theirs.len()
    );
    assert_eq!(ours.len(), theirs.len(), "packets: ours vs tcpdump's");
    assert_eq!(finished.records().len(), ours.len(), "records vs captured");
    // Two taps may order packets that both CPUs deliver at once differently (see
    // connections.rs): the same packets, each the same, are compared in one order.
    let moved = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
    println!("{moved} frames in another place than in tcpdump's pcap");
    let sorted = |rows: &[Vec<String>]| {
        let mut rows = rows.to_vec();
        rows.sort();
        rows
    };
    for (n, (a, b)) in sorted(&ours).iter().zip(&sorted(&theirs)).enumerate() {
        let fields: BTreeMap<_, _> = FIELDS.iter().zip(a.iter().zip(b)).collect();
        for (field, (a, b)) in &fields {
            assert_eq!(a, b, "frame {} of the sorted frames: {field}", n + 1);
        }
    }
    let with_options = tshark_fields(&capture, "ip.hdr_len == 28", &["frame.number"]).len();
    assert!(
        with_options >= CONNECTIONS * 6,
        "IPv4 packets with IP options: {with_options}"
    );
    let ipv6 = tshark_fields(&capture, "ipv6 && tcp", &["frame.number"]).len();
    assert!(ipv6 >= CONNECTIONS * 6, "IPv6 packets: {ipv6}");

    // Headers only: each frame cut at the end of its TCP header; no payload byte.
    let bytes = std::fs::read(&capture).expect("capture");
    assert!(contains(
        &std::fs::read(&expected).expect("pcap"),
        &SECRET[..16]
    ));
    assert!(!contains(&bytes, &SECRET[..8]), "payload in the capture");
    for row in tshark_fields(
        &capture,
        "tcp",
        &[
            "frame.cap_len",
            "eth.len",
            "ip.hdr_len",
            "ipv6.plen",
            "tcp.hdr_len",
        ],
    ) {
        let number = |i: usize| row[i].parse::<u64>().unwrap_or(0);
        let ip = if row[2].is_empty() { 40 } else { number(2) };
        assert_eq!(number(0), 14 + ip + number(4), "{row:?}");
    }

    // The file: pcapng, nanoseconds, the interface and the pod named, the statistics at the end.
    let info = Command::new("capinfos")
        .arg(&*capture)
        .output()
        .expect("capinfos");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("pcapng"), "{info}");
    assert!(info.contains("nanoseconds (9)"), "{info}");
    assert!(info.contains("Name = eth0"), "{info}");
    assert!(info.contains("Capture application: tcp-sniffer"), "{info}");
    let (kind, isb) = last_block(&bytes);
    assert_eq!(kind, 5, "the last block is the Interface Statistics Block");
    let options = options(&isb[12..]);
    let count = |code: u16| u64::from_ne_bytes(options[&code][..8].try_into().unwrap());
    assert_eq!(
        (count(4), count(5)),
        (ours.len() as u64, 0),
        "isb_ifrecv, isb_ifdrop"
    );

    // Timestamps: those of the packet records, to the microsecond.
    let records = finished.records();
    // Keyed by what tells a flow's packets apart; a key's packets in order.
    let mut record_times: BTreeMap<[u64; 4], VecDeque<i128>> = BTreeMap::new();
    for record in &records {
        let key = ["src_port", "seq", "ack", "payload_len"].map(|f| record[f].as_u64().unwrap());
        record_times
            .entry(key)
            .or_default()
            .push_back(rfc3339_ns(record["ts"].as_str().unwrap()));
    }
    let mut compared = 0;
    for row in tshark_fields(
        &capture,
        "tcp",
        &[
            "frame.time_epoch",
            "tcp.srcport",
            "tcp.seq_raw",
            "tcp.ack_raw",
            "tcp.len",
        ],
    ) {
        let key = [1, 2, 3, 4].map(|i| row[i].parse().unwrap());
        let ts = record_times
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("no record for {row:?}"));
        let off = (epoch_ns(&row[0]) - ts).abs();
        assert!(off <= 5_000, "{row:?}: {off} ns from its record");
        compared += 1;
    }
    assert_eq!(compared, ours.len());

    // The flight recorder ends with the last packets tcpdump saw.
    let recorded = headers(&recent);
    assert!(recorded.len() >= ours.len(), "recorder: {}", recorded.len());
    assert_eq!(
        recorded[recorded.len() - 10..],
        theirs[theirs.len() - 10..],
        "the recorder's last packets"
    );
    let recorder_bytes = std::fs::read(&recent).expect("recent");
    assert!(
        !contains(&recorder_bytes, &SECRET[..8]),
        "payload in the recorder"
    );
}

/// The type and body of the last block of a pcapng.
fn last_block(bytes: &[u8]) -> (u32, Vec<u8>) {
    let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    let len = u32_at(bytes.len() - 4) as usize;
    let start = bytes.len() - len;
    (u32_at(start), bytes[start + 8..bytes.len() - 4].to_vec())
}

/// A pcapng block's options by code.
fn options(mut bytes: &[u8]) -> BTreeMap<u16, Vec<u8>> {
    let mut found = BTreeMap::new();
    while bytes.len() >= 4 {
        let code = u16::from_ne_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_ne_bytes([bytes[2], bytes[3]]));
        if code == 0 {
            break;
        }
        found.insert(code, bytes[4..4 + len].to_vec());
        bytes = &bytes[4 + len.next_multiple_of(4)..];
    }
    found
}

/// The status line and body of `GET target` on the capture endpoint, from inside `ns`.
fn get(ns: &Netns, addr: &'static str, target: &'static str) -> std::io::Result<String> {
    ns.run(move || {
        let mut stream =
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
        write!(stream, "GET {target} HTTP/1.1\r\nHost: capture\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
}

#[test]
fn refusals_name_the_problem_and_the_endpoint_is_loopback_only() {
    testbed::skip_unless_root!();
    let topology = topology();
    let mut agent = start(&topology, &[("CAPTURE_MAX_SECONDS", "60")]);
    for (target, status, says) in [
        ("/capture?snaplen=1500", "400", "snaplen is not allowed"),
        ("/capture?seconds=61", "400", "seconds=61 is out of range"),
        ("/capture?seconds=ten", "400", "seconds=\"ten\""),
        ("/capture?ports=9", "400", "ports: 9 is not captured"),
        ("/capture?verbose=1", "400", "unknown parameter \"verbose\""),
        ("/capture/recent", "404", "CAPTURE_RECORDER_BYTES"),
        ("/pcap", "404", "not found"),
    ] {
        let response = get(&topology.server, ENDPOINT, target).expect("response");
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")) && response.contains(says),
            "{target}: {response}"
        );
    }

    // One capture at a time: the second is told when to come back.
    let first = Download::start(&topology.server, "/capture?seconds=3", "first");
    agent.wait_for_log("packet capture started", Duration::from_secs(5));
    let busy = get(&topology.server, ENDPOINT, "/capture").expect("response");
    assert!(busy.starts_with("HTTP/1.1 429 "), "{busy}");
    let retry_after: u64 = busy
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .expect("seconds");
    assert!((1..=4).contains(&retry_after), "{busy}");
    first.finish();

    // Nothing outside the pod reaches it: not on the pod's address, not from the other host.
    let own = format!("{SERVER_V4}:9465").leak();
    assert!(get(&topology.server, own, "/capture").is_err());
    assert!(get(&topology.client, own, "/capture").is_err());

    let finished = agent.terminate();
    assert!(finished.status.success(), "{:#?}", finished.logs);
}

/// An 802.1Q-tagged TCP segment (VLAN 100, priority 3) from the client to the server's [`PORT`],
/// with TCP options (NOP, NOP, timestamps) and [`SECRET`] as its payload. This kernel has no VLAN
/// devices (`CONFIG_VLAN_8021Q` is off), so the tagged frames are written on the link as a trunk
/// carries them; the receiving kernel moves the tag into the packet's metadata (as for every
/// tagged frame), the stack then drops them, and every packet tap sees them.
fn tagged_frame(seq: u32) -> Vec<u8> {
    let payload = SECRET;
    let tcp_len = 32;
    let ip_len = 20 + tcp_len + payload.len();
    let mut frame = Vec::with_capacity(18 + ip_len);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&0x8100u16.to_be_bytes());
    frame.extend_from_slice(&((3u16 << 13) | 100).to_be_bytes());
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = frame.len();
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&u16::try_from(ip_len).unwrap().to_be_bytes());
    frame.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    frame.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    let sum = frame[ip_start..ip_start + 20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap();
    frame[ip_start + 10..ip_start + 12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&40_000u16.to_be_bytes());
    frame.extend_from_slice(&PORT.to_be_bytes());
    frame.extend_from_slice(&(1_000 + seq * 1_000).to_be_bytes());
    frame.extend_from_slice(&77u32.to_be_bytes());
    frame.extend_from_slice(&[0x80, 0x18, 0x01, 0xf5, 0, 0, 0, 0]);
    frame.extend_from_slice(&[1, 1, 8, 10]);
    frame.extend_from_slice(&(5_000 + seq).to_be_bytes());
    frame.extend_from_slice(&9u32.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn vlan_tagged_frames_keep_their_tag() {
    testbed::skip_unless_root!();
    let topology = topology();
    let tcpdump = Pcap::start(
        &topology.server,
        "eth0",
        &format!("vlan and tcp port {PORT}"),
    );
    let mut agent = start(&topology, &[]);
    let download = Download::start(&topology.server, "/capture?seconds=2", "vlan");
    agent.wait_for_log("packet capture started", Duration::from_secs(5));
    topology.client.run(|| {
        let socket = dissector::open("eth0");
        for seq in 0..5 {
            let frame = tagged_frame(seq);
            // SAFETY: send(2) of a buffer this closure owns on a socket bound to eth0.
            let sent =
                unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(
                sent,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
    });
    let capture = download.finish();
    thread::sleep(Duration::from_millis(100));
    let expected = tcpdump.stop();
    let finished = agent.terminate();
    assert!(finished.status.success(), "{:#?}", finished.logs);
    assert_eq!(finished.records().len(), 5, "records of the tagged frames");

    let fields: Vec<&str> = FIELDS
        .iter()
        .copied()
        .chain(["vlan.id", "vlan.priority", "vlan.etype"])
        .collect();
    let ours = tshark_fields(&capture, "tcp", &fields);
    let theirs = tshark_fields(&expected, "tcp", &fields);
    assert_eq!(ours.len(), 5, "{ours:?}");
    assert_eq!(ours, theirs);
    assert!(
        ours.iter().all(|row| row[row.len() - 3] == "100"),
        "{ours:?}"
    );
    let cut = tshark_fields(&capture, "tcp", &["frame.cap_len"]);
    assert!(
        cut.iter().all(|row| row[0] == "70"),
        "cut after the TCP header: {cut:?}"
    );
    let bytes = std::fs::read(&capture).expect("capture");
    assert!(!contains(&bytes, &SECRET[..8]), "payload in the capture");
}
