//! The `ndjson` body: one record per line, each line self-describing — the record's fields, then
//! the agent's `pod`, `namespace`, `node` and `instance` — with names that are also valid column
//! names (ClickHouse `JSONEachRow`, Vector and Fluent Bit split the body into one event per line).

use cli_support::time::Rfc3339Writer;

use super::{AgentInfo, Item, json_string_or_null};

/// The text that closes every line of this agent: `,"pod":…,"instance":"…"}` and a newline.
#[must_use]
pub fn line_end(agent: &AgentInfo) -> Vec<u8> {
    let mut end = Vec::new();
    for (key, value) in [
        ("pod", &agent.pod),
        ("namespace", &agent.namespace),
        ("node", &agent.node),
    ] {
        end.extend_from_slice(format!(",\"{key}\":").as_bytes());
        json_string_or_null(&mut end, value.as_deref());
    }
    end.extend_from_slice(b",\"instance\":");
    json_string_or_null(&mut end, Some(&agent.instance));
    end.extend_from_slice(b"}\n");
    end
}

/// Appends the lines of `records` (packet and connection records alike: each its JSON with the
/// agent's fields); `line_end` comes from [`line_end`].
pub fn write(out: &mut Vec<u8>, records: &[Item], line_end: &[u8], times: &mut Rfc3339Writer) {
    for item in records {
        match item {
            Item::Packet(record) => record.write_json(out, times),
            Item::Connection(record) => record.write_json(out, times),
        }
        // The record's closing brace gives way to the agent's fields.
        out.pop();
        out.extend_from_slice(line_end);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use sniffer_common::PacketRecord;

    use super::*;
    use crate::{capture::clock::WallClock, encode::packet::Record};

    #[test]
    fn every_line_is_a_record_with_the_agent() {
        let agent = AgentInfo {
            pod: Some("web-7d9c".into()),
            namespace: None,
            node: Some("node \"3\"".into()),
            interface: "eth0".into(),
            version: "0.1.0",
            instance: "6f1c".into(),
        };
        let records: Vec<Item> = [80, 443]
            .map(|port| {
                let raw = PacketRecord {
                    ip_version: 4,
                    dst_port: port,
                    ..PacketRecord::default()
                };
                Item::Packet(Record::from_kernel(&raw, &WallClock::from_offset(0)))
            })
            .into();
        let mut body = Vec::new();
        write(
            &mut body,
            &records,
            &line_end(&agent),
            &mut Rfc3339Writer::default(),
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with("}\n"));
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["dst_port"], 443);
        assert_eq!(lines[0]["pod"], "web-7d9c");
        assert_eq!(lines[0]["namespace"], json!(null));
        assert_eq!(lines[0]["node"], "node \"3\"");
        assert_eq!(lines[0]["instance"], "6f1c");
        assert_eq!(lines[0].as_object().unwrap().len(), 13 + 4);
    }
}
