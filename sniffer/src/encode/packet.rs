//! The JSON record (docs/specs/OUTPUT_FORMAT.md) made from a kernel [`PacketRecord`].
//!
//! Records are written as JSON by hand rather than through `serde`: one is written per captured
//! packet, and a generic serializer (escaping every key, formatting numbers and addresses through
//! `core::fmt`) cost 640 ns per record against about 65 ns here, the kernel record's conversion
//! included (`cargo bench -p sniffer --bench encode`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cli_support::time::{Rfc3339Writer, Timestamp};
use sniffer_common::{PACKET_OUTGOING, PacketRecord, tcp_flags};

use super::{
    digits::Decimal,
    text::{Line, in_place},
};
use crate::capture::clock::WallClock;

/// Whether the packet arrived on the interface or was sent through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// TCP flags, written as a list of names in header bit order.
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

/// One matched packet, as emitted on stdout and inside batches.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Length of the longest record [`Record::write_json`] writes: two full-length IPv6
    /// addresses, every flag, 10-digit numbers, and a 3-digit `ip_version` (a record that is not
    /// the kernel program's shows its version byte as it is).
    pub const MAX_JSON_LEN: usize = 363;

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
            headers_len: _,
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

    /// Appends the record as one JSON object, fields in the contract's order, no newline;
    /// `times` keeps the text of the last second it wrote (see [`Rfc3339Writer`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use sniffer::{capture::clock::WallClock, encode::packet::Record};
    /// use cli_support::time::Rfc3339Writer;
    /// use sniffer_common::PacketRecord;
    ///
    /// let raw = PacketRecord { ip_version: 4, dst_port: 8080, ..PacketRecord::default() };
    /// let mut json = Vec::new();
    /// let record = Record::from_kernel(&raw, &WallClock::from_offset(0));
    /// record.write_json(&mut json, &mut Rfc3339Writer::default());
    /// let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    /// assert_eq!(value["dst_port"], 8080);
    /// assert_eq!(value["ts"], "1970-01-01T00:00:00.000000000Z");
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>, times: &mut Rfc3339Writer) {
        in_place(out, Self::MAX_JSON_LEN, |line| {
            self.json::<Plain>(line, times);
        });
    }

    /// Length of the longest text [`Record::write_escaped_json`] writes.
    pub const MAX_ESCAPED_JSON_LEN: usize = 413;

    /// Appends the record's JSON as the content of a JSON string (its quotes escaped), e.g. the
    /// line of a Loki value.
    pub fn write_escaped_json(&self, out: &mut Vec<u8>, times: &mut Rfc3339Writer) {
        in_place(out, Self::MAX_ESCAPED_JSON_LEN, |line| {
            self.json::<Escaped>(line, times);
        });
    }

    /// The record's JSON in `style`: the text is the same but for how its quotes are written.
    #[inline(always)]
    fn json<S: Style>(&self, line: &mut Line<'_>, times: &mut Rfc3339Writer) {
        let Self {
            ts,
            direction,
            ip_version,
            src_ip,
            src_port,
            dst_ip,
            dst_port,
            flags,
            seq,
            ack,
            window,
            payload_len,
            len,
        } = self;
        let (date, nanos) = times.split(*ts);
        // Nine numbers' digits, made two at a time before any is written.
        let [seq, ack] = Decimal::pair(*seq, *ack);
        let [payload_len, len] = Decimal::pair(*payload_len, *len);
        let [src_port, dst_port] = Decimal::pair(u32::from(*src_port), u32::from(*dst_port));
        let [window, nanos] = Decimal::pair(u32::from(*window), nanos);
        line.put(S::TS);
        line.time_parts(date, nanos);
        line.put(match direction {
            Direction::Ingress => S::INGRESS,
            Direction::Egress => S::EGRESS,
        });
        line.small(*ip_version);
        line.put(S::SRC_IP);
        line.ip(src_ip);
        line.put(S::SRC_PORT);
        line.decimal(src_port);
        line.put(S::DST_IP);
        line.ip(dst_ip);
        line.put(S::DST_PORT);
        line.decimal(dst_port);
        line.put(S::FLAGS);
        let (list, list_len) = &S::FLAG_LISTS[usize::from(flags.0)];
        line.put_prefix(list, usize::from(*list_len));
        line.put(S::SEQ);
        line.decimal(seq);
        line.put(S::ACK);
        line.decimal(ack);
        line.put(S::WINDOW);
        line.decimal(window);
        line.put(S::PAYLOAD_LEN);
        line.decimal(payload_len);
        line.put(S::LEN);
        line.decimal(len);
        line.put(b"}");
    }
}

