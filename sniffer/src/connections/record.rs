//! The connection record (docs/specs/OUTPUT_FORMAT.md, "Connection records"): what a finished
//! (or, for an interim report, a still open) connection adds up to, as one flat JSON object whose
//! names also work as ClickHouse columns.
//!
//! Every tracked connection gives at least one record, so a connection of a few packets pays for
//! its record in each of them: the fields are typed values made without an allocation
//! ([`ConnectionRecord::fields`]), and the JSON is written straight into the body, as packet
//! records are (with `serde_json` values, one record took 2 µs to write).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cli_support::time::{Rfc3339Writer, Timestamp};

use super::{
    analysis::{Analysis, End, Endpoint, Key, Sent},
    rtt::Samples,
    zeek::History,
};
use crate::{
    capture::clock::WallClock,
    counts::Counts,
    encode::text::{Line, in_place},
};

/// A connection leaving the tracker, or reported while open.
#[derive(Clone, Debug)]
pub struct Report {
    /// Its endpoints.
    pub key: Key,
    /// Everything its packets said.
    pub analysis: Analysis,
    /// Why it left the tracker; `None` for an interim report of an open connection.
    pub end: Option<End>,
    /// When the report was made, monotonic nanoseconds.
    pub at_ns: u64,
}

/// One connection record, ready to be written in any output format. It keeps the report
/// (about 600 bytes) and makes the fields only when the record is written, so that records
/// waiting for delivery cost little more memory than the connections did.
#[derive(Clone, Debug)]
pub struct ConnectionRecord {
    /// When the record was made.
    pub ts: Timestamp,
    report: Report,
    clock: WallClock,
}

/// The value of one field, as every output format writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// No value: JSON `null` (left out of OTLP attributes).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An unsigned integer.
    Number(u64),
    /// One of the record's fixed words (`closed`, `fin`, `SF` …): a string no format escapes.
    Word(&'static str),
    /// Zeek's history letters: a string no format escapes.
    History(History),
    /// An instant, written as RFC 3339 text.
    Time(Timestamp),
    /// An address, written as text.
    Ip(IpAddr),
}

/// How many fields a connection record has.
pub const FIELD_COUNT: usize = 41;

/// The names of a record's fields in the contract's order (`type` first), which is the order
/// of the values [`ConnectionRecord::fields`] gives.
pub const FIELD_NAMES: [&str; FIELD_COUNT] = [
    "type",
    "ts",
    "state",
    "end_reason",
    "rst_by",
    "conn_state",
    "history",
    "first_seen",
    "last_seen",
    "ip_version",
    "client_ip",
    "client_port",
    "server_ip",
    "server_port",
    "handshake_seen",
    "syn_to_synack_ns",
    "synack_to_ack_ns",
    "client_packets",
    "client_bytes",
    "client_retransmits",
    "client_out_of_order",
    "client_zero_windows",
    "client_dup_acks",
    "client_window_min",
    "client_window_max",
    "client_ack_rtt_samples",
    "client_ack_rtt_min_ns",
    "client_ack_rtt_mean_ns",
    "client_ack_rtt_max_ns",
    "server_packets",
    "server_bytes",
    "server_retransmits",
    "server_out_of_order",
    "server_zero_windows",
    "server_dup_acks",
    "server_window_min",
    "server_window_max",
    "server_ack_rtt_samples",
    "server_ack_rtt_min_ns",
    "server_ack_rtt_mean_ns",
    "server_ack_rtt_max_ns",
];

/// The fields before the per-side ones, and the fields of one side.
const HEAD: usize = 17;
const SIDE: usize = 12;

/// Room for a name's JSON text: the comma before it, its quotes (escaped: two bytes each) and
/// the colon.
const NAME_ROOM: usize = 32;

/// Each field's name as JSON text (`,"name":`, no comma before the first), padded to a fixed
/// size so that it is copied in a few moves rather than by a call to `memcpy`; with `escaped`,
/// its quotes are escaped.
const fn name_texts(escaped: bool) -> [([u8; NAME_ROOM], u8); FIELD_COUNT] {
    let mut texts = [([0u8; NAME_ROOM], 0u8); FIELD_COUNT];
    let mut i = 0;
    while i < FIELD_COUNT {
        let (text, len) = &mut texts[i];
        let mut n = 0;
        if i > 0 {
            text[n] = b',';
            n += 1;
        }
        let name = FIELD_NAMES[i].as_bytes();
        let mut j = 0;
        // The opening quote, the name, the closing quote.
        while j < name.len() + 2 {
            if j == 0 || j == name.len() + 1 {
                if escaped {
                    text[n] = b'\\';
                    n += 1;
                }
                text[n] = b'"';
            } else {
                text[n] = name[j - 1];
            }
            n += 1;
            j += 1;
        }
        text[n] = b':';
        *len = n as u8 + 1;
        i += 1;
    }
    texts
}

