//! The pcapng blocks a capture is made of (the IETF draft "PCAP Next Generation (pcapng) Capture
//! File Format"): a Section Header Block, one Interface Description Block, an Enhanced Packet
//! Block per packet and an Interface Statistics Block at the end. Pure: each function appends one
//! block, in this host's byte order (the section header's magic tells readers which).

/// The link types of [`interface_description`] (tcpdump.org's `LINKTYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// `LINKTYPE_ETHERNET`: frames start with an Ethernet header.
    Ethernet,
    /// `LINKTYPE_RAW`: packets start with the IPv4 or IPv6 header.
    RawIp,
}

impl LinkType {
    const fn code(self) -> u16 {
        match self {
            Self::Ethernet => 1,
            Self::RawIp => 101,
        }
    }
}

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 1;
const INTERFACE_STATISTICS: u32 = 5;
const ENHANCED_PACKET: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const SHB_HARDWARE: u16 = 2;
const SHB_OS: u16 = 3;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;

/// Appends a block of `kind` whose body `fill` writes, with both length fields.
fn block(out: &mut Vec<u8>, kind: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&[0; 4]);
    fill(out);
    pad(out, start);
    let total = u32::try_from(out.len() - start + 4).expect("blocks are small");
    out[start + 4..start + 8].copy_from_slice(&total.to_ne_bytes());
    out.extend_from_slice(&total.to_ne_bytes());
}

/// Pads what was written since `start` to a multiple of 4 bytes.
fn pad(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    out.resize(start + len.next_multiple_of(4), 0);
}

/// Appends an option: code, length, value padded to 4 bytes.
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    // Option values here are names and numbers; a longer text is cut to what the field holds.
    let value = &value[..value.len().min(usize::from(u16::MAX) - 3)];
    out.extend_from_slice(&code.to_ne_bytes());
    out.extend_from_slice(&u16::try_from(value.len()).expect("cut above").to_ne_bytes());
    let start = out.len();
    out.extend_from_slice(value);
    pad(out, start);
}

fn end_of_options(out: &mut Vec<u8>) {
    out.extend_from_slice(&OPT_END.to_ne_bytes());
    out.extend_from_slice(&[0; 2]);
}

/// A timestamp in nanoseconds (the resolution [`interface_description`] declares) as the two
/// 32-bit halves the blocks carry.
fn timestamp(out: &mut Vec<u8>, ts_ns: u64) {
    out.extend_from_slice(&((ts_ns >> 32) as u32).to_ne_bytes());
    out.extend_from_slice(&(ts_ns as u32).to_ne_bytes());
}

/// Appends the Section Header Block: the software (`shb_userappl`), the machine and the OS.
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// sniffer::pcap::pcapng::section_header(&mut out, "tcp-sniffer 0.1.0", "x86_64", "Linux");
/// assert_eq!(&out[..4], &0x0A0D0D0Au32.to_ne_bytes());
/// assert_eq!(out.len() % 4, 0);
/// ```
pub fn section_header(out: &mut Vec<u8>, software: &str, hardware: &str, os: &str) {
    block(out, SECTION_HEADER, |out| {
        out.extend_from_slice(&BYTE_ORDER_MAGIC.to_ne_bytes());
        out.extend_from_slice(&1u16.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        // Section length unknown: the capture is streamed.
        out.extend_from_slice(&(-1i64).to_ne_bytes());
        option(out, SHB_HARDWARE, hardware.as_bytes());
        option(out, SHB_OS, os.as_bytes());
        option(out, SHB_USERAPPL, software.as_bytes());
        end_of_options(out);
    });
}

/// Appends the Interface Description Block of interface 0: its link type, the most bytes kept
/// of a packet (`snaplen`), its name and description, and nanosecond timestamps.
pub fn interface_description(
    out: &mut Vec<u8>,
    link: LinkType,
    snaplen: u32,
    name: &str,
    description: &str,
) {
    block(out, INTERFACE_DESCRIPTION, |out| {
        out.extend_from_slice(&link.code().to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&snaplen.to_ne_bytes());
        option(out, IF_NAME, name.as_bytes());
        option(out, IF_DESCRIPTION, description.as_bytes());
        option(out, IF_TSRESOL, &[9]);
        end_of_options(out);
    });
}

/// Appends an Enhanced Packet Block on interface 0: the packet's first bytes (`data`), its
/// length on the wire (`original_len`) and its time (nanoseconds since the Unix epoch).
pub fn enhanced_packet(out: &mut Vec<u8>, ts_ns: u64, original_len: u32, data: &[u8]) {
    block(out, ENHANCED_PACKET, |out| {
        out.extend_from_slice(&0u32.to_ne_bytes());
        timestamp(out, ts_ns);
        let captured = u32::try_from(data.len()).expect("a packet's bytes fit in u32");
        out.extend_from_slice(&captured.to_ne_bytes());
        out.extend_from_slice(&original_len.max(captured).to_ne_bytes());
        let start = out.len();
        out.extend_from_slice(data);
        pad(out, start);
    });
}

/// What an Interface Statistics Block reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// When the capture started and ended, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// Packets the capture saw (`isb_ifrecv`): written, or lost on the way.
    pub received: u64,
    /// Packets lost on the way (`isb_ifdrop`): a full kernel ring, or a client slower than the
    /// traffic.
    pub dropped: u64,
}