/// The fixed text of a record's JSON, with its quotes written one way.
trait Style {
    const TS: &'static [u8];
    const INGRESS: &'static [u8];
    const EGRESS: &'static [u8];
    const SRC_IP: &'static [u8];
    const SRC_PORT: &'static [u8];
    const DST_IP: &'static [u8];
    const DST_PORT: &'static [u8];
    const FLAGS: &'static [u8];
    /// For each flags byte, the quoted names of its flags, comma-separated.
    const FLAG_LISTS: [([u8; FLAG_LIST_ROOM], u8); 256];
    const SEQ: &'static [u8];
    const ACK: &'static [u8];
    const WINDOW: &'static [u8];
    const PAYLOAD_LEN: &'static [u8];
    const LEN: &'static [u8];
}

/// Defines a [`Style`] whose quote is `$q`, from one template of the record's text.
macro_rules! style {
    ($name:ident, $q:literal) => {
        struct $name;

        impl Style for $name {
            const TS: &'static [u8] = concat!("{", $q, "ts", $q, ":", $q).as_bytes();
            const INGRESS: &'static [u8] = concat!(
                $q,
                ",",
                $q,
                "direction",
                $q,
                ":",
                $q,
                "ingress",
                $q,
                ",",
                $q,
                "ip_version",
                $q,
                ":"
            )
            .as_bytes();
            const EGRESS: &'static [u8] = concat!(
                $q,
                ",",
                $q,
                "direction",
                $q,
                ":",
                $q,
                "egress",
                $q,
                ",",
                $q,
                "ip_version",
                $q,
                ":"
            )
            .as_bytes();
            const SRC_IP: &'static [u8] = concat!(",", $q, "src_ip", $q, ":", $q).as_bytes();
            const SRC_PORT: &'static [u8] = concat!($q, ",", $q, "src_port", $q, ":").as_bytes();
            const DST_IP: &'static [u8] = concat!(",", $q, "dst_ip", $q, ":", $q).as_bytes();
            const DST_PORT: &'static [u8] = concat!($q, ",", $q, "dst_port", $q, ":").as_bytes();
            const FLAGS: &'static [u8] = concat!(",", $q, "flags", $q, ":[").as_bytes();
            const FLAG_LISTS: [([u8; FLAG_LIST_ROOM], u8); 256] = flag_lists($q.as_bytes());
            const SEQ: &'static [u8] = concat!("],", $q, "seq", $q, ":").as_bytes();
            const ACK: &'static [u8] = concat!(",", $q, "ack", $q, ":").as_bytes();
            const WINDOW: &'static [u8] = concat!(",", $q, "window", $q, ":").as_bytes();
            const PAYLOAD_LEN: &'static [u8] = concat!(",", $q, "payload_len", $q, ":").as_bytes();
            const LEN: &'static [u8] = concat!(",", $q, "len", $q, ":").as_bytes();
        }
    };
}

/// Room for the longest list of quoted flag names: eight names of three letters, each in
/// escaped quotes (`\"`), seven commas.
const FLAG_LIST_ROOM: usize = 8 * (3 + 2 * 2) + 7;

