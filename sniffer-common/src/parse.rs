//! Parse the packet: link layer → IPv4/IPv6 → TCP, into a [`PacketRecord`].
//!
//! The same code runs in the kernel (reading through `bpf_skb_load_bytes`) and in unit tests
//! (reading a byte slice), through [`PacketBytes`]. It is written for the verifier: every loop has a
//! constant bound, every read is a fixed-size copy whose bounds the reader checks.

use crate::{LinkLayer, PacketRecord, addr_words};

/// Read access to a packet's bytes.
pub trait PacketBytes {
    /// Copies `N` bytes starting at `offset`, or `None` when the packet is shorter.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
    /// Length of the whole packet in bytes, link header included.
    fn packet_len(&self) -> u32;
}

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// 802.1ad (QinQ) carries two tags; more is not seen on pod interfaces.
const MAX_VLAN_TAGS: usize = 2;

const IPPROTO_TCP: u8 = 6;
const IPV6_HEADER_LEN: usize = 40;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// Upper bound on IPv6 extension headers walked before giving up on a packet.
const MAX_IPV6_EXT_HEADERS: usize = 6;

const TCP_MIN_HEADER_LEN: usize = 20;

/// Addresses and lengths found in the IP header, before TCP is read.
#[derive(Clone, Copy)]
struct Network {
    ip_version: u8,
    src_addr: [u32; 4],
    dst_addr: [u32; 4],
    /// Offset of the TCP header from the start of the packet.
    l4_offset: usize,
    /// Bytes from the TCP header to the end of the IP packet (TCP header + payload).
    l4_len: u32,
}

/// Parses a TCP packet into a record with `ts_ns` and `pkt_type` left at zero for the caller.
///
/// Returns `None` for anything that is not a complete-enough TCP segment: other ethertypes (ARP …),
/// other IP protocols (UDP, ICMP …), IPv4 and IPv6 fragments other than the first, truncated or
/// malformed headers.
///
/// # Examples
///
/// ```
/// use sniffer_common::{LinkLayer, parse::{parse_tcp, PacketBytes}};
///
/// struct Bytes<'a>(&'a [u8]);
/// impl PacketBytes for Bytes<'_> {
///     fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
///         self.0.get(offset..offset.checked_add(N)?)?.try_into().ok()
///     }
///     fn packet_len(&self) -> u32 {
///         self.0.len() as u32
///     }
/// }
///
/// // An ARP frame is not TCP.
/// let mut arp = [0u8; 42];
/// arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
/// assert!(parse_tcp(&Bytes(&arp), LinkLayer::Ethernet).is_none());
/// ```
#[inline(always)]
pub fn parse_tcp<P: PacketBytes>(packet: &P, link: LinkLayer) -> Option<PacketRecord> {
    if let LinkLayer::Ethernet = link {
        // Every TCP segment on Ethernet is at least this long; shorter frames are not TCP.
        let head = packet.load::<PLAIN_IPV4_TCP_LEN>(0)?;
        if u16::from_be_bytes([head[12], head[13]]) == ETH_P_IPV4 && head[ETH_HEADER_LEN] == 0x45 {
            return plain_ipv4_tcp(packet, &head);
        }
    }
    parse_any(packet, link)
}

/// Length of an untagged Ethernet frame's IPv4 header without options and TCP header.
const PLAIN_IPV4_TCP_LEN: usize = ETH_HEADER_LEN + 20 + TCP_MIN_HEADER_LEN;

/// The common case, decoded from one read of the first bytes: untagged Ethernet, IPv4 without
/// options. Each packet read is a helper call in the kernel; this saves two of three.
#[inline(always)]
fn plain_ipv4_tcp<P: PacketBytes>(
    packet: &P,
    head: &[u8; PLAIN_IPV4_TCP_LEN],
) -> Option<PacketRecord> {
    let (_, rest) = head.split_first_chunk::<ETH_HEADER_LEN>()?;
    let (ip, tcp) = rest.split_first_chunk::<20>()?;
    let tcp = tcp.first_chunk::<TCP_MIN_HEADER_LEN>()?;
    let network = ipv4_header(ip, ETH_HEADER_LEN, packet.packet_len())?;
    tcp_header(tcp, network, packet.packet_len())
}

