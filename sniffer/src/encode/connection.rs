//! Connection records in every output format. They are few (one per connection), so they are
//! written through `serde_json` and the generic protobuf helpers rather than by hand.
//!
//! - `batch`: elements of `records`, beside packet records; `type` tells them apart.
//! - `ndjson`: one line each, with the agent's fields as packet lines have.
//! - `loki`: one value each in the agent's stream, the record's JSON as the line.
//! - `otlp`: one `LogRecord` each, `eventName` [`CONNECTION_EVENT`], `timeUnixNano` the record's
//!   `ts`, and the fields as attributes ([`otlp_attribute`]); `null` fields are left out.

use std::borrow::Cow;

use serde_json::Value;

use super::{
    otlp::{field, key_value},
    proto,
};
use crate::connections::record::ConnectionRecord;

/// The `eventName` of a connection record's `LogRecord`.
pub const CONNECTION_EVENT: &str = "tcp.connection";

/// `batch`: appends the records, comma-separated.
pub fn batch(out: &mut Vec<u8>, records: &[ConnectionRecord]) {
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        record.write_json(out);
    }
}

/// `ndjson`: appends one line per record, ending with `line_end` (the agent's fields and `}`).
pub fn ndjson(out: &mut Vec<u8>, records: &[ConnectionRecord], line_end: &[u8]) {
    for record in records {
        record.write_json(out);
        out.pop();
        out.extend_from_slice(line_end);
    }
}

fn unix_nanos(record: &ConnectionRecord) -> u64 {
    u64::try_from(record.ts.unix_nanos()).unwrap_or(0)
}

/// `loki`: appends the values of `records`, comma-separated.
pub fn loki(out: &mut Vec<u8>, records: &[ConnectionRecord]) {
    let mut line = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("[\"{}\",", unix_nanos(record)).as_bytes());
        line.clear();
        record.write_json(&mut line);
        // JSON text is UTF-8; as a JSON string it is escaped by serde_json.
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(&line));
        out.push(b']');
    }
}

/// The OTLP attribute name of a connection record field, or `None` for the fields the
/// `LogRecord` carries otherwise (`type` is the event name, `ts` the time): the semantic
/// conventions' `client.*`, `server.*` and `network.type` where they apply, `tcp.connection.*`
/// for the rest: Zeek's verdict as `tcp.connection.state` and `tcp.connection.history`, the
/// round trips per side as `tcp.connection.<side>.ack_rtt.{samples,min,mean,max}` (nanoseconds),
/// every other field under its own name.
///
/// # Examples
///
/// ```
/// use sniffer::encode::connection::otlp_attribute;
///
/// assert_eq!(otlp_attribute("client_ip").as_deref(), Some("client.address"));
/// assert_eq!(otlp_attribute("server_retransmits").as_deref(),
///            Some("tcp.connection.server_retransmits"));
/// assert_eq!(otlp_attribute("client_ack_rtt_mean_ns").as_deref(),
///            Some("tcp.connection.client.ack_rtt.mean"));
/// assert_eq!(otlp_attribute("conn_state").as_deref(), Some("tcp.connection.state"));
/// assert_eq!(otlp_attribute("ts"), None);
/// ```
#[must_use]
pub fn otlp_attribute(name: &str) -> Option<Cow<'static, str>> {
    Some(match name {
        "type" | "ts" => return None,
        "client_ip" => Cow::Borrowed("client.address"),
        "client_port" => Cow::Borrowed("client.port"),
        "server_ip" => Cow::Borrowed("server.address"),
        "server_port" => Cow::Borrowed("server.port"),
        "ip_version" => Cow::Borrowed("network.type"),
        "conn_state" => Cow::Borrowed("tcp.connection.state"),
        other => Cow::Owned(match rtt_attribute(other) {
            Some((side, statistic)) => format!("tcp.connection.{side}.ack_rtt.{statistic}"),
            None => format!("tcp.connection.{other}"),
        }),
    })
}

/// `("client", "mean")` for `client_ack_rtt_mean_ns`, and so on; `None` for other fields.
fn rtt_attribute(name: &str) -> Option<(&str, &str)> {
    let (side, rest) = name.split_once("_ack_rtt_")?;
    let statistic = rest.strip_suffix("_ns").unwrap_or(rest);
    matches!(side, "client" | "server").then_some((side, statistic))
}

/// The attributes of a record: (name, value), `null`s left out, `ip_version` as `ipv4`/`ipv6`,
/// and `network.transport` `tcp` first.
fn attributes(record: &ConnectionRecord) -> Vec<(Cow<'static, str>, Value)> {
    let mut attributes = vec![(Cow::Borrowed("network.transport"), Value::from("tcp"))];
    for (name, value) in record.fields() {
        let Some(key) = otlp_attribute(name) else {
            continue;
        };
        let value = match (name, value) {
            (_, Value::Null) => continue,
            ("ip_version", Value::Number(n)) if n.as_u64() == Some(6) => Value::from("ipv6"),
            ("ip_version", _) => Value::from("ipv4"),
            (_, value) => value,
        };
        attributes.push((key, value));
    }
    attributes
}

/// OTLP JSON: appends the log records, comma-separated.
pub fn otlp_json(out: &mut Vec<u8>, records: &[ConnectionRecord]) {
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let attributes: Vec<Value> = attributes(record)
            .into_iter()
            .map(|(key, value)| {
                let any = match value {
                    Value::Bool(b) => serde_json::json!({"boolValue": b}),
                    // The OTLP JSON mapping writes 64-bit integers as strings.
                    Value::Number(n) => serde_json::json!({"intValue": n.to_string()}),
                    other => serde_json::json!({"stringValue": other.as_str().unwrap_or_default()}),
                };
                serde_json::json!({"key": key, "value": any})
            })
            .collect();
        let log_record = serde_json::json!({
            "timeUnixNano": unix_nanos(record).to_string(),
            "eventName": CONNECTION_EVENT,
            "attributes": attributes,
        });
        let _ = serde_json::to_writer(&mut *out, &log_record);
    }
}

/// OTLP protobuf: appends the `log_records` fields.
pub fn otlp_proto(out: &mut Vec<u8>, records: &[ConnectionRecord]) {
    for record in records {
        proto::message(out, field::SCOPE_LOGS_LOG_RECORDS, |out| {
            proto::fixed64(out, field::LOG_TIME_UNIX_NANO, unix_nanos(record));
            for (key, value) in attributes(record) {
                key_value(out, field::LOG_ATTRIBUTES, &key, |out| match value {
                    Value::Bool(b) => proto::int64(out, field::ANY_BOOL, i64::from(b)),
                    Value::Number(n) => {
                        proto::int64(out, field::ANY_INT, n.as_i64().unwrap_or(i64::MAX));
                    }
                    other => {
                        proto::string(out, field::ANY_STRING, other.as_str().unwrap_or_default());
                    }
                });
            }
            proto::string(out, field::LOG_EVENT_NAME, CONNECTION_EVENT);
        });
    }
}
