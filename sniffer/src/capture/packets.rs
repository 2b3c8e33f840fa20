//! The packets a packet capture asks for: while [`PacketSource::want`] says so, the kernel
//! program copies each matched packet's first bytes into the `PACKETS` ring; this reads them.
//! Copying nothing costs the program two array reads per packet.

use aya::maps::{Array, MapData};
use sniffer_common::{CAPTURE_MAP, CAPTURED_HEADER_SIZE, CaptureControl, CapturedHeader};

use super::{CaptureError, MAX_BATCH, ring::PacedRing};

/// One packet's first bytes, as a batch holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time, the kernel's monotonic nanoseconds (the same as its record's).
    pub ts_ns: u64,
    /// Its length on the interface.
    pub len: u32,
    /// Bytes up to the end of its TCP header.
    pub headers_len: u32,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// Its first bytes, as the kernel copied them.
    pub data: &'a [u8],
    /// A VLAN tag the kernel holds beside the bytes rather than in them (the 4 bytes that go
    /// after the MAC addresses on the wire), as a batch puts it back.
    pub vlan: Option<[u8; 4]>,
}

impl Packet<'_> {
    /// Whether it is from or to one of `ports`.
    #[must_use]
    pub fn matches(&self, ports: &[u16]) -> bool {
        ports.contains(&self.src_port) || ports.contains(&self.dst_port)
    }

    /// Decodes a `PACKETS` entry: a [`CapturedHeader`] then the bytes; `None` when the entry is
    /// not one (a loader/object mismatch).
    #[must_use]
    pub fn from_entry(entry: &[u8]) -> Option<Packet<'_>> {
        let (header, data) = entry.split_at_checked(CAPTURED_HEADER_SIZE)?;
        // SAFETY: `CapturedHeader` is plain integers (`aya::Pod`), `header` is exactly its size,
        // and `read_unaligned` needs no alignment.
        let CapturedHeader {
            ts_ns,
            len,
            captured,
            headers_len,
            src_port,
            dst_port,
            vlan_tci,
            vlan_proto,
        } = unsafe { header.as_ptr().cast::<CapturedHeader>().read_unaligned() };
        // The protocol is in network byte order already: its bytes in memory are the wire's.
        let vlan = (vlan_proto != 0).then(|| {
            let [p0, p1] = vlan_proto.to_ne_bytes();
            let [t0, t1] = vlan_tci.to_be_bytes();
            [p0, p1, t0, t1]
        });
        (usize::from(captured) == data.len()).then_some(Packet {
            ts_ns,
            len,
            headers_len: u32::from(headers_len),
            src_port,
            dst_port,
            data,
            vlan,
        })
    }
}

/// Bytes of the destination and source MAC addresses, after which a VLAN tag goes.
const MAC_ADDRESSES: usize = 12;

/// Where a packet of a [`PacketBatch`] is: its fields and its bytes' place in the batch.
#[derive(Clone, Copy, Debug)]
struct Entry {
    ts_ns: u64,
    len: u32,
    headers_len: u32,
    src_port: u16,
    dst_port: u16,
    start: u32,
    end: u32,
}

/// The packets of one read of the ring, in order, their bytes in one allocation: what the
/// captures running share (one reference count per batch, not per packet).
#[derive(Debug, Default)]
pub struct PacketBatch {
    entries: Vec<Entry>,
    bytes: Vec<u8>,
}

