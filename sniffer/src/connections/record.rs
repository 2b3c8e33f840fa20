//! The connection record (docs/specs/OUTPUT_FORMAT.md, "Connection records"): what a finished
//! (or, for an interim report, a still open) connection adds up to, as one flat JSON object whose
//! names also work as ClickHouse columns.
//!
//! Connection records are few (one per connection, not per packet), so they are written with
//! `serde_json` rather than by hand as packet records are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cli_support::time::Timestamp;
use serde_json::Value;

use super::{
    analysis::{Analysis, End, Endpoint, Key, Sent},
    rtt::Samples,
};
use crate::{capture::clock::WallClock, counts::Counts};

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

fn ip(ip_version: u8, endpoint: &Endpoint) -> IpAddr {
    if ip_version == 6 {
        IpAddr::V6(Ipv6Addr::from(endpoint.addr))
    } else {
        let [a, b, c, d, ..] = endpoint.addr;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }
}

fn difference(later: Option<u64>, earlier: Option<u64>) -> Value {
    match (later, earlier) {
        (Some(later), Some(earlier)) => Value::from(later.saturating_sub(earlier)),
        _ => Value::Null,
    }
}

/// The per-side counters and round trips, prefixed by `client_` or `server_`.
fn push_side(
    fields: &mut Vec<(&'static str, Value)>,
    names: &[&'static str; 12],
    sent: &Sent,
    rtt: &Samples,
) {
    let Sent {
        packets,
        bytes,
        retransmits,
        out_of_order,
        zero_windows,
        dup_acks,
        window,
    } = *sent;
    let (min, max) = window.map_or((Value::Null, Value::Null), |(min, max)| {
        (Value::from(min), Value::from(max))
    });
    let [rtt_min, rtt_mean, rtt_max] = rtt.summary_ns().map_or(
        [Value::Null, Value::Null, Value::Null],
        |(min, mean, max)| [Value::from(min), Value::from(mean), Value::from(max)],
    );
    for (name, value) in names.iter().zip([
        Value::from(packets),
        Value::from(bytes),
        Value::from(retransmits),
        Value::from(out_of_order),
        Value::from(zero_windows),
        Value::from(dup_acks),
        min,
        max,
        Value::from(rtt.count),
        rtt_min,
        rtt_mean,
        rtt_max,
    ]) {
        fields.push((name, value));
    }
}

const CLIENT: [&str; 12] = [
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
];
const SERVER: [&str; 12] = [
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

    /// The record's fields in the contract's order (`type` first).
    #[must_use]
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let Report {
            key,
            analysis,
            end,
            at_ns,
        } = &self.report;
        let (client, handshake_seen) = analysis.client();
        let server = client.other();
        let wall = |ns: u64| Value::from(self.clock.wall(ns).to_string());
        let (state, reason, rst_by) = match end {
            None => ("open", Value::Null, Value::Null),
            Some(end) => {
                let reason = Counts::REASONS[super::closed_index(*end)];
                let rst_by = match end {
                    End::Rst(side) if *side == client => Value::from("client"),
                    End::Rst(_) => Value::from("server"),
                    _ => Value::Null,
                };
                ("closed", Value::from(reason), rst_by)
            }
        };
        let shake = &analysis.handshake;
        let (conn_state, history) = analysis.zeek();
        let mut fields = vec![
            ("type", Value::from("connection")),
            ("ts", wall(*at_ns)),
            ("state", Value::from(state)),
            ("end_reason", reason),
            ("rst_by", rst_by),
            ("conn_state", Value::from(conn_state)),
            ("history", Value::from(history)),
            ("first_seen", wall(analysis.first_ns)),
            ("last_seen", wall(analysis.last_ns)),
            ("ip_version", Value::from(key.ip_version)),
            (
                "client_ip",
                Value::from(ip(key.ip_version, &key.endpoint(client)).to_string()),
            ),
            ("client_port", Value::from(key.endpoint(client).port)),
            (
                "server_ip",
                Value::from(ip(key.ip_version, &key.endpoint(server)).to_string()),
            ),
            ("server_port", Value::from(key.endpoint(server).port)),
            ("handshake_seen", Value::from(handshake_seen)),
            (
                "syn_to_synack_ns",
                difference(shake.synack_ns, shake.syn_ns),
            ),
            (
                "synack_to_ack_ns",
                difference(shake.ack_ns, shake.synack_ns),
            ),
        ];
        push_side(
            &mut fields,
            &CLIENT,
            analysis.sent(client),
            analysis.ack_rtt(client),
        );
        push_side(
            &mut fields,
            &SERVER,
            analysis.sent(server),
            analysis.ack_rtt(server),
        );
        fields
    }

    /// Appends the record as one JSON object, no newline.
    ///
    /// # Examples
    ///
    /// ```
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
    /// ConnectionRecord::new(report, &WallClock::from_offset(0)).write_json(&mut json);
    /// let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    /// assert_eq!(value["type"], "connection");
    /// assert_eq!(value["server_port"], 8080);
    /// assert_eq!(value["client_packets"], 1);
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Serializing JSON values into memory cannot fail.
        let _ = serde_json::to_writer(out, &OrderedObject(&self.fields()));
    }
}

/// Serializes fields as a JSON object in their order (a `Map` would sort them).
struct OrderedObject<'a>(&'a [(&'static str, Value)]);

impl serde::Serialize for OrderedObject<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
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
        ConnectionRecord::new(report, &WallClock::from_offset(0)).write_json(&mut json);
        let value: Value = serde_json::from_slice(&json).unwrap();
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
}