/// The quoted, comma-separated names of the flags of every flags byte, written once at compile
/// time: one copy per record instead of a loop over eight bits.
const fn flag_lists(quote: &[u8]) -> [([u8; FLAG_LIST_ROOM], u8); 256] {
    let mut lists = [([0u8; FLAG_LIST_ROOM], 0u8); 256];
    let mut byte = 0;
    while byte < 256 {
        let (text, len) = &mut lists[byte];
        let mut n = 0;
        let mut bit = 0;
        while bit < 8 {
            if byte & (1 << bit) != 0 {
                if n > 0 {
                    text[n] = b',';
                    n += 1;
                }
                // `Flags::NAMES` lists the flags in bit order (checked below).
                let name = Flags::NAMES[bit].1.as_bytes();
                let mut part = 0;
                while part < 3 {
                    let chunk: &[u8] = match part {
                        0 | 2 => quote,
                        _ => name,
                    };
                    let mut i = 0;
                    while i < chunk.len() {
                        text[n] = chunk[i];
                        n += 1;
                        i += 1;
                    }
                    part += 1;
                }
            }
            bit += 1;
        }
        *len = n as u8;
        byte += 1;
    }
    lists
}

const _: () = {
    let mut bit = 0;
    while bit < 8 {
        assert!(Flags::NAMES[bit].0 == 1 << bit);
        bit += 1;
    }
};

style!(Plain, "\"");
style!(Escaped, "\\\"");

