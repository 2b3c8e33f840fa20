//! Any `PORTS` value, `OUTPUT_URL` and `InjectorOptions` JSON: a value or a clear error, never a
//! panic; an accepted port list round-trips; an accepted URL is one the HTTP client parses with
//! the same host and port.
#![no_main]

use injector::options::InjectorOptions;
use libfuzzer_sys::fuzz_target;
use sidecar_contract::{
    ports::{format_ports, parse_ports},
    url::parse_http_url,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ports) = parse_ports(text) {
            assert!(!ports.is_empty() && ports.len() <= 64 && !ports.contains(&0));
            assert_eq!(parse_ports(&format_ports(&ports)), Ok(ports));
        }
        if let Ok(url) = parse_http_url(text) {
            let uri: http::Uri = text.parse().expect("an accepted URL parses as http::Uri");
            let host = uri.host().expect("host");
            assert_eq!(host.trim_start_matches('[').trim_end_matches(']'), url.host);
            assert_eq!(uri.port_u16(), url.port);
        }
    }
    if let Ok(options) = serde_json::from_slice::<InjectorOptions>(data) {
        let _ = options
            .validate()
            .map_err(|err| assert!(!err.to_string().is_empty()));
    }
});
