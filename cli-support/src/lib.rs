//! What tcp-sniffer's two command-line binaries share: JSON log lines on stderr ([`log`]),
//! clock reads ([`clock`]), exit codes and argument errors ([`exit`]), and Prometheus text
//! ([`prometheus`]).

pub mod clock;
pub mod exit;
pub mod log;
pub mod prometheus;
