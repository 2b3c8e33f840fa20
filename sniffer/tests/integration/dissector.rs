//! An independent view of the same interface: a plain `AF_PACKET` socket (no BPF) that keeps
//! every frame, decoded with `etherparse` rather than the sniffer's own parser.

use std::{
    mem::{size_of, zeroed},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use serde_json::{Value, json};

use crate::netns::Netns;

/// A frame as the kernel handed it to the packet socket.
pub struct Frame {
    /// `PACKET_OUTGOING`: sent by the host.
    pub outgoing: bool,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its full length (`skb->len`), even if `bytes` were cut.
    pub len: usize,
}

/// Frames being captured on a background thread until [`RawCapture::stop`].
pub struct RawCapture {
    stop: Arc<AtomicBool>,
    reader: JoinHandle<Vec<Frame>>,
}

impl RawCapture {
    /// Starts capturing every frame on `interface` inside `ns`.
    pub fn start(ns: &Netns, interface: &'static str) -> Self {
        let fd = ns.run(move || open(interface));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reader = thread::spawn(move || {
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                // Once stopped, take what is still queued without waiting, then finish.
                let stopping = flag.load(Ordering::Relaxed);
                let flags = if stopping {
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT
                } else {
                    libc::MSG_TRUNC
                };
                // SAFETY: all-zero is a valid `sockaddr_ll`.
                let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
                let mut addr_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` and `addr` are writable for the lengths given.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        flags,
                        (&raw mut addr).cast(),
                        &mut addr_len,
                    )
                };
                if n < 0 {
                    if stopping {
                        break;
                    }
                    continue; // SO_RCVTIMEO expired: look at the stop flag again.
                }
                let len = n as usize;
                frames.push(Frame {
                    outgoing: addr.sll_pkttype == libc::PACKET_OUTGOING,
                    bytes: buf[..len.min(buf.len())].to_vec(),
                    len,
                });
            }
            assert_eq!(
                dropped(&fd),
                0,
                "the reference capture itself dropped packets"
            );
            frames
        });
        Self { stop, reader }
    }

    /// Stops and returns every frame seen.
    pub fn stop(self) -> Vec<Frame> {
        self.stop.store(true, Ordering::Relaxed);
        self.reader.join().expect("capture thread")
    }
}

/// Packets the kernel dropped on this socket since the last call (`PACKET_STATISTICS`).
fn dropped(fd: &OwnedFd) -> u32 {
    const PACKET_STATISTICS: libc::c_int = 6;
    #[repr(C)]
    #[derive(Default)]
    struct TpacketStats {
        packets: u32,
        drops: u32,
    }
    let mut stats = TpacketStats::default();
    let mut len = size_of::<TpacketStats>() as libc::socklen_t;
    // SAFETY: `stats` is writable for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "PACKET_STATISTICS: {}",
        std::io::Error::last_os_error()
    );
    stats.drops
}

/// A raw `AF_PACKET` socket bound to `interface` (of the calling thread's namespace).
pub fn open(interface: &str) -> OwnedFd {
    let protocol = i32::from((libc::ETH_P_ALL as u16).to_be());
    // SAFETY: plain system calls; every result is checked.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        );
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let name = std::ffi::CString::new(interface).unwrap();
        let mut addr: libc::sockaddr_ll = zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        assert!(addr.sll_ifindex > 0, "no interface {interface}");
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        let rc = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVTIMEO");
        // Room for a whole flood (about 400,000 small frames) while the reader thread waits for a
        // CPU: the tests run in parallel on two cores.
        let size: i32 = 256 << 20;
        let rc = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<i32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUFFORCE");
        fd
    }
}

/// The record the contract says the sniffer must emit for this frame (without `ts`), or `None`
/// when the frame is not TCP.
pub fn expected_record(frame: &Frame) -> Option<Value> {
    let packet = SlicedPacket::from_ethernet(&frame.bytes).ok()?;
    let (ip_version, src_ip, dst_ip) = match packet.net? {
        NetSlice::Ipv4(v4) => {
            if v4.header().fragments_offset().value() != 0 {
                return None;
            }
            let h = v4.header();
            (
                4,
                h.source_addr().to_string(),
                h.destination_addr().to_string(),
            )
        }
        NetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                6,
                h.source_addr().to_string(),
                h.destination_addr().to_string(),
            )
        }
        NetSlice::Arp(_) => return None,
    };
    let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
        return None;
    };
    let flags: Vec<&str> = [
        (tcp.fin(), "FIN"),
        (tcp.syn(), "SYN"),
        (tcp.rst(), "RST"),
        (tcp.psh(), "PSH"),
        (tcp.ack(), "ACK"),
        (tcp.urg(), "URG"),
        (tcp.ece(), "ECE"),
        (tcp.cwr(), "CWR"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    Some(json!({
        "direction": if frame.outgoing { "egress" } else { "ingress" },
        "ip_version": ip_version,
        "src_ip": src_ip,
        "src_port": tcp.source_port(),
        "dst_ip": dst_ip,
        "dst_port": tcp.destination_port(),
        "flags": flags,
        "seq": tcp.sequence_number(),
        "ack": tcp.acknowledgment_number(),
        "window": tcp.window_size(),
        "payload_len": tcp.payload().len(),
        "len": frame.len,
    }))
}
