//! Types shared by the tcp-sniffer kernel program and its userspace loader.
//!
//! Everything here is `#![no_std]` so the kernel program (built for `bpfel-unknown-none`) and the
//! loader agree on one memory layout. With the `user` feature [`PacketRecord`] implements [`aya::Pod`],
//! so the loader can read it from the ring buffer.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
pub mod bitmap;
pub mod parse;

/// Name of the socket filter program in the kernel object.
pub const PROGRAM_NAME: &str = "tcp_sniffer";
/// Name of the array of [`PORT_BITMAP_WORDS`] `u64` words holding the ports to capture as a
/// bitmap (see [`port_bit`]).
pub const PORTS_MAP: &str = "PORTS";
/// Name of the ring buffer carrying one [`PacketRecord`] per matched packet.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of `u64` counters indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the ring buffer carrying the first bytes of matched packets while a packet capture
/// asks for them: a [`CapturedHeader`] then the bytes, per packet.
pub const PACKETS_MAP: &str = "PACKETS";
/// Name of the array of two `u32` telling the program what to copy into `PACKETS`, indexed by
/// [`CaptureControl`]; all zero (the default) copies nothing.
pub const CAPTURE_MAP: &str = "CAPTURE";
/// Name of the per-CPU array (one [`CaptureBuffer`]) the program assembles a packet's bytes in.
pub const SCRATCH_MAP: &str = "SCRATCH";
/// Name of the global (`u8`, a [`LinkLayer`] value) telling the program what precedes the IP header.
pub const LINK_LAYER_GLOBAL: &str = "LINK_LAYER";
/// Name of the global (`u64`, a power of two) setting how much unread data wakes userspace.
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";

/// Entries of the `PORTS` array: one bit for each of the 65,536 port numbers.
///
/// A bitmap in an array rather than a hash set because the kernel inlines array lookups into
/// the program: with a hash map, the two lookups per packet were about 15 % of the filter's time.
pub const PORT_BITMAP_WORDS: u32 = 1024;

/// Index of the `PORTS` word holding `port`, and the mask of its bit in that word.
///
/// # Examples
///
/// ```
/// assert_eq!(sniffer_common::port_bit(8080), (126, 1 << 16));
/// ```
#[inline(always)]
#[must_use]
pub const fn port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1 << (port & 63))
}
/// Ring buffer size compiled into the object, and the loader's default (`RING_BUFFER_BYTES`; a
/// power of two and a page multiple): 52,428 records of 80 bytes, 0.15 s at 350,000 packets/s.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
/// Unread bytes per wakeup compiled into the object: a sixteenth of [`DEFAULT_RING_BYTES`], as
/// the loader's default is of the ring it makes (about 3,300 records).
pub const DEFAULT_WAKEUP_BYTES: u64 = DEFAULT_RING_BYTES as u64 / 16;

/// Counters the kernel program keeps in the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// TCP packets whose source or destination port is in `PORTS`.
    Matched = 0,
    /// Matched packets lost because the ring buffer had no room for their record.
    RingFull = 1,
    /// Packets copied for a packet capture.
    Captured = 2,
    /// Packets a packet capture asked for and lost because `PACKETS` had no room.
    CaptureRingFull = 3,
}

impl Counter {
    /// Number of counters, i.e. the `max_entries` of `COUNTERS`.
    pub const COUNT: u32 = 4;
}

/// The entries of `CAPTURE`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureControl {
    /// Non-zero: copy each matched packet up to the end of its TCP header.
    Headers = 0,
    /// Non-zero: copy each matched packet's first this many bytes (at most
    /// [`CAPTURE_MAX_BYTES`]), or up to the end of its TCP header if that is further and
    /// `Headers` is set.
    Snaplen = 1,
}

impl CaptureControl {
    /// Number of entries, i.e. the `max_entries` of `CAPTURE`.
    pub const COUNT: u32 = 2;
}

/// The most bytes of one packet a capture copies (a power of two: the kernel program bounds
/// lengths with it).
pub const CAPTURE_MAX_BYTES: u32 = 4096;
const _: () = assert!(CAPTURE_MAX_BYTES.is_power_of_two());
/// `PACKETS` size compiled into the object, and the loader's default when captures are on.
pub const DEFAULT_PACKETS_RING_BYTES: u32 = 1 << 20;

/// What precedes a packet's bytes in `PACKETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapturedHeader {
    /// `bpf_ktime_get_ns()` at capture, the same value as the packet's [`PacketRecord::ts_ns`].
    pub ts_ns: u64,
    /// The packet's length on the interface (without a VLAN tag held in metadata).
    pub len: u32,
    /// Bytes copied after this header (at most [`CAPTURE_MAX_BYTES`]).
    pub captured: u16,
    /// See [`PacketRecord::headers_len`].
    pub headers_len: u16,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// The VLAN tag the kernel took off the frame into the packet's metadata (`skb->vlan_tci`),
    /// when `vlan_proto` is not 0; the bytes copied are then untagged, as the kernel holds them.
    pub vlan_tci: u16,
    /// The tag's protocol as it goes on the wire (`skb->vlan_proto`, network byte order:
    /// `0x8100` for 802.1Q, `0x88a8` for 802.1ad); 0 when the packet has no such tag.
    pub vlan_proto: u16,
}