/// Appends the Interface Statistics Block of interface 0, stamped with its end time.
pub fn interface_statistics(out: &mut Vec<u8>, stats: Statistics) {
    let Statistics {
        start_ns,
        end_ns,
        received,
        dropped,
    } = stats;
    block(out, INTERFACE_STATISTICS, |out| {
        out.extend_from_slice(&0u32.to_ne_bytes());
        timestamp(out, end_ns);
        let mut time = Vec::with_capacity(8);
        timestamp(&mut time, start_ns);
        option(out, ISB_STARTTIME, &time);
        time.clear();
        timestamp(&mut time, end_ns);
        option(out, ISB_ENDTIME, &time);
        option(out, ISB_IFRECV, &received.to_ne_bytes());
        option(out, ISB_IFDROP, &dropped.to_ne_bytes());
        end_of_options(out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    /// Each block's two lengths agree and cover it exactly.
    fn blocks(bytes: &[u8]) -> Vec<(u32, &[u8])> {
        let mut at = 0;
        let mut found = Vec::new();
        while at < bytes.len() {
            let len = u32_at(bytes, at + 4) as usize;
            assert_eq!(len % 4, 0);
            assert_eq!(u32_at(bytes, at + len - 4) as usize, len);
            found.push((u32_at(bytes, at), &bytes[at + 8..at + len - 4]));
            at += len;
        }
        assert_eq!(at, bytes.len());
        found
    }

    #[test]
    fn a_capture_is_a_section_an_interface_packets_and_statistics() {
        let mut out = Vec::new();
        section_header(&mut out, "tcp-sniffer 0.1.0", "x86_64", "Linux");
        interface_description(&mut out, LinkType::Ethernet, 262, "eth0", "pod web-1");
        enhanced_packet(&mut out, 1_700_000_000_123_456_789, 1514, &[0xab; 54]);
        interface_statistics(
            &mut out,
            Statistics {
                start_ns: 1,
                end_ns: 2,
                received: 3,
                dropped: 1,
            },
        );
        let found = blocks(&out);
        let kinds: Vec<u32> = found.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, [SECTION_HEADER, 1, 6, 5]);

        let shb = found[0].1;
        assert_eq!(u32_at(shb, 0), BYTE_ORDER_MAGIC);
        assert_eq!(&shb[8..16], &(-1i64).to_ne_bytes());

        let idb = found[1].1;
        assert_eq!(&idb[..2], &1u16.to_ne_bytes());
        assert_eq!(u32_at(idb, 4), 262);

        let epb = found[2].1;
        let ts = 1_700_000_000_123_456_789u64;
        assert_eq!(u32_at(epb, 4), (ts >> 32) as u32);
        assert_eq!(u32_at(epb, 8), ts as u32);
        assert_eq!((u32_at(epb, 12), u32_at(epb, 16)), (54, 1514));
        assert_eq!(&epb[20..74], &[0xab; 54]);
        assert_eq!(epb.len(), 20 + 56, "data padded to 4 bytes, no options");
    }

    #[test]
    fn options_are_padded_and_overlong_text_is_cut() {
        let mut out = Vec::new();
        interface_description(&mut out, LinkType::RawIp, 96, "wg0", &"d".repeat(70_000));
        let found = blocks(&out);
        let idb = found[0].1;
        assert_eq!(&idb[..2], &101u16.to_ne_bytes());
        // if_name: code 2, length 3, "wg0" and one byte of padding.
        let header = [2u16.to_ne_bytes(), 3u16.to_ne_bytes()].concat();
        assert_eq!(&idb[8..12], &header[..]);
        assert_eq!(&idb[12..16], b"wg0\0");
        let description_len = u16::from_ne_bytes([idb[18], idb[19]]);
        assert_eq!(description_len, u16::MAX - 3);
    }
}
