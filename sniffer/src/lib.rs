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
//! | [`output`] | where records go: the [`output::Sink`] trait, NDJSON on stdout |
//! | [`batch`] | batching and the batch body |
//! | [`retry`] | retry decisions and backoff |
//! | [`deliver`] | batch and send: the sender thread posting to `OUTPUT_URL` |
//! | [`resolve`] | the collector's address, looked up once per TTL |
//! | [`metrics`] | counters, Prometheus text, the `METRICS_ADDR` endpoint |

pub mod batch;
pub mod capture;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod metrics;
pub mod output;
pub mod record;
pub mod resolve;
pub mod retry;
pub mod socket;
