//! Counters for every record's fate, rendered as Prometheus text and served on `METRICS_ADDR`.
//!
//! Loss accounting: `matched = read + dropped_ring_full` and
//! `read = delivered + dropped_buffer_full + dropped_rejected + dropped_undeliverable + queued`.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use cli_support::prometheus::{Exposition, Kind, Seconds};
use log::debug;
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
};

use crate::{
    counts::{Counts, TIME_BOUNDS_NS, TimeHistogram},
    endpoint::{self, Endpoint},
};

/// Shared counters, updated lock-free by the reader and the sender.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets the kernel program matched (copied from its counter).
    pub packets_matched: AtomicU64,
    /// Records read from the ring.
    pub records_read: AtomicU64,
    /// Records in batches the collector accepted (or written to stdout).
    pub records_delivered: AtomicU64,
    /// Records lost because the kernel ring buffer was full (copied from its counter).
    pub dropped_ring_full: AtomicU64,
    /// Records dropped because `BUFFER_MAX_RECORDS` were already queued.
    pub dropped_buffer_full: AtomicU64,
    /// Records in batches the collector refused with a non-retryable status.
    pub dropped_rejected: AtomicU64,
    /// Records still undelivered when the shutdown grace ran out, or held by a sender thread that
    /// failed.
    pub dropped_undeliverable: AtomicU64,
    /// Records waiting for delivery (closed batches and the one being sent).
    pub records_queued: AtomicU64,
    /// Closed batches waiting for delivery or being sent.
    pub batches_queued: AtomicU64,
    /// Batches the collector accepted.
    pub batches_delivered: AtomicU64,
    /// Batches the collector refused for good.
    pub batches_rejected: AtomicU64,
    /// Batches given up at shutdown.
    pub batches_undeliverable: AtomicU64,
    /// Attempts that failed and were retried.
    pub batch_retries: AtomicU64,
    /// HTTP status of the last attempt; 0 for a connection error or timeout.
    pub last_status: AtomicU64,
    /// Unix time (seconds) of the last delivered batch.
    pub last_delivery_unix: AtomicU64,
    /// A sender thread failed (a bug): `/healthz` fails and the agent stops with exit code 2.
    pub sender_failed: AtomicBool,
    /// stdout could not be written (closed): `/healthz` fails and the agent stops with exit
    /// code 2.
    pub output_failed: AtomicBool,
    /// Ports captured now.
    pub ports_captured: AtomicU64,
    /// New `tcp-sniffer/ports` values applied while running (`PORTS_FILE`).
    pub ports_changes_applied: AtomicU64,
    /// New `tcp-sniffer/ports` values refused (invalid; the ports stayed).
    pub ports_changes_refused: AtomicU64,
    /// Connection records made (`RECORDS=connections` or `both`); they are delivered and dropped
    /// like packet records, and counted in those counters too.
    pub connection_records: AtomicU64,
    /// The connection tracker's counts and the connections tracked now, when it runs.
    pub connections: Mutex<Option<(Counts, u64)>>,
    /// The ring buffer's size (`RING_BUFFER_BYTES`).
    pub ring_buffer_bytes: AtomicU64,
    /// Bytes of the ring written and not yet read, at the last check (every second).
    pub ring_used_bytes: AtomicU64,
    /// How long each delivery attempt took, from sending the request to reading its answer.
    pub delivery_seconds: DeliverySeconds,
    /// Unix time (seconds) the agent started.
    pub start_time_seconds: AtomicU64,
    /// The packet capture endpoint's counts.
    pub capture: CaptureStats,
}

/// What the packet capture endpoint did (`CAPTURE_LISTEN`); exported while it is on.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Captures are on.
    pub enabled: AtomicBool,
    /// Captures started (live and from the recorder).
    pub started: AtomicU64,
    /// Requests refused because `CAPTURE_MAX_CONCURRENT` captures were running.
    pub refused_busy: AtomicU64,
    /// Requests refused as malformed or not allowed (`4xx` other than `429`).
    pub refused_bad_request: AtomicU64,
    /// Captures running now.
    pub active: AtomicU64,
    /// Packets written into captures.
    pub packets: AtomicU64,
    /// Bytes of pcapng sent.
    pub bytes: AtomicU64,
    /// Packets the kernel copied for captures (copied from its counter).
    pub copied: AtomicU64,
    /// Packets a capture asked for and lost because the kernel's ring was full (copied from its
    /// counter).
    pub dropped_ring_full: AtomicU64,
    /// Packets a capture lost because its client read slower than the traffic came.
    pub dropped_slow_client: AtomicU64,
    /// Packets the flight recorder forgot to make room for newer ones.
    pub recorder_forgotten: AtomicU64,
}

