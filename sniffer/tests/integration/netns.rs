//! Test hosts (the `testbed` crate, shared with the benchmark harness). A test that creates them
//! starts with `testbed::skip_unless_root!()`.

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
