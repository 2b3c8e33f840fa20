//! The `loki` body: Grafana Loki's push API JSON (`POST /loki/api/v1/push`),
//! `{"streams":[{"stream":{labels},"values":[["<unix ns>","<line>"],…]}]}`.
//!
//! One stream per agent, labelled with low-cardinality values only: [`LABELS`]; never an
//! address or a port (those would make one stream per connection). Each value is the capture
//! time in nanoseconds since the epoch, as a decimal string, and the record's JSON as the line.

use cli_support::time::Rfc3339Writer;

use super::{AgentInfo, Item, json_string_or_null, text::in_place};

/// The labels a stream can carry: `job` (always `tcp-sniffer`), and the agent's `namespace`,
/// `pod` and `node` when they are known.
pub const LABELS: [&str; 4] = ["job", "namespace", "pod", "node"];

/// The body's text before the first value: the stream and its labels.
#[must_use]
pub fn body_start(agent: &AgentInfo) -> Vec<u8> {
    let mut start = b"{\"streams\":[{\"stream\":{\"job\":\"tcp-sniffer\"".to_vec();
    for (key, value) in [
        ("namespace", &agent.namespace),
        ("pod", &agent.pod),
        ("node", &agent.node),
    ] {
        // Loki refuses empty label values: an unknown one is left out.
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            start.extend_from_slice(format!(",\"{key}\":").as_bytes());
            json_string_or_null(&mut start, Some(value));
        }
    }
    start.extend_from_slice(b"},\"values\":[");
    start
}

/// The body's text after the last value.
pub const BODY_END: &[u8] = b"]}]}";

/// Appends the values of `records`, comma-separated: packet and connection records alike, each
/// its capture (or report) time and its JSON as the line.
pub fn write(out: &mut Vec<u8>, records: &[Item], times: &mut Rfc3339Writer) {
    for (i, item) in records.iter().enumerate() {
        let ts = match item {
            Item::Packet(record) => record.ts,
            Item::Connection(record) => record.ts,
        };
        in_place(out, 1 + 2 + 19 + 3, |text| {
            if i > 0 {
                text.byte(b',');
            }
            text.put(b"[\"");
            text.number64(u64::try_from(ts.unix_nanos()).unwrap_or(0));
            text.put(b"\",");
        });
        // Neither record's JSON holds a backslash or a control character (numbers, addresses,
        // times, fixed names and letters): as a JSON string, only its quotes are escaped.
        out.push(b'"');
        match item {
            Item::Packet(record) => record.write_escaped_json(out, times),
            Item::Connection(record) => record.write_escaped_json(out, times),
        }
        out.push(b'"');
        out.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use sniffer_common::PacketRecord;

    use super::*;
    use crate::{
        capture::clock::WallClock,
        encode::{packet::Record, test_agent},
    };

    #[test]
    fn values_are_nanosecond_strings_and_record_lines() {
        let agent = test_agent();
        let records: Vec<Item> = [80, 443]
            .map(|port| {
                let raw = PacketRecord {
                    ts_ns: 5,
                    ip_version: 6,
                    dst_port: port,
                    ..PacketRecord::default()
                };
                Item::Packet(Record::from_kernel(
                    &raw,
                    &WallClock::from_offset(1_795_805_096_000_000_000),
                ))
            })
            .into();
        let mut body = body_start(&agent);
        write(&mut body, &records, &mut Rfc3339Writer::default());
        body.extend_from_slice(BODY_END);
        let push: Value = serde_json::from_slice(&body).unwrap();
        let stream = &push["streams"][0];
        assert_eq!(
            stream["stream"],
            json!({"job":"tcp-sniffer","namespace":"shop","pod":"web-7d9c"})
        );
        let values = stream["values"].as_array().unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0][0], "1795805096000000005");
        let line: Value = serde_json::from_str(values[1][1].as_str().unwrap()).unwrap();
        assert_eq!(line["dst_port"], 443);
        assert_eq!(line["ts"], "2026-11-27T18:44:56.000000005Z");
    }
}