const NAMES_JSON: [([u8; NAME_ROOM], u8); FIELD_COUNT] = name_texts(false);
const NAMES_ESCAPED: [([u8; NAME_ROOM], u8); FIELD_COUNT] = name_texts(true);

/// Room for the longest JSON text of a record (every field at its longest, quotes escaped,
/// with room for the fixed-size copies past its end): [`ConnectionRecord::write_json`]
/// reserves it, and panics past it.
const JSON_ROOM: usize = 4096;

/// The longest value's text, with its quotes escaped: an IPv6 address (and the byte
/// `Line::ip` writes past it), next to a time (30), 20 digits or a full history.
const VALUE_ROOM: usize = 2 * 2 + 45 + 1;

const _: () = assert!(
    2 + FIELD_COUNT * (NAME_ROOM + VALUE_ROOM) <= JSON_ROOM
        && VALUE_ROOM >= 2 * 2 + Timestamp::RFC3339_LEN
        && VALUE_ROOM >= 2 * 2 + 1 + super::zeek::HISTORY_MAX
);

fn ip(ip_version: u8, endpoint: &Endpoint) -> IpAddr {
    if ip_version == 6 {
        IpAddr::V6(Ipv6Addr::from(endpoint.addr))
    } else {
        let [a, b, c, d, ..] = endpoint.addr;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }
}

fn difference(later: Option<u64>, earlier: Option<u64>) -> Field {
    match (later, earlier) {
        (Some(later), Some(earlier)) => Field::Number(later.saturating_sub(earlier)),
        _ => Field::Null,
    }
}

/// The per-side counters and round trips, in [`FIELD_NAMES`]' order for one side.
fn side(sent: &Sent, rtt: &Samples) -> [Field; SIDE] {
    let Sent {
        packets,
        bytes,
        retransmits,
        out_of_order,
        zero_windows,
        dup_acks,
        window,
    } = *sent;
    let (min, max) = window.map_or((Field::Null, Field::Null), |(min, max)| {
        (Field::Number(min.into()), Field::Number(max.into()))
    });
    let [rtt_min, rtt_mean, rtt_max] = rtt
        .summary_ns()
        .map_or([Field::Null; 3], |(min, mean, max)| {
            [min, mean, max].map(Field::Number)
        });
    [
        Field::Number(packets),
        Field::Number(bytes),
        Field::Number(retransmits.into()),
        Field::Number(out_of_order.into()),
        Field::Number(zero_windows.into()),
        Field::Number(dup_acks.into()),
        min,
        max,
        Field::Number(rtt.count.into()),
        rtt_min,
        rtt_mean,
        rtt_max,
    ]
}

impl ConnectionRecord {
    /// The record of `report`, its monotonic times placed on `clock`.
    #[must_use]
    pub fn new(report: Report, clock: &WallClock) -> Self {
        Self {
            ts: clock.wall(report.at_ns),
            report,
            clock: *clock,
        }
    }

    /// The values of the record's fields, named by [`FIELD_NAMES`] in the same order.
    #[must_use]
    pub fn fields(&self) -> [Field; FIELD_COUNT] {
        let Report {
            key,
            analysis,
            end,
            at_ns,
        } = &self.report;
        let (client, handshake_seen) = analysis.client();
        let server = client.other();
        let wall = |ns: u64| Field::Time(self.clock.wall(ns));
        let (state, reason, rst_by) = match end {
            None => ("open", Field::Null, Field::Null),
            Some(end) => {
                let reason = Counts::REASONS[super::closed_index(*end)];
                let rst_by = match end {
                    End::Rst(side) if *side == client => Field::Word("client"),
                    End::Rst(_) => Field::Word("server"),
                    _ => Field::Null,
                };
                ("closed", Field::Word(reason), rst_by)
            }
        };
        let shake = &analysis.handshake;
        let (conn_state, history) = analysis.zeek();
        let (client_end, server_end) = (key.endpoint(client), key.endpoint(server));
        let head: [Field; HEAD] = [
            Field::Word("connection"),
            wall(*at_ns),
            Field::Word(state),
            reason,
            rst_by,
            Field::Word(conn_state),
            Field::History(history),
            wall(analysis.first_ns),
            wall(analysis.last_ns),
            Field::Number(key.ip_version.into()),
            Field::Ip(ip(key.ip_version, &client_end)),
            Field::Number(client_end.port.into()),
            Field::Ip(ip(key.ip_version, &server_end)),
            Field::Number(server_end.port.into()),
            Field::Bool(handshake_seen),
            difference(shake.synack_ns, shake.syn_ns),
            difference(shake.ack_ns, shake.synack_ns),
        ];
        let clients = side(analysis.sent(client), analysis.ack_rtt(client));
        let servers = side(analysis.sent(server), analysis.ack_rtt(server));
        std::array::from_fn(|i| match i {
            _ if i < HEAD => head[i],
            _ if i < HEAD + SIDE => clients[i - HEAD],
            _ => servers[i - HEAD - SIDE],
        })
    }

