//! Any 72 bytes read from the ring as a record: converts to JSON that parses back, with the
//! contract's fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sniffer::{capture::clock::WallClock, encode::packet::Record};
use cli_support::time::Rfc3339Writer;
use sniffer_common::{PacketRecord, RECORD_SIZE};

fuzz_target!(|data: &[u8]| {
    if data.len() < RECORD_SIZE + 8 {
        return;
    }
    // SAFETY: `PacketRecord` is plain old data; any bit pattern is a valid value.
    let raw: PacketRecord = unsafe { data.as_ptr().cast::<PacketRecord>().read_unaligned() };
    let offset = i64::from_le_bytes(data[RECORD_SIZE..RECORD_SIZE + 8].try_into().unwrap());
    let record = Record::from_kernel(&raw, &WallClock::from_offset(offset));
    let mut json = Vec::new();
    record.write_json(&mut json, &mut Rfc3339Writer::default());
    assert!(json.len() <= Record::MAX_JSON_LEN);
    let back: serde_json::Value = serde_json::from_slice(&json).expect("records are JSON");
    assert!(back["ts"].as_str().is_some_and(|ts| ts.len() == 30 && ts.ends_with('Z')));
    assert!(back["direction"] == "ingress" || back["direction"] == "egress");
});
