//! The contract between the injector and the sniffer container it adds: the environment
//! variables the sniffer reads ([`env`]), the values they take, and the rules a value must pass.
//!
//! The injector writes the variables and the sniffer reads them; both check a value with the
//! same rule from here, so an option the injector accepts is one the sniffer starts with, and an
//! error names the problem the same way on both sides. Port lists ([`ports`]), output URLs
//! ([`url`]), request headers and where a credential may travel ([`headers`]), and how a
//! user-supplied value is quoted in a message ([`echo`]).
//!
//! The kernel program's types (ring records, maps) are not part of this contract; they live in
//! `sniffer-common`, which the kernel program and the sniffer's loader share.

pub mod echo;
pub mod env;
pub mod headers;
pub mod ports;
pub mod url;

/// The port of the sniffer's packet capture endpoint by default ([`env::CAPTURE_LISTEN`]
/// `127.0.0.1:9465`), which the injector keeps clear of the app's ports.
pub const CAPTURE_PORT: u16 = 9465;
/// The most [`env::CAPTURE_RECORDER_BYTES`] (1 GiB), as the sniffer and the injector check it.
pub const MAX_RECORDER_BYTES: u64 = 1 << 30;

/// The values of [`env::OUTPUT_FORMAT`] (the sniffer's body formats), as the injector checks its
/// `outputFormat` option.
pub const OUTPUT_FORMATS: [&str; 4] = ["batch", "ndjson", "otlp", "loki"];
/// The values of [`env::RECORDS`]: what the sniffer sends.
pub const RECORDS: [&str; 3] = ["packets", "connections", "both"];
/// The values of [`env::OTLP_ENCODING`].
pub const OTLP_ENCODINGS: [&str; 2] = ["protobuf", "json"];

/// How many ports [`env::PORTS`] (or the injector's ports annotation) may list: the loader
/// checks the same limit before writing the kernel's port bitmap.
pub const MAX_PORTS: u32 = 64;