    /// Appends the record as one JSON object, no newline; `times` keeps the text of the last
    /// second written between calls.
    ///
    /// # Examples
    ///
    /// ```
    /// use cli_support::time::Rfc3339Writer;
    /// use sniffer::{capture::clock::WallClock, connections::{analysis::{Analysis, Key},
    ///               record::{ConnectionRecord, Report}}};
    /// use sniffer_common::{PacketRecord, tcp_flags};
    ///
    /// let syn = PacketRecord { ip_version: 4, src_port: 51000, dst_port: 8080,
    ///                          tcp_flags: tcp_flags::SYN, ..PacketRecord::default() };
    /// let (key, side) = Key::of(&syn);
    /// let mut analysis = Analysis::new(side, 0);
    /// analysis.observe(side, &syn);
    /// let report = Report { key, analysis, end: None, at_ns: 0 };
    /// let mut json = Vec::new();
    /// let record = ConnectionRecord::new(report, &WallClock::from_offset(0));
    /// record.write_json(&mut json, &mut Rfc3339Writer::default());
    /// let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    /// assert_eq!(value["type"], "connection");
    /// assert_eq!(value["server_port"], 8080);
    /// assert_eq!(value["client_packets"], 1);
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>, times: &mut Rfc3339Writer) {
        in_place(out, JSON_ROOM, |line| self.json::<false>(line, times));
    }

    /// Appends the record's JSON as the content of a JSON string (its quotes escaped), e.g. the
    /// line of a Loki value: nothing else in it needs escaping.
    pub fn write_escaped_json(&self, out: &mut Vec<u8>, times: &mut Rfc3339Writer) {
        in_place(out, JSON_ROOM, |line| self.json::<true>(line, times));
    }

    /// The JSON text, quotes escaped when `ESCAPED`. Every piece is copied at a size known when
    /// compiling: with `memcpy` calls for its short names and quotes, a record took four times
    /// as long.
    fn json<const ESCAPED: bool>(&self, line: &mut Line<'_>, times: &mut Rfc3339Writer) {
        let (names, quote): (_, &[u8]) = if ESCAPED {
            (&NAMES_ESCAPED, b"\\\"")
        } else {
            (&NAMES_JSON, b"\"")
        };
        line.byte(b'{');
        for (i, value) in self.fields().into_iter().enumerate() {
            // A record is some 16 lines of text: each asked for ahead of its stores.
            if i % 4 == 0 {
                line.prefetch_ahead();
            }
            let (name, len) = &names[i];
            line.put_prefix(name, usize::from(*len));
            match value {
                Field::Null => line.put(b"null"),
                Field::Bool(true) => line.put(b"true"),
                Field::Bool(false) => line.put(b"false"),
                Field::Number(n) => line.number64(n),
                Field::Word(word) => {
                    line.put(quote);
                    for &byte in word.as_bytes() {
                        line.byte(byte);
                    }
                    line.put(quote);
                }
                Field::History(history) => {
                    line.put(quote);
                    let (letters, len) = history.padded();
                    line.put_prefix(letters, len);
                    line.put(quote);
                }
                Field::Time(ts) => {
                    line.put(quote);
                    line.time(times, ts);
                    line.put(quote);
                }
                Field::Ip(ip) => {
                    line.put(quote);
                    line.ip(&ip);
                    line.put(quote);
                }
            }
        }
        line.byte(b'}');
    }
}

/// The record of a connection of which one SYN from port `port` to 8080 was seen: what unit
/// tests batch and encode.
#[cfg(test)]
pub(crate) fn test_connection(port: u16) -> ConnectionRecord {
    let syn = sniffer_common::PacketRecord {
        ip_version: 4,
        src_port: port,
        dst_port: 8080,
        tcp_flags: sniffer_common::tcp_flags::SYN,
        ..sniffer_common::PacketRecord::default()
    };
    let (key, side) = Key::of(&syn);
    let mut analysis = Analysis::new(side, 0);
    analysis.observe(side, &syn);
    let report = Report {
        key,
        analysis,
        end: None,
        at_ns: 0,
    };
    ConnectionRecord::new(report, &WallClock::from_offset(0))
}

#[cfg(test)]
mod tests {
    use sniffer_common::{PacketRecord, addr_words, tcp_flags};

