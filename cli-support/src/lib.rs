//! What tcp-sniffer's two command-line binaries share: JSON log lines on stderr ([`log`]),
//! clock reads ([`clock`]), the RFC 3339 time text records and logs print ([`time`]), exit
//! codes and argument errors ([`exit`]), Prometheus text ([`prometheus`]), and reading the small
//! files the environment names ([`small_file`]).
//!
//! What the two binaries must *agree on* (variable names, value rules) is not here but in
//! `sidecar-contract`.

pub mod clock;
pub mod exit;
pub mod log;
pub mod prometheus;
pub mod small_file;
pub mod time;