/// Any supported layout: VLAN tags, IPv4 options, IPv6 extension headers.
#[inline(always)]
fn parse_any<P: PacketBytes>(packet: &P, link: LinkLayer) -> Option<PacketRecord> {
    let (ethertype, l3_offset) = match link {
        LinkLayer::Ethernet => ethernet(packet)?,
        LinkLayer::RawIp => {
            let [first] = packet.load::<1>(0)?;
            match first >> 4 {
                4 => (ETH_P_IPV4, 0),
                6 => (ETH_P_IPV6, 0),
                _ => return None,
            }
        }
    };
    let network = match ethertype {
        ETH_P_IPV4 => ipv4(packet, l3_offset)?,
        ETH_P_IPV6 => ipv6(packet, l3_offset)?,
        _ => return None,
    };
    tcp(packet, network)
}

/// Returns the ethertype after any VLAN tags and the offset of the network header.
#[inline(always)]
fn ethernet<P: PacketBytes>(packet: &P) -> Option<(u16, usize)> {
    let mut offset = ETH_HEADER_LEN;
    let mut ethertype = u16::from_be_bytes(packet.load::<2>(offset - 2)?);
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        offset += VLAN_TAG_LEN;
        ethertype = u16::from_be_bytes(packet.load::<2>(offset - 2)?);
    }
    Some((ethertype, offset))
}

#[inline(always)]
fn ipv4<P: PacketBytes>(packet: &P, offset: usize) -> Option<Network> {
    ipv4_header(&packet.load::<20>(offset)?, offset, packet.packet_len())
}

/// Decodes the fixed IPv4 header `h` found at `offset` of a packet of `packet_len` bytes.
#[inline(always)]
fn ipv4_header(h: &[u8; 20], offset: usize, packet_len: u32) -> Option<Network> {
    if h[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < 20 || h[9] != IPPROTO_TCP {
        return None;
    }
    // Only the first fragment (offset 0) carries the TCP header.
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        return None;
    }
    let total_len = u32::from(u16::from_be_bytes([h[2], h[3]]));
    let l4_offset = offset + header_len;
    // GSO super-packets (BIG TCP) carry total length 0: the packet itself is the measure.
    let ip_len = if total_len == 0 {
        packet_len.saturating_sub(offset as u32)
    } else {
        total_len
    };
    Some(Network {
        ip_version: 4,
        src_addr: [u32::from_ne_bytes([h[12], h[13], h[14], h[15]]), 0, 0, 0],
        dst_addr: [u32::from_ne_bytes([h[16], h[17], h[18], h[19]]), 0, 0, 0],
        l4_offset,
        l4_len: ip_len.saturating_sub(header_len as u32),
    })
}

#[inline(always)]
fn ipv6<P: PacketBytes>(packet: &P, offset: usize) -> Option<Network> {
    let h = packet.load::<40>(offset)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let payload_len = u32::from(u16::from_be_bytes([h[4], h[5]]));
    // Payload length 0 means a jumbogram or a BIG TCP super-packet: measure the packet instead.
    let payload_len = if payload_len == 0 {
        packet
            .packet_len()
            .saturating_sub((offset + IPV6_HEADER_LEN) as u32)
    } else {
        payload_len
    };
    let mut next = h[6];
    let mut l4_offset = offset + IPV6_HEADER_LEN;
    let mut found = next == IPPROTO_TCP;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if found {
            break;
        }
        let ext = packet.load::<4>(l4_offset)?;
        let ext_len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => (usize::from(ext[1]) + 1) * 8,
            IPV6_AUTH => (usize::from(ext[1]) + 2) * 4,
            IPV6_FRAGMENT => {
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return None;
                }
                8
            }
            _ => return None,
        };
        next = ext[0];
        l4_offset += ext_len;
        found = next == IPPROTO_TCP;
    }
    if !found {
        return None;
    }
    let ext_total = (l4_offset - offset - IPV6_HEADER_LEN) as u32;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Some(Network {
        ip_version: 6,
        src_addr: addr_words(src),
        dst_addr: addr_words(dst),
        l4_offset,
        l4_len: payload_len.saturating_sub(ext_total),
    })
}

