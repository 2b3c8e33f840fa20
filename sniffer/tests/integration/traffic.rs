//! Test traffic: a server that answers each request with half as many bytes, a client, and what
//! TCP guarantees about the packets of such an exchange.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread::{self, JoinHandle},
    time::Duration,
};

use serde_json::Value;

/// The port the sniffer captures.
pub const MATCHED: u16 = 8080;
/// A port it must ignore.
pub const UNMATCHED: u16 = 9090;
/// Request sizes per connection; the server answers with half as many bytes.
pub const REQUEST_SIZES: [usize; 3] = [1, 1000, 100_000];

/// Accepts `count` connections; for each reads the request to EOF, answers, closes.
pub fn serve(listener: TcpListener, count: usize) -> JoinHandle<()> {
    thread::spawn(move || {
        for _ in 0..count {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            stream.read_to_end(&mut request).expect("read request");
            stream
                .write_all(&vec![b'r'; request.len() / 2])
                .expect("reply");
        }
    })
}

/// One client connection: sends `size` bytes, half-closes, reads the answer; returns the
/// client's local port.
pub fn exchange(server: SocketAddr, size: usize) -> u16 {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
    stream.write_all(&vec![b'q'; size]).expect("send");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply");
    assert_eq!(reply.len(), size / 2);
    stream.local_addr().expect("local addr").port()
}

fn u32_of(value: &Value) -> u32 {
    u32::try_from(value.as_u64().expect("number")).expect("u32")
}

fn has_flag(record: &Value, flag: &str) -> bool {
    record["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .any(|f| f == flag)
}

/// What TCP guarantees for one connection of `size` request bytes and `size / 2` reply bytes.
pub fn check_flow(records: &[&Value], client_ip: &str, server_ip: &str, version: u64, size: usize) {
    let (ingress, egress): (Vec<&Value>, Vec<&Value>) = records
        .iter()
        .copied()
        .partition(|r| r["direction"] == "ingress");
    for r in &ingress {
        assert_eq!(
            (r["src_ip"].as_str(), r["dst_ip"].as_str()),
            (Some(client_ip), Some(server_ip))
        );
        assert_eq!(r["dst_port"], MATCHED, "{r}");
        assert_eq!(r["ip_version"], version);
    }
    for r in &egress {
        assert_eq!(
            (r["src_ip"].as_str(), r["dst_ip"].as_str()),
            (Some(server_ip), Some(client_ip))
        );
        assert_eq!(r["src_port"], MATCHED, "{r}");
        assert_eq!(r["ip_version"], version);
    }
    let only = |side: &[&Value], flags: &[&str]| -> Value {
        let found: Vec<&&Value> = side
            .iter()
            .filter(|r| r["flags"] == serde_json::json!(flags))
            .collect();
        assert_eq!(found.len(), 1, "exactly one {flags:?} in {side:#?}");
        (*found[0]).clone()
    };
    let syn = only(&ingress, &["SYN"]);
    let syn_ack = only(&egress, &["SYN", "ACK"]);
    let client_isn = u32_of(&syn["seq"]);
    let server_isn = u32_of(&syn_ack["seq"]);
    assert_eq!(u32_of(&syn_ack["ack"]), client_isn.wrapping_add(1));

    let sum = |side: &[&Value]| -> u64 {
        side.iter()
            .map(|r| r["payload_len"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum(&ingress), size as u64, "request bytes");
    assert_eq!(sum(&egress), (size / 2) as u64, "reply bytes");
    assert_eq!(
        ingress.iter().filter(|r| has_flag(r, "FIN")).count(),
        1,
        "client FIN"
    );
    assert_eq!(
        egress.iter().filter(|r| has_flag(r, "FIN")).count(),
        1,
        "server FIN"
    );

    // Every byte and both FINs were acknowledged: the highest ack each side sent proves it.
    let max_ack = |side: &[&Value], isn: u32| -> u32 {
        side.iter()
            .filter(|r| has_flag(r, "ACK"))
            .map(|r| u32_of(&r["ack"]).wrapping_sub(isn))
            .max()
            .unwrap()
    };
    assert_eq!(max_ack(&egress, client_isn), size as u32 + 2);
    assert_eq!(max_ack(&ingress, server_isn), (size / 2) as u32 + 2);
}