impl PacketBatch {
    /// Appends `packet`, its VLAN tag put back after the MAC addresses (as libpcap does for
    /// tcpdump), so that the frame is the one on the wire.
    pub fn push(&mut self, packet: Packet<'_>) {
        let Packet {
            ts_ns,
            mut len,
            mut headers_len,
            src_port,
            dst_port,
            data,
            vlan,
        } = packet;
        let start = u32::try_from(self.bytes.len()).expect("a batch stays far below 4 GiB");
        match vlan {
            Some(tag) if data.len() >= MAC_ADDRESSES => {
                self.bytes.extend_from_slice(&data[..MAC_ADDRESSES]);
                self.bytes.extend_from_slice(&tag);
                self.bytes.extend_from_slice(&data[MAC_ADDRESSES..]);
                len += 4;
                headers_len += 4;
            }
            _ => self.bytes.extend_from_slice(data),
        }
        self.entries.push(Entry {
            ts_ns,
            len,
            headers_len,
            src_port,
            dst_port,
            start,
            end: u32::try_from(self.bytes.len()).expect("a batch stays far below 4 GiB"),
        });
    }

    /// The packets, in order.
    pub fn iter(&self) -> impl Iterator<Item = Packet<'_>> {
        self.entries.iter().map(|entry| Packet {
            ts_ns: entry.ts_ns,
            len: entry.len,
            headers_len: entry.headers_len,
            src_port: entry.src_port,
            dst_port: entry.dst_port,
            data: &self.bytes[entry.start as usize..entry.end as usize],
            vlan: None,
        })
    }

    /// How many packets it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One packet's first bytes, owned: what the flight recorder keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// Capture time, the kernel's monotonic nanoseconds (the same as its record's).
    pub ts_ns: u64,
    /// Its length on the interface.
    pub len: u32,
    /// Bytes up to the end of its TCP header.
    pub headers_len: u32,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// Its first bytes, as the kernel copied them.
    pub data: Box<[u8]>,
}

impl CapturedPacket {
    /// A copy of `packet`, cut to its first `keep` bytes.
    #[must_use]
    pub fn cut(packet: Packet<'_>, keep: usize) -> Self {
        Self {
            ts_ns: packet.ts_ns,
            len: packet.len,
            headers_len: packet.headers_len,
            src_port: packet.src_port,
            dst_port: packet.dst_port,
            data: packet.data[..packet.data.len().min(keep)].into(),
        }
    }

    /// It, borrowed as a batch's packets are.
    #[must_use]
    pub fn as_packet(&self) -> Packet<'_> {
        Packet {
            ts_ns: self.ts_ns,
            len: self.len,
            headers_len: self.headers_len,
            src_port: self.src_port,
            dst_port: self.dst_port,
            data: &self.data,
            vlan: None,
        }
    }
}

/// What the kernel program copies: nothing, or up to the end of each TCP header, or the first
/// `snaplen` bytes, or the longer of the two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Up to the end of the TCP header.
    pub headers: bool,
    /// The first this many bytes (0: none).
    pub snaplen: u32,
}

/// The `PACKETS` ring and the `CAPTURE` switch.
pub struct PacketSource {
    ring: PacedRing,
    control: Array<MapData, u32>,
    wanted: Wanted,
    /// Entries that were not a header and its bytes.
    malformed: u64,
}

impl PacketSource {
    pub(super) const fn new(ring: PacedRing, control: Array<MapData, u32>) -> Self {
        Self {
            ring,
            control,
            wanted: Wanted {
                headers: false,
                snaplen: 0,
            },
            malformed: 0,
        }
    }

    /// Tells the kernel program what to copy from now on.
    ///
    /// # Errors
    ///
    /// When the `CAPTURE` map cannot be written.
    pub fn want(&mut self, wanted: Wanted) -> Result<(), CaptureError> {
        if wanted == self.wanted {
            return Ok(());
        }
        let Wanted { headers, snaplen } = wanted;
        let mut set = |entry: CaptureControl, value: u32| {
            self.control
                .set(entry as u32, value, 0)
                .map_err(|source| CaptureError::Map {
                    name: CAPTURE_MAP,
                    source,
                })
        };
        // Snaplen first: a packet copied between the two writes is at worst one the capture
        // cuts itself.
        set(CaptureControl::Snaplen, snaplen)?;
        set(CaptureControl::Headers, u32::from(headers))?;
        self.wanted = wanted;
        Ok(())
    }

