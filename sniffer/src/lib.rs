//! tcp-sniffer's userspace agent: loads the kernel socket filter, reads its ring buffer and emits
//! one JSON record per matched TCP packet.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | environment/flags and their validation |
//! | [`socket`] | the `AF_PACKET` socket the filter is attached to |
//! | [`capture`] | load, attach, read the ring and the kernel counters |
//! | [`record`] | kernel record → JSON record |
//! | [`clock`] | monotonic → wall-clock, RFC 3339 |
//! | [`output`] | where records go |
//! | [`logging`] | JSON log lines on stderr |

pub mod capture;
pub mod clock;
pub mod config;
pub mod logging;
pub mod output;
pub mod record;
pub mod socket;