/// Upper bounds (seconds) of the delivery-attempt histogram's buckets: loopback to a slow
/// collector's timeout.
const DELIVERY_BOUNDS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// The histogram of delivery attempts.
#[derive(Debug)]
pub struct DeliverySeconds(pub Seconds);

impl Default for DeliverySeconds {
    fn default() -> Self {
        Self(Seconds::new(&DELIVERY_BOUNDS))
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// Reads a counter.
#[must_use]
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}

impl Stats {
    /// Every record lost so far, for any reason.
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        get(&self.dropped_ring_full)
            + get(&self.dropped_buffer_full)
            + get(&self.dropped_rejected)
            + get(&self.dropped_undeliverable)
    }

    /// Prometheus text exposition format, version 0.0.4.
    #[must_use]
    pub fn render(&self) -> String {
        let Self {
            packets_matched,
            records_read,
            records_delivered,
            dropped_ring_full,
            dropped_buffer_full,
            dropped_rejected,
            dropped_undeliverable,
            records_queued,
            batches_queued,
            batches_delivered,
            batches_rejected,
            batches_undeliverable,
            batch_retries,
            last_status,
            last_delivery_unix,
            sender_failed: _,
            output_failed: _,
            ports_captured,
            ports_changes_applied,
            ports_changes_refused,
            connection_records,
            connections,
            ring_buffer_bytes,
            ring_used_bytes,
            delivery_seconds,
            start_time_seconds,
            capture,
        } = self;
        let mut text = Exposition::default();
        text.family(
            "tcp_sniffer_build_info",
            Kind::Gauge,
            "Always 1; the version of the sniffer.",
        )
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1);
        text.family(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since the Unix epoch, in seconds.",
        )
        .sample(&[], get(start_time_seconds));
        let one = |text: &mut Exposition, name, kind, help, value| {
            text.family(name, kind, help).sample(&[], get(value));
        };
        one(
            &mut text,
            "tcp_sniffer_packets_matched_total",
            Kind::Counter,
            "TCP packets the kernel program matched.",
            packets_matched,
        );
        one(
            &mut text,
            "tcp_sniffer_records_read_total",
            Kind::Counter,
            "Records read from the kernel ring buffer.",
            records_read,
        );
        one(
            &mut text,
            "tcp_sniffer_records_delivered_total",
            Kind::Counter,
            "Records delivered to the collector (or written to stdout).",
            records_delivered,
        );
        let mut family = text.family(
            "tcp_sniffer_records_dropped_total",
            Kind::Counter,
            "Records lost, by reason.",
        );
        for (reason, value) in [
            ("ring_full", dropped_ring_full),
            ("buffer_full", dropped_buffer_full),
            ("rejected", dropped_rejected),
            ("undeliverable", dropped_undeliverable),
        ] {
            family.sample(&[("reason", reason)], get(value));
        }
        one(
            &mut text,
            "tcp_sniffer_ring_buffer_bytes",
            Kind::Gauge,
            "Size of the kernel ring buffer (RING_BUFFER_BYTES).",
            ring_buffer_bytes,
        );
        one(
            &mut text,
            "tcp_sniffer_ring_used_bytes",
            Kind::Gauge,
            "Bytes of the ring written by the kernel and not read yet, checked every second.",
            ring_used_bytes,
        );
        one(
            &mut text,
            "tcp_sniffer_records_queued",
            Kind::Gauge,
            "Records waiting for delivery.",
            records_queued,
        );
        one(
            &mut text,
            "tcp_sniffer_batches_queued",
            Kind::Gauge,
            "Closed batches waiting for delivery.",
            batches_queued,
        );
        let mut family = text.family(
            "tcp_sniffer_batches_total",
            Kind::Counter,
            "Batches by final result.",
        );
        for (result, value) in [
            ("delivered", batches_delivered),
            ("rejected", batches_rejected),
            ("undeliverable", batches_undeliverable),
        ] {
            family.sample(&[("result", result)], get(value));
        }
        one(
            &mut text,
            "tcp_sniffer_batch_retries_total",
            Kind::Counter,
            "Delivery attempts that failed and were retried.",
            batch_retries,
        );
        delivery_seconds.0.render(
            &mut text.family(
                "tcp_sniffer_delivery_duration_seconds",
                Kind::Histogram,
                "Time of one delivery attempt, request sent to answer read (failures included).",
            ),
            &[],
        );
        one(
            &mut text,
            "tcp_sniffer_last_delivery_status",
            Kind::Gauge,
            "HTTP status of the last delivery attempt; 0 for a connection error or timeout.",
            last_status,
        );
        one(
            &mut text,
            "tcp_sniffer_last_delivery_timestamp_seconds",
            Kind::Gauge,
            "Unix time of the last delivered batch.",
            last_delivery_unix,
        );
        text.family(
            "tcp_sniffer_healthy",
            Kind::Gauge,
            "1 while the agent works; 0 once a sender thread failed or stdout closed.",
        )
        .sample(&[], u64::from(self.healthy()));
        one(
            &mut text,
            "tcp_sniffer_ports_captured",
            Kind::Gauge,
            "TCP ports the kernel program matches now.",
            ports_captured,
        );
        let mut family = text.family(
            "tcp_sniffer_ports_changes_total",
            Kind::Counter,
            "New tcp-sniffer/ports values seen in PORTS_FILE, by result.",
        );
        for (result, value) in [
            ("applied", ports_changes_applied),
            ("refused", ports_changes_refused),
        ] {
            family.sample(&[("result", result)], get(value));
        }
        let tracked = *connections.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((counts, tracked)) = tracked {
            one(
                &mut text,
                "tcp_sniffer_connection_records_total",
                Kind::Counter,
                "Connection records made (also counted as records delivered or dropped).",
                connection_records,
            );
            render_connections(&mut text, &counts, tracked);
        }
        if capture.enabled.load(Relaxed) {
            render_capture(&mut text, capture);
        }
        text.finish()
    }

    /// Whether the agent works: false once a sender thread failed or stdout closed.
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.failure().is_none()
    }

    /// Why the agent cannot go on, if it cannot.
    #[must_use]
    pub fn failure(&self) -> Option<&'static str> {
        if self.sender_failed.load(Relaxed) {
            Some("a sender thread failed; delivery cannot continue")
        } else if self.output_failed.load(Relaxed) {
            Some("stdout is closed; records cannot be written")
        } else {
            None
        }
    }
}