    /// Waits for packets (as the records' ring is waited on), then moves up to
    /// [`MAX_BATCH`] of them into `out`.
    ///
    /// Cancel-safe: nothing is taken from the ring before the wait completes.
    ///
    /// # Errors
    ///
    /// When waiting on the ring fails.
    pub async fn next_batch(&mut self, out: &mut PacketBatch) -> Result<(), CaptureError> {
        self.ring.ready().await.map_err(CaptureError::Poll)?;
        let malformed = &mut self.malformed;
        self.ring
            .read(MAX_BATCH, |entry| match Packet::from_entry(entry) {
                Some(packet) => out.push(packet),
                None => *malformed += 1,
            });
        Ok(())
    }

    /// Entries taken off the ring that were not a header and its bytes.
    #[must_use]
    pub const fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(captured: u16, data: &[u8]) -> Vec<u8> {
        tagged(captured, data, 0, 0)
    }

    fn tagged(captured: u16, data: &[u8], vlan_tci: u16, vlan_proto: u16) -> Vec<u8> {
        let header = CapturedHeader {
            ts_ns: 7,
            len: 1514,
            captured,
            headers_len: 54,
            src_port: 8080,
            dst_port: 40_000,
            vlan_tci,
            vlan_proto,
        };
        // SAFETY: a plain-integer `repr(C)` struct without padding, viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const header).cast::<u8>(),
                size_of::<CapturedHeader>(),
            )
        };
        [bytes, data].concat()
    }

    #[test]
    fn entries_decode_and_mismatched_lengths_do_not() {
        let bytes = entry(3, &[1, 2, 3]);
        let packet = Packet::from_entry(&bytes).unwrap();
        assert_eq!(
            (
                packet.ts_ns,
                packet.len,
                packet.headers_len,
                packet.src_port,
                packet.dst_port
            ),
            (7, 1514, 54, 8080, 40_000)
        );
        assert_eq!(packet.data, &[1, 2, 3]);
        assert_eq!(Packet::from_entry(&entry(4, &[1, 2, 3])), None);
        assert_eq!(Packet::from_entry(&[0; 10]), None);
    }

    #[test]
    fn a_batch_keeps_each_packet_s_fields_and_bytes() {
        let (first, second) = (entry(3, &[1, 2, 3]), entry(2, &[9, 8]));
        let mut batch = PacketBatch::default();
        batch.push(Packet::from_entry(&first).unwrap());
        batch.push(Packet::from_entry(&second).unwrap());
        let packets: Vec<Packet<'_>> = batch.iter().collect();
        assert_eq!(packets.len(), 2);
        assert_eq!(
            (packets[0].data, packets[1].data),
            (&[1, 2, 3][..], &[9, 8][..])
        );
        assert_eq!(packets[1].dst_port, 40_000);
        assert!(packets[1].matches(&[8080]) && packets[1].matches(&[40_000]));
        assert!(!packets[1].matches(&[443, 8081]));
        let kept = CapturedPacket::cut(packets[0], 2);
        assert_eq!(&*kept.data, &[1, 2]);
        assert_eq!(kept.as_packet().ts_ns, 7);
    }

    #[test]
    fn a_tag_the_kernel_holds_apart_goes_back_after_the_mac_addresses() {
        let frame: Vec<u8> = (0..20).collect();
        // 802.1Q as the kernel stores it: network byte order in memory.
        let proto = u16::from_ne_bytes([0x81, 0x00]);
        let bytes = tagged(20, &frame, (3 << 13) | 100, proto);
        let mut batch = PacketBatch::default();
        batch.push(Packet::from_entry(&bytes).unwrap());
        let packet = batch.iter().next().unwrap();
        assert_eq!(&packet.data[..12], &frame[..12]);
        assert_eq!(&packet.data[12..16], &[0x81, 0x00, 0x60, 100]);
        assert_eq!(&packet.data[16..], &frame[12..]);
        assert_eq!((packet.len, packet.headers_len), (1518, 58));
    }
}
