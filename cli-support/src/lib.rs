//! What tcp-sniffer's two command-line binaries share: JSON log lines on stderr ([`log`]),
//! clock reads ([`clock`]), exit codes and argument errors ([`exit`]), Prometheus text
//! ([`prometheus`]), and reading the small files the environment names ([`small_file`]).

pub mod clock;
pub mod exit;
pub mod log;
pub mod prometheus;
pub mod small_file;