/// The packet capture endpoint's families.
fn render_capture(text: &mut Exposition, capture: &CaptureStats) {
    let CaptureStats {
        enabled: _,
        started,
        refused_busy,
        refused_bad_request,
        active,
        packets,
        bytes,
        copied,
        dropped_ring_full,
        dropped_slow_client,
        recorder_forgotten,
    } = capture;
    let mut family = text.family(
        "tcp_sniffer_captures_total",
        Kind::Counter,
        "Packet capture requests, by result: started, or refused (busy: CAPTURE_MAX_CONCURRENT running; bad_request: malformed or not allowed).",
    );
    for (result, value) in [
        ("started", started),
        ("busy", refused_busy),
        ("bad_request", refused_bad_request),
    ] {
        family.sample(&[("result", result)], get(value));
    }
    let mut one = |name, kind, help, value| {
        text.family(name, kind, help).sample(&[], get(value));
    };
    one(
        "tcp_sniffer_captures_active",
        Kind::Gauge,
        "Packet captures being served now.",
        active,
    );
    one(
        "tcp_sniffer_capture_packets_total",
        Kind::Counter,
        "Packets written into packet captures.",
        packets,
    );
    one(
        "tcp_sniffer_capture_bytes_total",
        Kind::Counter,
        "Bytes of pcapng sent to capture clients.",
        bytes,
    );
    one(
        "tcp_sniffer_capture_packets_copied_total",
        Kind::Counter,
        "Packets the kernel program copied for captures and the flight recorder.",
        copied,
    );
    let mut family = text.family(
        "tcp_sniffer_capture_packets_dropped_total",
        Kind::Counter,
        "Packets captures asked for and lost, by reason: ring_full (the kernel's ring), slow_client (a client read slower than the traffic came).",
    );
    for (reason, value) in [
        ("ring_full", dropped_ring_full),
        ("slow_client", dropped_slow_client),
    ] {
        family.sample(&[("reason", reason)], get(value));
    }
    text.family(
        "tcp_sniffer_capture_recorder_forgotten_total",
        Kind::Counter,
        "Packets the flight recorder (CAPTURE_RECORDER_BYTES) forgot to make room for newer ones.",
    )
    .sample(&[], get(recorder_forgotten));
}

