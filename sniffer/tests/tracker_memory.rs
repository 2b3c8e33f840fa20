//! The bytes the connection tracker holds per tracked connection, counted by the allocator:
//! exact, where the process's RSS (the flood integration test) also holds records on their way
//! out and whatever the allocator keeps.
//!
//! Its own test binary, since the counting allocator is the whole binary's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sniffer::connections::{Tracker, TrackerConfig, rtt::MAX_UNACKED};
use sniffer_common::{PacketRecord, tcp_flags};

/// The system allocator, counting the bytes held.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size, Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONNECTIONS: u16 = 40_001;
const MSS: u32 = 1448;

/// A packet of connection `n` (client port `20000 + n` to server port 80).
fn packet(n: u16, from_client: bool, flags: u8, seq: u32, ack: u32, payload: u32) -> PacketRecord {
    let (client, server) = ([0x0a00_0001, 0, 0, 0], [0x0a00_0002, 0, 0, 0]);
    let port = 20_000u16.wrapping_add(n);
    let (src_addr, dst_addr, src_port, dst_port) = if from_client {
        (client, server, port, 80)
    } else {
        (server, client, 80, port)
    };
    PacketRecord {
        ts_ns: 1_000_000,
        src_addr,
        dst_addr,
        seq,
        ack,
        len: 54 + payload,
        payload_len: payload,
        src_port,
        dst_port,
        window: 512,
        tcp_flags: flags,
        ip_version: 4,
        ..PacketRecord::default()
    }
}

/// Bytes held per connection after `packets_of` each of [`CONNECTIONS`] connections, the table
/// full. (A large table reserves room up to `CONNECTION_MAX` at once: the allocator counts that
/// room, but until entries fill it, it is address space, not memory: the SYN-flood integration
/// test counts the process's resident memory.)
fn bytes_per_connection(packets_of: impl Fn(u16) -> Vec<PacketRecord>) -> usize {
    let mut tracker = Tracker::new(TrackerConfig {
        max_connections: usize::from(CONNECTIONS),
        idle_timeout: Duration::from_secs(3600),
        report_interval: None,
    });
    let mut reports = Vec::new();
    let before = HELD.load(Ordering::Relaxed);
    for n in 0..CONNECTIONS {
        tracker.observe_all(&packets_of(n), &mut reports);
    }
    let held = HELD.load(Ordering::Relaxed) - before;
    assert!(reports.is_empty(), "nothing reported yet");
    assert_eq!(tracker.len(), usize::from(CONNECTIONS));
    held / usize::from(CONNECTIONS)
}

/// A handshake and one request and response: nothing in flight.
fn exchange(n: u16) -> Vec<PacketRecord> {
    use tcp_flags::{ACK, PSH, SYN};
    vec![
        packet(n, true, SYN, 100, 0, 0),
        packet(n, false, SYN | ACK, 500, 101, 0),
        packet(n, true, ACK, 101, 501, 0),
        packet(n, true, PSH | ACK, 101, 501, 200),
        packet(n, false, PSH | ACK, 501, 301, 900),
        packet(n, true, ACK, 301, 1401, 0),
    ]
}

/// A handshake, then each side with more segments waiting for an ACK than the tracker keeps:
/// the most a connection holds.
fn both_sides_in_flight(n: u16) -> Vec<PacketRecord> {
    use tcp_flags::{ACK, SYN};
    let mut packets = vec![
        packet(n, true, SYN, 100, 0, 0),
        packet(n, false, SYN | ACK, 500, 101, 0),
        packet(n, true, ACK, 101, 501, 0),
    ];
    for i in 0..u32::try_from(MAX_UNACKED).unwrap() + 4 {
        packets.push(packet(n, true, ACK, 101 + i * MSS, 501, MSS));
        packets.push(packet(n, false, ACK, 501 + i * MSS, 101, MSS));
    }
    packets
}

#[test]
fn a_tracked_connection_holds_at_most_a_kib() {
    let exchanged = bytes_per_connection(exchange);
    let in_flight = bytes_per_connection(both_sides_in_flight);
    println!(
        "{CONNECTIONS} connections: {exchanged} bytes per connection with nothing in flight, \
         {in_flight} with both sides' lists full"
    );
    assert!(exchanged <= 1024, "{exchanged} bytes per connection");
    assert!(in_flight <= 1024, "{in_flight} bytes per connection");
}
