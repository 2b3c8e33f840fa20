//! The `batch` body (docs/specs/OUTPUT_FORMAT.md): `{"agent":{…},"seq":N,"dropped":D,"records":[…]}`.

use cli_support::time::Rfc3339Writer;

use super::Item;

/// Appends the body's text before the first record; `agent_json` is the agent serialized once.
pub fn start(out: &mut Vec<u8>, agent_json: &[u8], seq: u64, dropped: u64) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"{\"agent\":");
    out.extend_from_slice(agent_json);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(number.format(seq).as_bytes());
    out.extend_from_slice(b",\"dropped\":");
    out.extend_from_slice(number.format(dropped).as_bytes());
    out.extend_from_slice(b",\"records\":[");
}

/// Appends `records`, comma-separated: packet and connection records alike, each its JSON.
pub fn write(out: &mut Vec<u8>, records: &[Item], times: &mut Rfc3339Writer) {
    for (i, item) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match item {
            Item::Packet(record) => record.write_json(out, times),
            Item::Connection(record) => record.write_json(out, times),
        }
    }
}

/// The body's text after the last record.
pub const END: &[u8] = b"]}";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::encode::{AgentInfo, Encoder, Format, packet::test_record as record};

    fn agent() -> AgentInfo {
        AgentInfo {
            pod: Some("web-7d9c".into()),
            namespace: Some("shop".into()),
            node: Some("node-3".into()),
            interface: "eth0".into(),
            version: "0.1.0",
            instance: "6f1c2b9e-3d4a-4f8e-9b2a-0c7d5e1f3a90".into(),
        }
    }

    #[test]
    fn body_matches_the_contract() {
        let mut encoder = Encoder::new(Format::Batch, Arc::new(agent()), false);
        let body = encoder.body(17, 4, &[record(8080).into()]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(body.as_slice()).unwrap();
        assert_eq!(
            json["agent"],
            serde_json::json!({"pod":"web-7d9c","namespace":"shop","node":"node-3","interface":"eth0",
                               "version":"0.1.0","instance":"6f1c2b9e-3d4a-4f8e-9b2a-0c7d5e1f3a90"})
        );
        assert_eq!(json["seq"], 17);
        assert_eq!(json["dropped"], 4);
        assert_eq!(json["records"][0]["dst_port"], 8080);
        assert_eq!(json["records"][0]["ts"], "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn recycled_memory_makes_the_same_bodies() {
        let records: Vec<Item> = (1..=50).map(|port| record(port).into()).collect();
        let mut encoder = Encoder::new(Format::Batch, Arc::new(agent()), false);
        let first = encoder.body(1, 0, &records).unwrap();
        let (expected, memory) = (first.as_slice().to_vec(), first.as_slice().as_ptr());
        encoder.recycle(first);
        let second = encoder.body(1, 0, &records).unwrap();
        assert_eq!(second.as_slice(), expected);
        assert_eq!(second.as_slice().as_ptr(), memory, "the memory was reused");
        // A shorter body after a longer one carries nothing of it.
        encoder.recycle(second);
        let short = encoder.body(2, 0, &records[..1]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(short.as_slice()).unwrap();
        assert_eq!(json["seq"], 2);
        assert_eq!(json["records"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn gzip_body_round_trips() {
        let records: Vec<Item> = (1..=500).map(|port| record(port).into()).collect();
        let plain = Encoder::new(Format::Batch, Arc::new(agent()), false)
            .body(0, 0, &records)
            .unwrap();
        let packed = Encoder::new(Format::Batch, Arc::new(agent()), true)
            .body(0, 0, &records)
            .unwrap();
        let (plain, packed) = (plain.as_slice(), packed.as_slice());
        assert!(
            packed.len() * 4 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(packed), &mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain);
    }

    #[test]
    fn instances_are_random_uuids() {
        let a = AgentInfo::new_instance().unwrap();
        let b = AgentInfo::new_instance().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "version 4: {a}");
    }
}