/// The connection tracker's families: bounded labels only (how a connection ended), never an
/// address or a port.
fn render_connections(text: &mut Exposition, counts: &Counts, tracked: u64) {
    let Counts {
        opened,
        closed,
        interim: _,
        retransmits,
        handshakes,
        ack_rtt,
        rtt_untracked,
    } = counts;
    text.family(
        "tcp_sniffer_connections_tracked",
        Kind::Gauge,
        "Connections in the tracker's table now.",
    )
    .sample(&[], tracked);
    text.family(
        "tcp_sniffer_connections_opened_total",
        Kind::Counter,
        "Connections that entered the tracker (a SYN, or the first packet seen mid-stream).",
    )
    .sample(&[], *opened);
    let mut family = text.family(
        "tcp_sniffer_connections_closed_total",
        Kind::Counter,
        "Connections reported closed, by how they ended (evicted: pushed out of a full table).",
    );
    for (reason, value) in Counts::REASONS.iter().zip(closed) {
        family.sample(&[("end_reason", reason)], *value);
    }
    text.family(
        "tcp_sniffer_retransmitted_segments_total",
        Kind::Counter,
        "Payload segments starting before the highest sequence number already seen from their sender.",
    )
    .sample(&[], *retransmits);
    histogram(
        &mut text.family(
            "tcp_sniffer_handshake_syn_to_synack_seconds",
            Kind::Histogram,
            "Time from the client's SYN to the server's SYN-ACK, as seen on the interface.",
        ),
        &[],
        handshakes,
    );
    let mut family = text.family(
        "tcp_sniffer_ack_rtt_seconds",
        Kind::Histogram,
        "Time from a segment to the ACK that acknowledges it exactly (tshark's tcp.analysis.ack_rtt), by the side that sent the ACK.",
    );
    for (side, times) in ["client", "server"].iter().zip(ack_rtt) {
        histogram(&mut family, &[("side", side)], times);
    }
    text.family(
        "tcp_sniffer_ack_rtt_untracked_segments_total",
        Kind::Counter,
        "Segments not kept for round trips because as many as a side keeps were waiting for their ACK.",
    )
    .sample(&[], *rtt_untracked);
}

/// A tracker histogram's lines with these labels.
fn histogram(
    family: &mut cli_support::prometheus::Family<'_>,
    labels: &[(&str, &str)],
    times: &TimeHistogram,
) {
    let mut cumulative = 0;
    let buckets: Vec<(f64, u64)> = TIME_BOUNDS_NS
        .iter()
        .zip(times.buckets)
        .map(|(&bound, count)| {
            cumulative += count;
            (Duration::from_nanos(bound).as_secs_f64(), cumulative)
        })
        .collect();
    family.histogram(
        labels,
        &buckets,
        Duration::from_nanos(times.sum_ns).as_secs_f64(),
        times.count,
    );
}

/// Connections the metrics endpoint serves at once; more are closed at accept. A scrape and a
/// probe need two; idle connections beyond the cap must not take the process's descriptors.
pub const MAX_METRICS_CONNECTIONS: usize = 16;
/// The longest a metrics connection may take.
const METRICS_CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

/// The metrics endpoint, as [`endpoint`] serves it.
pub const ENDPOINT: Endpoint = Endpoint {
    variable: "METRICS_ADDR",
    what: "metrics and /healthz",
    max_connections: MAX_METRICS_CONNECTIONS,
};

/// Serves `GET /metrics` and `GET /healthz` over plain HTTP/1.1, one request per connection, on
/// `addr` (bound already, or not: see [`endpoint::listen_and_serve`]).
///
/// Requests are small and rare (a scrape every few seconds), so each connection gets a task, a
/// 5-second deadline and an 8 KiB limit instead of a full HTTP stack, and at most
/// [`MAX_METRICS_CONNECTIONS`] are served at once.
pub async fn listen_and_serve(
    addr: SocketAddr,
    first: std::io::Result<TcpListener>,
    stats: Arc<Stats>,
) {
    endpoint::listen_and_serve(ENDPOINT, addr, first, move |stream, peer| {
        let stats = Arc::clone(&stats);
        async move {
            if let Err(err) =
                tokio::time::timeout(METRICS_CONNECTION_DEADLINE, respond(stream, &stats)).await
            {
                debug!(peer = peer.to_string().as_str(), error = err.to_string().as_str(); "metrics request timed out");
            }
        }
    })
    .await;
}