fn ip(version: u8, bytes: [u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

/// An IPv4 packet's record to `port`, everything else zero: what unit tests batch and encode.
#[cfg(test)]
pub(crate) fn test_record(port: u16) -> Record {
    let raw = PacketRecord {
        ip_version: 4,
        dst_port: port,
        ..PacketRecord::default()
    };
    Record::from_kernel(&raw, &WallClock::from_offset(0))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use sniffer_common::addr_words;

    use super::*;

    fn to_value(record: &Record) -> Value {
        let mut out = Vec::new();
        record.write_json(&mut out, &mut Rfc3339Writer::default());
        serde_json::from_slice(&out).unwrap()
    }

    fn with_flags(bits: u8) -> Value {
        let mut raw = raw_v4();
        raw.tcp_flags = bits;
        to_value(&Record::from_kernel(&raw, &CLOCK))["flags"].clone()
    }

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
            headers_len: 0,
        }
    }

    #[test]
    fn ipv4_record_matches_the_contract_example() {
        let value = to_value(&Record::from_kernel(&raw_v4(), &CLOCK));
        assert_eq!(
            value,
            json!({"ts":"2026-11-27T18:44:56.123456789Z","direction":"ingress","ip_version":4,
                   "src_ip":"10.0.0.7","src_port":51234,"dst_ip":"10.0.0.9","dst_port":8080,
                   "flags":["SYN"],"seq":1438223591u32,"ack":0,"window":64240,"payload_len":0,"len":74})
        );
    }

    #[test]
    fn field_order_is_stable() {
        let mut line = Vec::new();
        Record::from_kernel(&raw_v4(), &CLOCK).write_json(&mut line, &mut Rfc3339Writer::default());
        let line = String::from_utf8(line).unwrap();
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
        let value = to_value(&Record::from_kernel(&raw, &CLOCK));
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
            with_flags(0xff),
            json!(["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"])
        );
        assert_eq!(with_flags(0), json!([]));
        for (bit, name) in Flags::NAMES {
            assert_eq!(with_flags(bit), json!([name]));
        }
        assert_eq!(
            with_flags(tcp_flags::SYN | tcp_flags::ACK),
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

    /// Found by the `record_decode` fuzz target: the bound first assumed a 1-digit version.
    #[test]
    fn escaped_json_is_the_json_as_a_string() {
        let mut times = Rfc3339Writer::default();
        let record = Record::from_kernel(&raw_v4(), &CLOCK);
        let (mut plain, mut escaped) = (Vec::new(), b"\"".to_vec());
        record.write_json(&mut plain, &mut times);
        record.write_escaped_json(&mut escaped, &mut times);
        escaped.push(b'"');
        let unquoted: String = serde_json::from_slice(&escaped).unwrap();
        assert_eq!(unquoted.as_bytes(), plain);
    }

    #[test]
    fn longest_record_is_max_json_len() {
        let mut raw = raw_v4();
        raw.ip_version = 255;
        raw.src_addr = addr_words([0xab; 16]);
        raw.dst_addr = addr_words([0xcd; 16]);
        raw.tcp_flags = 0xff;
        raw.pkt_type = 0;
        (raw.seq, raw.ack, raw.len, raw.payload_len) = (u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        (raw.src_port, raw.dst_port, raw.window) = (65_535, 65_535, 65_535);
        let mut line = Vec::new();
        let record = Record::from_kernel(&raw, &CLOCK);
        record.write_json(&mut line, &mut Rfc3339Writer::default());
        assert_eq!(line.len(), Record::MAX_JSON_LEN);
        line.clear();
        record.write_escaped_json(&mut line, &mut Rfc3339Writer::default());
        assert_eq!(line.len(), Record::MAX_ESCAPED_JSON_LEN);
    }

    /// The hand-written encoder against values built independently with `serde_json`, over
    /// random records (extreme numbers and numbers of every length, every flag combination, IPv4
    /// and IPv6 incl. compressed and IPv4-mapped forms).
    #[test]
    fn random_records_match_an_independent_encoding() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut line = Vec::new();
        let mut times = Rfc3339Writer::default();
        for _ in 0..20_000 {
            let six = rng.bool();
            let mut addr = [0u8; 16];
            if six {
                // Mostly zero words so that `::` compression and `::ffff:a.b.c.d` forms occur.
                for word in addr.chunks_mut(2) {
                    if rng.u8(..4) == 0 {
                        word.copy_from_slice(&rng.u16(..).to_be_bytes());
                    }
                }
                if rng.u8(..8) == 0 {
                    addr[..12].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
                }
            } else {
                rng.fill(&mut addr[..4]);
            }
            fn number(rng: &mut fastrand::Rng, max: u32) -> u32 {
                match rng.u8(..4) {
                    0 => 0,
                    1 => max,
                    2 => rng.u32(..=max),
                    // Every length of number, each digit count about as often.
                    _ => rng.u32(..=max) >> rng.u32(0..32),
                }
            }
            let raw = PacketRecord {
                ts_ns: rng.u64(..),
                src_addr: addr_words(addr),
                dst_addr: addr_words(addr.map(|b| b.rotate_left(3))),
                seq: number(&mut rng, u32::MAX),
                ack: number(&mut rng, u32::MAX),
                len: number(&mut rng, u32::MAX),
                payload_len: number(&mut rng, u32::MAX),
                src_port: number(&mut rng, 65_535) as u16,
                dst_port: number(&mut rng, 65_535) as u16,
                window: number(&mut rng, 65_535) as u16,
                tcp_flags: rng.u8(..),
                ip_version: if six { 6 } else { 4 },
                pkt_type: rng.u32(..6),
                headers_len: 0,
            };
            let record = Record::from_kernel(&raw, &CLOCK);
            let expected = json!({
                "ts": record.ts.to_string(),
                "direction": if raw.pkt_type == PACKET_OUTGOING { "egress" } else { "ingress" },
                "ip_version": raw.ip_version,
                "src_ip": record.src_ip.to_string(),
                "src_port": raw.src_port,
                "dst_ip": record.dst_ip.to_string(),
                "dst_port": raw.dst_port,
                "flags": Flags(raw.tcp_flags).names().collect::<Vec<_>>(),
                "seq": raw.seq,
                "ack": raw.ack,
                "window": raw.window,
                "payload_len": raw.payload_len,
                "len": raw.len,
            });
            line.clear();
            record.write_json(&mut line, &mut times);
            let parsed: Value = serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&line)));
            assert_eq!(parsed, expected, "{raw:?}");
        }
    }
}
