//! The `batch` body (docs/specs/OUTPUT_FORMAT.md): `{"agent":{…},"seq":N,"dropped":D,"records":[…]}`.

use std::io;

use sniffer_common::time::Rfc3339Writer;

use super::{AgentInfo, record::Record};

/// Writes a batch body as JSON.
///
/// # Errors
///
/// Only if the agent cannot be serialized, which plain strings cannot fail.
pub fn body(
    agent: &AgentInfo,
    seq: u64,
    dropped: u64,
    records: &[Record],
    times: &mut Rfc3339Writer,
) -> io::Result<Vec<u8>> {
    // About 250 bytes of JSON per record.
    let mut json = Vec::with_capacity(512 + records.len() * 256);
    json.extend_from_slice(b"{\"agent\":");
    serde_json::to_writer(&mut json, agent)?;
    let mut number = itoa::Buffer::new();
    json.extend_from_slice(b",\"seq\":");
    json.extend_from_slice(number.format(seq).as_bytes());
    json.extend_from_slice(b",\"dropped\":");
    json.extend_from_slice(number.format(dropped).as_bytes());
    json.extend_from_slice(b",\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        record.write_json(&mut json, times);
    }
    json.extend_from_slice(b"]}");
    Ok(json)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sniffer_common::PacketRecord;

    use super::*;
    use crate::{capture::clock::WallClock, encode::Encoder};

    fn record(port: u16) -> Record {
        let raw = PacketRecord {
            ip_version: 4,
            dst_port: port,
            ..PacketRecord::default()
        };
        Record::from_kernel(&raw, &WallClock::from_offset(0))
    }

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
        let body = body(
            &agent(),
            17,
            4,
            &[record(8080)],
            &mut Rfc3339Writer::default(),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
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
    fn gzip_body_round_trips() {
        let records: Vec<Record> = (1..=500).map(record).collect();
        let plain = Encoder::new(Arc::new(agent()), false)
            .body(0, 0, &records)
            .unwrap();
        let packed = Encoder::new(Arc::new(agent()), true)
            .body(0, 0, &records)
            .unwrap();
        assert!(
            packed.len() * 4 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&packed[..]),
            &mut unpacked,
        )
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
