//! Integration tests of the `sniffer` binary against the real kernel.
//!
//! Tests that need root (network namespaces, BPF) skip with a message when run unprivileged, and
//! fail instead when `TCP_SNIFFER_REQUIRE_PRIVILEGED` is set, as `cargo xtask test` does for root.

mod agent;
mod capture;
mod collector;
mod connections;
mod delivery;
mod dissector;
mod formats;
mod health;
mod live_ports;
mod netns;
mod overload;
mod pcapng;
mod process;
mod resilience;
mod traffic;