async fn respond(mut stream: TcpStream, stats: &Stats) {
    let Some(line) = endpoint::read_request_line(&mut stream).await else {
        return;
    };
    let (status, content_type, body) = route(&line.method, &line.target, stats);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Chooses the response for a request.
fn route(method: &str, target: &str, stats: &Stats) -> (&'static str, &'static str, String) {
    let text = "text/plain; charset=utf-8";
    match (method, target) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            stats.render(),
        ),
        ("GET", "/healthz") if stats.healthy() => ("200 OK", text, "ok\n".to_owned()),
        ("GET", "/healthz") => (
            "503 Service Unavailable",
            text,
            format!(
                "{}; the agent is stopping\n",
                stats.failure().unwrap_or_default()
            ),
        ),
        ("GET", _) => (
            "404 Not Found",
            text,
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            text,
            "only GET is served\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_help_and_type() {
        let stats = Stats::default();
        add(&stats.records_delivered, 42);
        add(&stats.dropped_buffer_full, 3);
        stats.last_status.store(503, Relaxed);
        let text = stats.render();
        assert!(text.contains("# TYPE tcp_sniffer_records_delivered_total counter\ntcp_sniffer_records_delivered_total 42\n"));
        assert!(text.contains("tcp_sniffer_records_dropped_total{reason=\"buffer_full\"} 3\n"));
        assert!(text.contains("tcp_sniffer_records_dropped_total{reason=\"ring_full\"} 0\n"));
        assert!(text.contains("tcp_sniffer_last_delivery_status 503\n"));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        // 19 + build info, start time, two ring gauges, and a histogram of 12 buckets.
        assert_eq!((samples, helps), (19 + 4 + 15, 13 + 5));
        assert!(text.contains("tcp_sniffer_healthy 1\n"));
        assert!(text.contains("tcp_sniffer_ports_changes_total{result=\"refused\"} 0\n"));
        assert!(
            !text.contains("tcp_sniffer_connection") && !text.contains("handshake"),
            "no connection families unless tracking"
        );
    }

    #[test]
    fn connection_families_have_bounded_labels() {
        let stats = Stats::default();
        let mut counts = Counts {
            opened: 7,
            retransmits: 3,
            ..Counts::default()
        };
        let evicted = Counts::REASONS
            .iter()
            .position(|&r| r == "evicted")
            .unwrap();
        counts.closed[evicted] = 2;
        counts.handshakes.buckets[2] = 1;
        counts.handshakes.buckets[6] = 1;
        counts.handshakes.count = 2;
        counts.handshakes.sum_ns = 1_030_000;
        *stats.connections.lock().unwrap() = Some((counts, 5));
        add(&stats.connection_records, 9);
        let text = stats.render();
        for line in [
            "tcp_sniffer_connection_records_total 9\n",
            "tcp_sniffer_connections_tracked 5\n",
            "tcp_sniffer_connections_opened_total 7\n",
            "tcp_sniffer_connections_closed_total{end_reason=\"evicted\"} 2\n",
            "tcp_sniffer_connections_closed_total{end_reason=\"fin\"} 0\n",
            "tcp_sniffer_retransmitted_segments_total 3\n",
            "tcp_sniffer_handshake_syn_to_synack_seconds_bucket{le=\"0.00005\"} 1\n",
            "tcp_sniffer_handshake_syn_to_synack_seconds_bucket{le=\"0.001\"} 2\n",
            "tcp_sniffer_handshake_syn_to_synack_seconds_bucket{le=\"+Inf\"} 2\n",
            "tcp_sniffer_handshake_syn_to_synack_seconds_sum 0.00103\n",
            "tcp_sniffer_handshake_syn_to_synack_seconds_count 2\n",
            "tcp_sniffer_ack_rtt_seconds_bucket{side=\"client\",le=\"+Inf\"} 0\n",
            "tcp_sniffer_ack_rtt_seconds_count{side=\"server\"} 0\n",
            "tcp_sniffer_ack_rtt_untracked_segments_total 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("connection") || l.contains("handshake") || l.contains("ack_rtt")
            })
            .filter_map(|l| l.split_once('{').map(|(_, rest)| rest))
            .map(|rest| rest.split('=').next().unwrap())
            .collect();
        assert!(
            labels
                .iter()
                .all(|l| ["end_reason", "le", "side"].contains(l)),
            "{labels:?}"
        );
    }

    #[test]
    fn dropped_total_sums_every_reason() {
        let stats = Stats::default();
        add(&stats.dropped_ring_full, 1);
        add(&stats.dropped_buffer_full, 2);
        add(&stats.dropped_rejected, 4);
        add(&stats.dropped_undeliverable, 8);
        assert_eq!(stats.dropped_total(), 15);
    }

    #[test]
    fn routes() {
        let stats = Stats::default();
        assert_eq!(route("GET", "/metrics", &stats).0, "200 OK");
        assert_eq!(route("GET", "/healthz", &stats).2, "ok\n");
        stats.sender_failed.store(true, Relaxed);
        assert_eq!(
            route("GET", "/healthz", &stats).0,
            "503 Service Unavailable"
        );
        assert_eq!(route("GET", "/", &stats).0, "404 Not Found");
        assert_eq!(
            route("POST", "/metrics", &stats).0,
            "405 Method Not Allowed"
        );
    }
}