    use super::*;

    fn v4(last: u8) -> [u32; 4] {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&[10, 0, 0, last]);
        addr_words(bytes)
    }

    #[test]
    fn a_reset_connection_names_its_client_server_and_times() {
        // The client has the higher address: roles come from the SYN, not from the key order.
        let syn = PacketRecord {
            ts_ns: 1_000,
            ip_version: 4,
            src_addr: v4(9),
            src_port: 40000,
            dst_addr: v4(2),
            dst_port: 8080,
            seq: 100,
            window: 64240,
            tcp_flags: tcp_flags::SYN,
            ..PacketRecord::default()
        };
        let synack = PacketRecord {
            ts_ns: 51_000,
            src_addr: v4(2),
            src_port: 8080,
            dst_addr: v4(9),
            dst_port: 40000,
            seq: 700,
            ack: 101,
            tcp_flags: tcp_flags::SYN | tcp_flags::ACK,
            ..syn
        };
        let rst = PacketRecord {
            ts_ns: 90_000,
            seq: 701,
            tcp_flags: tcp_flags::RST,
            ..synack
        };
        let (key, side) = Key::of(&syn);
        let mut analysis = Analysis::new(side, syn.ts_ns);
        for raw in [syn, synack, rst] {
            analysis.observe(Key::of(&raw).1, &raw);
        }
        let report = Report {
            key,
            end: analysis.end,
            analysis,
            at_ns: 1_000_000_000,
        };
        let mut json = Vec::new();
        ConnectionRecord::new(report, &WallClock::from_offset(0))
            .write_json(&mut json, &mut Rfc3339Writer::default());
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "type": "connection", "ts": "1970-01-01T00:00:01.000000000Z",
                "state": "closed", "end_reason": "rst", "rst_by": "server",
                "conn_state": "RSTR", "history": "Shr",
                "first_seen": "1970-01-01T00:00:00.000001000Z",
                "last_seen": "1970-01-01T00:00:00.000090000Z",
                "ip_version": 4, "client_ip": "10.0.0.9", "client_port": 40000,
                "server_ip": "10.0.0.2", "server_port": 8080, "handshake_seen": true,
                "syn_to_synack_ns": 50000, "synack_to_ack_ns": null,
                "client_packets": 1, "client_bytes": 0, "client_retransmits": 0,
                "client_out_of_order": 0, "client_zero_windows": 0, "client_dup_acks": 0,
                "client_window_min": null, "client_window_max": null,
                "client_ack_rtt_samples": 0, "client_ack_rtt_min_ns": null,
                "client_ack_rtt_mean_ns": null, "client_ack_rtt_max_ns": null,
                "server_packets": 2, "server_bytes": 0, "server_retransmits": 0,
                "server_out_of_order": 0, "server_zero_windows": 0, "server_dup_acks": 0,
                "server_window_min": 64240, "server_window_max": 64240,
                "server_ack_rtt_samples": 1, "server_ack_rtt_min_ns": 50000,
                "server_ack_rtt_mean_ns": 50000, "server_ack_rtt_max_ns": 50000,
            })
        );
        let text = String::from_utf8(json).unwrap();
        assert!(
            text.starts_with("{\"type\":\"connection\",\"ts\":"),
            "{text}"
        );
    }

    #[test]
    fn escaped_json_is_the_json_with_its_quotes_escaped() {
        let syn = PacketRecord {
            ts_ns: 1_000,
            ip_version: 6,
            src_addr: addr_words([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]),
            src_port: 40000,
            dst_port: 8080,
            seq: 100,
            window: 64240,
            tcp_flags: tcp_flags::SYN,
            ..PacketRecord::default()
        };
        let (key, side) = Key::of(&syn);
        let mut analysis = Analysis::new(side, syn.ts_ns);
        analysis.observe(side, &syn);
        let record = ConnectionRecord::new(
            Report {
                key,
                analysis,
                end: Some(End::Timeout),
                at_ns: 2_000,
            },
            &WallClock::from_offset(0),
        );
        let (mut json, mut escaped) = (Vec::new(), Vec::new());
        record.write_json(&mut json, &mut Rfc3339Writer::default());
        record.write_escaped_json(&mut escaped, &mut Rfc3339Writer::default());
        let as_string = serde_json::to_string(std::str::from_utf8(&json).unwrap()).unwrap();
        assert_eq!(
            format!("\"{}\"", String::from_utf8(escaped).unwrap()),
            as_string
        );
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["client_ip"], "fd00::9");
        assert_eq!(value["end_reason"], "timeout");
        assert_eq!(value["history"], "S");
        assert_eq!(
            value.as_object().unwrap().keys().count(),
            FIELD_COUNT,
            "{value}"
        );
    }
}
