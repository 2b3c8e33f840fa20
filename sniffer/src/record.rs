//! The JSON record (docs/specs/OUTPUT_FORMAT.md) made from a kernel [`PacketRecord`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer, ser::SerializeSeq as _};
use sniffer_common::{PACKET_OUTGOING, PacketRecord, tcp_flags};

use crate::clock::{Timestamp, WallClock};

/// Whether the packet arrived on the interface or was sent through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received on the interface (`PACKET_HOST`, and broadcast/multicast/other-host types).
    Ingress,
    /// Sent by this host (`PACKET_OUTGOING`).
    Egress,
}

impl Direction {
    /// Direction of a kernel packet type.
    #[must_use]
    pub const fn from_pkt_type(pkt_type: u32) -> Self {
        if pkt_type == PACKET_OUTGOING {
            Self::Egress
        } else {
            Self::Ingress
        }
    }
}

/// TCP flags, serialized as a list of names in header bit order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    /// Names in the order of the contract: `FIN`,`SYN`,`RST`,`PSH`,`ACK`,`URG`,`ECE`,`CWR`.
    const NAMES: [(u8, &'static str); 8] = [
        (tcp_flags::FIN, "FIN"),
        (tcp_flags::SYN, "SYN"),
        (tcp_flags::RST, "RST"),
        (tcp_flags::PSH, "PSH"),
        (tcp_flags::ACK, "ACK"),
        (tcp_flags::URG, "URG"),
        (tcp_flags::ECE, "ECE"),
        (tcp_flags::CWR, "CWR"),
    ];

    /// The names of the flags that are set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| name)
    }
}

impl Serialize for Flags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.count_ones() as usize))?;
        for name in self.names() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

/// One matched packet, as emitted on stdout and inside batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Wall-clock capture time.
    pub ts: Timestamp,
    /// Ingress or egress.
    pub direction: Direction,
    /// 4 or 6.
    pub ip_version: u8,
    /// Source address.
    pub src_ip: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination address.
    pub dst_ip: IpAddr,
    /// Destination port.
    pub dst_port: u16,
    /// TCP flags that are set.
    pub flags: Flags,
    /// Raw sequence number.
    pub seq: u32,
    /// Raw acknowledgment number.
    pub ack: u32,
    /// Raw window field.
    pub window: u16,
    /// TCP payload bytes.
    pub payload_len: u32,
    /// Packet length on the interface.
    pub len: u32,
}

impl Record {
    /// Converts a kernel record, placing its monotonic timestamp on `clock`.
    #[must_use]
    pub fn from_kernel(raw: &PacketRecord, clock: &WallClock) -> Self {
        let PacketRecord {
            ts_ns,
            src_addr: _,
            dst_addr: _,
            seq,
            ack,
            len,
            payload_len,
            src_port,
            dst_port,
            window,
            tcp_flags,
            ip_version,
            pkt_type,
            _pad,
        } = *raw;
        Self {
            ts: clock.wall(ts_ns),
            direction: Direction::from_pkt_type(pkt_type),
            ip_version,
            src_ip: ip(ip_version, raw.src_addr_bytes()),
            src_port,
            dst_ip: ip(ip_version, raw.dst_addr_bytes()),
            dst_port,
            flags: Flags(tcp_flags),
            seq,
            ack,
            window,
            payload_len,
            len,
        }
    }
}

fn ip(version: u8, bytes: [u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sniffer_common::addr_words;

    use super::*;

    const CLOCK: WallClock = WallClock::from_offset(1_795_805_000_000_000_000);

    fn raw_v4() -> PacketRecord {
        let v4 = |a: [u8; 4]| [u32::from_ne_bytes(a), 0, 0, 0];
        PacketRecord {
            ts_ns: 96_123_456_789,
            src_addr: v4([10, 0, 0, 7]),
            dst_addr: v4([10, 0, 0, 9]),
            seq: 1_438_223_591,
            ack: 0,
            len: 74,
            payload_len: 0,
            src_port: 51234,
            dst_port: 8080,
            window: 64240,
            tcp_flags: tcp_flags::SYN,
            ip_version: 4,
            pkt_type: 0,
            _pad: 0,
        }
    }

    #[test]
    fn ipv4_record_matches_the_contract_example() {
        let value = serde_json::to_value(Record::from_kernel(&raw_v4(), &CLOCK)).unwrap();
        assert_eq!(
            value,
            json!({"ts":"2026-11-27T18:44:56.123456789Z","direction":"ingress","ip_version":4,
                   "src_ip":"10.0.0.7","src_port":51234,"dst_ip":"10.0.0.9","dst_port":8080,
                   "flags":["SYN"],"seq":1438223591u32,"ack":0,"window":64240,"payload_len":0,"len":74})
        );
    }

    #[test]
    fn field_order_is_stable() {
        let line = serde_json::to_string(&Record::from_kernel(&raw_v4(), &CLOCK)).unwrap();
        assert!(
            line.starts_with(r#"{"ts":"2026-11-27T18:44:56.123456789Z","direction":"ingress","#)
        );
        assert!(line.ends_with(r#""payload_len":0,"len":74}"#));
    }

    #[test]
    fn ipv6_egress_record() {
        let mut raw = raw_v4();
        raw.ip_version = 6;
        raw.src_addr = addr_words("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        raw.dst_addr = addr_words("2001:db8::42".parse::<Ipv6Addr>().unwrap().octets());
        raw.pkt_type = PACKET_OUTGOING;
        raw.tcp_flags = tcp_flags::PSH | tcp_flags::ACK;
        raw.payload_len = 1448;
        raw.seq = u32::MAX;
        raw.ack = 0x8000_0000;
        let value = serde_json::to_value(Record::from_kernel(&raw, &CLOCK)).unwrap();
        assert_eq!(value["direction"], "egress");
        assert_eq!(value["ip_version"], 6);
        assert_eq!(value["src_ip"], "fd00::1");
        assert_eq!(value["dst_ip"], "2001:db8::42");
        assert_eq!(value["flags"], json!(["PSH", "ACK"]));
        assert_eq!(value["payload_len"], 1448);
        assert_eq!(value["seq"], 4_294_967_295u32);
        assert_eq!(value["ack"], 2_147_483_648u32);
    }

    #[test]
    fn every_flag_in_contract_order() {
        assert_eq!(
            serde_json::to_value(Flags(0xff)).unwrap(),
            json!(["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"])
        );
        assert_eq!(serde_json::to_value(Flags(0)).unwrap(), json!([]));
        for (bit, name) in Flags::NAMES {
            assert_eq!(serde_json::to_value(Flags(bit)).unwrap(), json!([name]));
        }
        assert_eq!(
            serde_json::to_value(Flags(tcp_flags::SYN | tcp_flags::ACK)).unwrap(),
            json!(["SYN", "ACK"])
        );
    }

    #[test]
    fn packet_types_map_to_directions() {
        assert_eq!(Direction::from_pkt_type(0), Direction::Ingress);
        assert_eq!(Direction::from_pkt_type(4), Direction::Egress);
        for broadcast_multicast_otherhost in 1..=3u32 {
            assert_eq!(
                Direction::from_pkt_type(broadcast_multicast_otherhost),
                Direction::Ingress
            );
        }
    }
}
