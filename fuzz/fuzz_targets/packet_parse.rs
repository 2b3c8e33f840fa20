//! Any frame through the kernel program's parser (the same code the socket filter runs): no
//! panic, and a parsed record stays within the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sniffer_common::{
    LinkLayer,
    parse::{PacketBytes, parse_tcp},
};

struct Frame<'a>(&'a [u8]);

impl PacketBytes for Frame<'_> {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.0.get(offset..offset.checked_add(N)?)?.try_into().ok()
    }
    fn packet_len(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }
}

fuzz_target!(|data: &[u8]| {
    for link in [LinkLayer::Ethernet, LinkLayer::RawIp] {
        if let Some(record) = parse_tcp(&Frame(data), link) {
            assert!(record.ip_version == 4 || record.ip_version == 6);
            assert_eq!(record.len as usize, data.len());
            assert!((record.payload_len as usize) < data.len().max(65_536) + 65_536);
        }
    }
});
