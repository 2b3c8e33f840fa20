//! Test hosts (the `testbed` crate, shared with xtask's benchmarks), and whether this process may
//! create them.

/// Whether this process can create namespaces and load BPF. When it cannot, the test is skipped
/// with the reason printed, unless `TCP_SNIFFER_REQUIRE_PRIVILEGED` is set (as `cargo xtask test`
/// does for root), in which case it fails.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("TCP_SNIFFER_REQUIRE_PRIVILEGED").is_none(),
        "{test} needs root, and TCP_SNIFFER_REQUIRE_PRIVILEGED is set"
    );
    eprintln!(
        "skipping {test}: it creates network namespaces and loads BPF programs, which needs root"
    );
    false
}

pub use testbed::{CLIENT_V4, CLIENT_V6, Netns, SERVER_V4, SERVER_V6, Topology, ip};

/// New test hosts: the two namespaces and the link between them.
pub fn topology() -> Topology {
    Topology::new("tsn").expect("create the test namespaces")
}

/// The response to `GET path` from `addr` inside the server namespace (the metrics endpoint).
pub fn http_get(topology: &Topology, addr: std::net::SocketAddr, path: &'static str) -> String {
    use std::io::{Read as _, Write as _};
    topology.server.run(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect metrics");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: metrics\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
}
