//! Any `PORTS` value and any `InjectorOptions` JSON: a value or a clear error, never a panic; an
//! accepted port list round-trips.
#![no_main]

use injector::options::InjectorOptions;
use libfuzzer_sys::fuzz_target;
use sniffer_common::ports::{format_ports, parse_ports};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ports) = parse_ports(text) {
            assert!(!ports.is_empty() && ports.len() <= 64 && !ports.contains(&0));
            assert_eq!(parse_ports(&format_ports(&ports)), Ok(ports));
        }
    }
    if let Ok(options) = serde_json::from_slice::<InjectorOptions>(data) {
        let _ = options
            .validate()
            .map_err(|err| assert!(!err.to_string().is_empty()));
    }
});