/// Bytes of a [`CapturedHeader`].
pub const CAPTURED_HEADER_SIZE: usize = core::mem::size_of::<CapturedHeader>();
const _: () = assert!(CAPTURED_HEADER_SIZE == 24);

/// The per-CPU scratch space where the program assembles one `PACKETS` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureBuffer {
    /// The entry's header.
    pub header: CapturedHeader,
    /// The packet's first bytes.
    pub data: [u8; CAPTURE_MAX_BYTES as usize],
}

/// `pkt_type` the kernel reports for a packet addressed to this host (`PACKET_HOST`).
pub const PACKET_HOST: u32 = 0;
/// `pkt_type` the kernel reports for a packet sent by this host (`PACKET_OUTGOING`).
pub const PACKET_OUTGOING: u32 = 4;

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// What the interface puts in front of the IP header, as seen by an `AF_PACKET`/`SOCK_RAW` socket.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLayer {
    /// An Ethernet header (veth, physical NICs and loopback), optionally with 802.1Q/802.1ad tags.
    Ethernet = 0,
    /// Nothing: the packet starts with the IP header (tun devices, WireGuard).
    RawIp = 1,
}

impl LinkLayer {
    /// Decodes the value stored in the `LINK_LAYER` global; unknown values mean Ethernet.
    #[inline(always)]
    pub const fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::RawIp,
            _ => Self::Ethernet,
        }
    }
}

/// Metadata of one matched TCP packet, as written by the kernel into the ring buffer.
///
/// All numbers are in host byte order except addresses: each address is 16 bytes in network order,
/// held as four `u32` words so every field is naturally aligned (the verifier refuses the byte-wise
/// copies unaligned fields compile to, unless the loader has `CAP_PERFMON`). An IPv4 address
/// occupies the first four bytes and the rest is zero. [`PacketRecord::src_addr_bytes`] and
/// [`PacketRecord::dst_addr_bytes`] give the bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketRecord {
    /// `bpf_ktime_get_ns()` at capture: nanoseconds of `CLOCK_MONOTONIC`.
    pub ts_ns: u64,
    /// Source address bytes in network order, as four native-endian words.
    pub src_addr: [u32; 4],
    /// Destination address bytes in network order, as four native-endian words.
    pub dst_addr: [u32; 4],
    /// Raw TCP sequence number.
    pub seq: u32,
    /// Raw TCP acknowledgment number.
    pub ack: u32,
    /// Packet length as seen on the interface (`skb->len`, link header included).
    pub len: u32,
    /// TCP payload bytes: IP total length − IP header(s) − TCP header.
    pub payload_len: u32,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// Raw TCP window field.
    pub window: u16,
    /// TCP flags byte (see [`tcp_flags`]).
    pub tcp_flags: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// The kernel's packet type (`PACKET_HOST`, `PACKET_OUTGOING`, …).
    pub pkt_type: u32,
    /// Bytes from the start of the frame to the end of the TCP header, options included: what
    /// a headers-only packet capture keeps.
    pub headers_len: u32,
}

impl PacketRecord {
    /// The source address as 16 bytes in network order.
    #[must_use]
    pub fn src_addr_bytes(&self) -> [u8; 16] {
        words_to_bytes(self.src_addr)
    }

    /// The destination address as 16 bytes in network order.
    #[must_use]
    pub fn dst_addr_bytes(&self) -> [u8; 16] {
        words_to_bytes(self.dst_addr)
    }
}

/// Packs 16 address bytes (network order) into the record's word representation.
#[inline(always)]
#[must_use]
pub fn addr_words(bytes: [u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

fn words_to_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    bytes
}

/// Size of one record in the ring buffer.
pub const RECORD_SIZE: usize = core::mem::size_of::<PacketRecord>();
const _: () = assert!(RECORD_SIZE == 72);
/// Bytes one record occupies in the ring: the kernel's 8-byte header, then the record.
pub const RING_ENTRY_BYTES: u64 = 8 + RECORD_SIZE as u64;
const _: () = assert!(RECORD_SIZE.is_multiple_of(8));

#[cfg(feature = "user")]
// SAFETY: `PacketRecord` is `repr(C)`, made only of integers and arrays of integers, with explicit
// padding: every bit pattern is a valid value and no byte is uninitialised.
unsafe impl aya::Pod for PacketRecord {}

#[cfg(feature = "user")]
// SAFETY: `CapturedHeader` is `repr(C)`, made only of integers, without padding (24 bytes).
unsafe impl aya::Pod for CapturedHeader {}