#[inline(always)]
fn tcp<P: PacketBytes>(packet: &P, network: Network) -> Option<PacketRecord> {
    let h = packet.load::<TCP_MIN_HEADER_LEN>(network.l4_offset)?;
    tcp_header(&h, network, packet.packet_len())
}

/// Decodes the fixed TCP header `h` of `network`'s segment in a packet of `packet_len` bytes.
#[inline(always)]
fn tcp_header(
    h: &[u8; TCP_MIN_HEADER_LEN],
    network: Network,
    packet_len: u32,
) -> Option<PacketRecord> {
    let Network {
        ip_version,
        src_addr,
        dst_addr,
        l4_offset,
        l4_len,
    } = network;
    let header_len = u32::from(h[12] >> 4) * 4;
    if header_len < TCP_MIN_HEADER_LEN as u32 {
        return None;
    }
    Some(PacketRecord {
        ts_ns: 0,
        src_addr,
        dst_addr,
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        len: packet_len,
        payload_len: l4_len.saturating_sub(header_len),
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        window: u16::from_be_bytes([h[14], h[15]]),
        tcp_flags: h[13],
        ip_version,
        pkt_type: 0,
        // At most 64 KiB of link, IP and TCP headers: the offsets come from 16-bit fields.
        headers_len: (l4_offset as u32).saturating_add(header_len),
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::tcp_flags;

    struct Bytes<'a>(&'a [u8]);

    impl PacketBytes for Bytes<'_> {
        fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
            self.0.get(offset..offset.checked_add(N)?)?.try_into().ok()
        }
        fn packet_len(&self) -> u32 {
            self.0.len() as u32
        }
    }

    fn parse(bytes: &[u8]) -> Option<PacketRecord> {
        parse_tcp(&Bytes(bytes), LinkLayer::Ethernet)
    }

    fn ethernet(ethertype: u16) -> Vec<u8> {
        let mut frame = Vec::from([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame
    }

    /// A TCP header with the given data offset (in 32-bit words), padded with NOP options.
    fn tcp_header(src: u16, dst: u16, flags: u8, words: u8) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&src.to_be_bytes());
        h.extend_from_slice(&dst.to_be_bytes());
        h.extend_from_slice(&0x1122_3344u32.to_be_bytes());
        h.extend_from_slice(&0x5566_7788u32.to_be_bytes());
        h.push(words << 4);
        h.push(flags);
        h.extend_from_slice(&64240u16.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.resize(usize::from(words) * 4, 1);
        h
    }

    fn ipv4(protocol: u8, options_words: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let ihl = 5 + options_words;
        let total = usize::from(ihl) * 4 + l4.len();
        let mut h = Vec::from([0x40 | ihl, 0]);
        h.extend_from_slice(&(total as u16).to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, protocol, 0, 0, 10, 0, 0, 7, 10, 0, 0, 9]);
        h.resize(usize::from(ihl) * 4, 1);
        h.extend_from_slice(l4);
        h
    }

    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::from([0x60, 0, 0, 0]);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h.extend_from_slice(payload);
        h
    }

    fn frame(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = ethernet(ethertype);
        f.extend_from_slice(l3);
        f
    }

    #[test]
    fn ipv4_syn_fields() {
        let packet = frame(
            ETH_P_IPV4,
            &ipv4(6, 0, 0, &tcp_header(51234, 8080, tcp_flags::SYN, 10)),
        );
        let r = parse(&packet).expect("tcp");
        assert_eq!(r.ip_version, 4);
        assert_eq!(&r.src_addr_bytes()[..4], &[10, 0, 0, 7]);
        assert_eq!(&r.dst_addr_bytes()[..4], &[10, 0, 0, 9]);
        assert_eq!(r.src_addr_bytes()[4..], [0; 12]);
        assert_eq!((r.src_port, r.dst_port), (51234, 8080));
        assert_eq!((r.seq, r.ack, r.window), (0x1122_3344, 0x5566_7788, 64240));
        assert_eq!(r.tcp_flags, tcp_flags::SYN);
        assert_eq!(r.payload_len, 0);
        assert_eq!(r.len, packet.len() as u32);
        assert_eq!(r.len, 14 + 20 + 40);
        assert_eq!(r.headers_len, 14 + 20 + 40);
    }

    #[test]
    fn ipv4_options_and_payload() {
        let mut segment = tcp_header(8080, 40000, tcp_flags::PSH | tcp_flags::ACK, 8);
        segment.extend_from_slice(&[0xab; 100]);
        let packet = frame(ETH_P_IPV4, &ipv4(6, 10, 0, &segment));
        let r = parse(&packet).expect("tcp with IP options");
        assert_eq!(r.payload_len, 100);
        assert_eq!(
            r.headers_len,
            14 + 20 + 40 + 32,
            "IP and TCP options included"
        );
        assert_eq!((r.src_port, r.dst_port), (8080, 40000));
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        // Short frames are padded to 60 bytes; the IP total length, not the frame, counts.
        let mut packet = frame(ETH_P_IPV4, &ipv4(6, 0, 0, &tcp_header(1, 2, 0x10, 5)));
        packet.resize(60, 0);
        let r = parse(&packet).unwrap();
        assert_eq!(r.payload_len, 0);
        assert_eq!(r.len, 60);
        assert_eq!(
            r.headers_len,
            14 + 20 + 20,
            "padding is not a header either"
        );
    }

    #[test]
    fn ipv4_first_fragment_parsed_later_fragments_ignored() {
        let tcp = tcp_header(1, 2, tcp_flags::ACK, 5);
        let more_fragments = 0x2000;
        assert!(parse(&frame(ETH_P_IPV4, &ipv4(6, 0, more_fragments, &tcp))).is_some());
        assert!(parse(&frame(ETH_P_IPV4, &ipv4(6, 0, 185, &tcp))).is_none());
        assert!(parse(&frame(ETH_P_IPV4, &ipv4(6, 0, more_fragments | 185, &tcp))).is_none());
    }

    #[test]
    fn non_tcp_is_ignored() {
        let udp = [0x13, 0x88, 0x1f, 0x90, 0, 8, 0, 0];
        assert!(parse(&frame(ETH_P_IPV4, &ipv4(17, 0, 0, &udp))).is_none());
        assert!(
            parse(&frame(
                ETH_P_IPV4,
                &ipv4(1, 0, 0, &[8, 0, 0, 0, 0, 0, 0, 0])
            ))
            .is_none()
        );
        assert!(parse(&frame(ETH_P_IPV6, &ipv6(58, &[128, 0, 0, 0, 0, 0, 0, 0]))).is_none());
        let mut arp = ethernet(0x0806);
        arp.resize(42, 0);
        assert!(parse(&arp).is_none());
    }

    #[test]
    fn truncated_and_malformed_are_ignored() {
        let packet = frame(ETH_P_IPV4, &ipv4(6, 0, 0, &tcp_header(1, 2, 0x10, 5)));
        for cut in 0..packet.len() {
            assert!(parse(&packet[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad_ihl = packet.clone();
        bad_ihl[14] = 0x44;
        assert!(parse(&bad_ihl).is_none());
        let mut bad_version = packet.clone();
        bad_version[14] = 0x65;
        assert!(parse(&bad_version).is_none());
        let mut bad_doff = packet;
        bad_doff[14 + 20 + 12] = 0x40;
        assert!(parse(&bad_doff).is_none());
        assert!(parse(&[]).is_none());
    }

    #[test]
    fn ipv6_plain_and_with_extension_headers() {
        let mut segment = tcp_header(443, 50000, tcp_flags::FIN | tcp_flags::ACK, 5);
        segment.extend_from_slice(&[1; 7]);
        let r = parse(&frame(ETH_P_IPV6, &ipv6(6, &segment))).expect("ipv6 tcp");
        assert_eq!(r.ip_version, 6);
        assert_eq!(r.src_addr_bytes()[0], 0xfd);
        assert_eq!(r.dst_addr_bytes()[15], 2);
        assert_eq!(r.payload_len, 7);
        assert_eq!(r.tcp_flags, tcp_flags::FIN | tcp_flags::ACK);

        // Hop-by-hop (8 bytes) → destination options (16 bytes) → first fragment (8 bytes) → TCP.
        let mut chain = Vec::from([IPV6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        chain.extend_from_slice(&[IPV6_FRAGMENT, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        chain.extend_from_slice(&[IPPROTO_TCP, 0, 0, 1, 0, 0, 0, 9]);
        chain.extend_from_slice(&segment);
        let r = parse(&frame(ETH_P_IPV6, &ipv6(IPV6_HOP_BY_HOP, &chain))).expect("ext headers");
        assert_eq!(r.payload_len, 7);
        assert_eq!(r.headers_len, 14 + 40 + 8 + 16 + 8 + 20);
        assert_eq!(r.src_port, 443);

        let mut later_fragment = Vec::from([IPPROTO_TCP, 0, 0x05, 0x00, 0, 0, 0, 9]);
        later_fragment.extend_from_slice(&segment);
        assert!(parse(&frame(ETH_P_IPV6, &ipv6(IPV6_FRAGMENT, &later_fragment))).is_none());
    }

    #[test]
    fn ipv6_extension_chain_is_bounded() {
        let mut chain = Vec::new();
        for _ in 0..MAX_IPV6_EXT_HEADERS {
            chain.extend_from_slice(&[IPV6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        chain.extend_from_slice(&tcp_header(1, 2, 0, 5));
        assert!(parse(&frame(ETH_P_IPV6, &ipv6(IPV6_DEST_OPTS, &chain))).is_none());
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let ip = ipv4(6, 0, 0, &tcp_header(1, 8080, tcp_flags::SYN, 5));
        let mut tagged = ethernet(ETH_P_8021AD);
        tagged.extend_from_slice(&[0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00]);
        tagged.extend_from_slice(&ip);
        assert_eq!(parse(&tagged).unwrap().dst_port, 8080);
    }

    #[test]
    fn raw_ip_link_layer() {
        let ip = ipv4(6, 0, 0, &tcp_header(1, 8080, tcp_flags::SYN, 5));
        let r = parse_tcp(&Bytes(&ip), LinkLayer::RawIp).expect("raw ip");
        assert_eq!(r.dst_port, 8080);
        let ip6 = ipv6(6, &tcp_header(1, 8080, tcp_flags::SYN, 5));
        assert_eq!(
            parse_tcp(&Bytes(&ip6), LinkLayer::RawIp)
                .unwrap()
                .ip_version,
            6
        );
        assert!(parse_tcp(&Bytes(&[0x00; 60]), LinkLayer::RawIp).is_none());
    }

    #[test]
    fn gso_total_length_zero_uses_packet_length() {
        let mut segment = tcp_header(1, 2, tcp_flags::ACK, 5);
        segment.extend_from_slice(&[0; 1000]);
        let mut packet = frame(ETH_P_IPV4, &ipv4(6, 0, 0, &segment));
        packet[16] = 0;
        packet[17] = 0;
        assert_eq!(parse(&packet).unwrap().payload_len, 1000);
    }

    /// The one-read path for untagged IPv4 without options gives exactly what the general path
    /// gives, on valid frames and on frames with one to three bytes of the headers changed
    /// (header lengths, versions, fragments, protocols, ethertypes) or cut short.
    #[test]
    fn plain_ipv4_path_agrees_with_the_general_path() {
        let payload = [7u8; 30];
        let mut segment = tcp_header(51234, 8080, tcp_flags::PSH | tcp_flags::ACK, 5);
        segment.extend_from_slice(&payload);
        let base = frame(ETH_P_IPV4, &ipv4(IPPROTO_TCP, 0, 0, &segment));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: usize| {
            // xorshift64: deterministic and dependency-free.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut fast = 0;
        for _ in 0..200_000 {
            let mut packet = base.clone();
            for _ in 0..=next(3) {
                let at = next(PLAIN_IPV4_TCP_LEN + 4);
                packet[at] = next(256) as u8;
            }
            if next(8) == 0 {
                packet.truncate(next(packet.len() + 1));
            }
            let bytes = Bytes(&packet);
            let expected = parse_any(&bytes, LinkLayer::Ethernet);
            assert_eq!(
                parse_tcp(&bytes, LinkLayer::Ethernet),
                expected,
                "{packet:02x?}"
            );
            fast += usize::from(expected.is_some());
        }
        // Most mutations leave a valid segment; the comparison is not vacuous.
        assert!(fast > 50_000, "{fast}");
    }
}
