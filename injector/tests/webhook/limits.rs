//! Memory and time bounds under hostile clients: 500 connections that hold large bodies open,
//! multiplex many streams, or stay silent. Peak RSS (`VmHWM`) must stay under 48 MiB, stalled
//! connections are cut well before the API server's 30 s webhook timeout, and the webhook answers
//! again once they are gone.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream, rustls};

use crate::common::{Server, client, post, start_default, tls_config};

/// The bound on the injector's peak resident memory (the Deployment's limit is 64 MiB).
const PEAK_RSS_LIMIT_KIB: u64 = 48 * 1024;
/// The largest body the webhook takes.
const BODY: usize = 4 << 20;

/// Peak resident set size of a process, from `/proc/PID/status`.
pub fn peak_rss_kib(pid: u32) -> u64 {
    testbed::memory_kib(pid, "VmHWM").expect("VmHWM")
}

/// A request body that sends `chunks` of 64 KiB and then stalls forever, never ending.
struct Stalling {
    chunks: usize,
}

impl Body for Stalling {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return Poll::Pending;
        }
        self.chunks -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; 64 << 10])))))
    }
}

async fn tls(port: u16, config: Arc<rustls::ClientConfig>) -> Option<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .ok()
}

/// What one hostile connection does.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// HTTP/1.1: a 4 MiB `Content-Length`, then all but the last byte, then silence.
    AlmostWholeBody,
    /// HTTP/2: 30 streams, each announcing 4 MiB and sending until flow control stops it.
    ManyStreams,
    /// A TLS handshake, then nothing (HTTP/1.1 or h2 negotiated).
    SilentAfterHandshake { h2: bool },
    /// TCP only: the TLS handshake never starts.
    NoHandshake,
}

/// Runs one attack until the server closes the connection; returns when it did (a connection
/// refused or reset at once counts as closed then).
async fn attack(port: u16, ca: Arc<String>, kind: Attack) -> Instant {
    attempt(port, ca, kind).await.unwrap_or_else(Instant::now)
}

async fn attempt(port: u16, ca: Arc<String>, kind: Attack) -> Option<Instant> {
    match kind {
        Attack::AlmostWholeBody => {
            let mut stream = tls(port, tls_config(&ca, rustls::DEFAULT_VERSIONS, &[])).await?;
            let head = format!(
                "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.ok()?;
            let chunk = vec![b' '; 64 << 10];
            let mut sent = 0;
            while sent < BODY - 1 {
                let n = chunk.len().min(BODY - 1 - sent);
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return Some(Instant::now());
                }
                sent += n;
            }
            wait_closed(stream).await
        }
        Attack::ManyStreams => {
            let stream = tls(port, tls_config(&ca, rustls::DEFAULT_VERSIONS, &[b"h2"])).await?;
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .ok()?;
            let driver = tokio::spawn(connection);
            for _ in 0..30 {
                let request = hyper::Request::post(format!("https://localhost:{port}/mutate"))
                    .header("content-type", "application/json")
                    .header("content-length", BODY)
                    .body(Stalling {
                        chunks: BODY / (64 << 10) - 1,
                    })
                    .unwrap();
                let mut sender = sender.clone();
                tokio::spawn(async move { sender.send_request(request).await });
            }
            let _ = driver.await;
            Some(Instant::now())
        }
        Attack::SilentAfterHandshake { h2 } => {
            let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
            let stream = tls(port, tls_config(&ca, rustls::DEFAULT_VERSIONS, alpn)).await?;
            wait_closed(stream).await
        }
        Attack::NoHandshake => {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            let mut buf = [0u8; 1024];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            Some(Instant::now())
        }
    }
}

async fn wait_closed(mut stream: TlsStream<TcpStream>) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Some(Instant::now()),
            Ok(_) => {}
        }
    }
}

/// The mixes of 500 connections tried: 100 of each kind (the silent ones half HTTP/1.1, half h2),
/// and 500 of each of the kinds that make the server hold the most.
fn mixes() -> Vec<(&'static str, Vec<Attack>)> {
    let mut balanced = Vec::new();
    for i in 0..100 {
        balanced.push(Attack::AlmostWholeBody);
        balanced.push(Attack::ManyStreams);
        balanced.push(Attack::SilentAfterHandshake { h2: i % 2 == 0 });
        balanced.push(Attack::SilentAfterHandshake { h2: i % 2 == 1 });
        balanced.push(Attack::NoHandshake);
    }
    vec![
        ("balanced", balanced),
        ("h2 streams", vec![Attack::ManyStreams; 500]),
        ("4 MiB bodies", vec![Attack::AlmostWholeBody; 500]),
        (
            "silent h2",
            vec![Attack::SilentAfterHandshake { h2: true }; 500],
        ),
    ]
}

/// Runs `attacks` against a fresh server; returns its peak RSS and when the last connection was
/// cut, and checks that it serves again afterwards.
fn under_attack(attacks: Vec<Attack>) -> (u64, Duration) {
    let (_dir, certs, server) = start_default();
    let ca = Arc::new(certs.ca_pem.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let cut = runtime.block_on(async {
        let tasks: Vec<_> = attacks
            .into_iter()
            .map(|kind| {
                let ca = Arc::clone(&ca);
                let port = server.port;
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(60), attack(port, ca, kind))
                        .await
                        .ok()
                })
            })
            .collect();
        let mut cut = Vec::new();
        for task in tasks {
            cut.push(task.await.unwrap());
        }
        cut
    });
    let peak = peak_rss_kib(server.child.id());
    let slowest = cut
        .iter()
        .map(|at| at.map_or(Duration::MAX, |at| at - start))
        .max()
        .unwrap();
    assert_still_serves(&server, &certs.ca_pem);
    // Hundreds of cuts, but at most one log line per reason every 10 s.
    let elapsed = start.elapsed().as_secs();
    for (reason, lines) in cut_lines(&server) {
        assert!(
            lines <= elapsed / 10 + 1,
            "{lines} log lines for {reason} in {elapsed} s"
        );
    }
    (peak, slowest)
}

#[test]
fn five_hundred_hostile_connections_stay_under_48_mib_and_are_cut_in_time() {
    for (name, attacks) in mixes() {
        let (peak, slowest) = under_attack(attacks);
        eprintln!(
            "500 hostile connections ({name}): VmHWM {peak} KiB; last one cut after {slowest:?}"
        );
        assert!(
            peak < PEAK_RSS_LIMIT_KIB,
            "{name}: peak RSS {peak} KiB (limit {PEAK_RSS_LIMIT_KIB} KiB)"
        );
        // The server closed every connection, well within the API server's 30 s timeout.
        assert!(
            slowest < Duration::from_secs(25),
            "{name}: a connection stayed open {slowest:?}"
        );
    }
}

/// Log lines about cuts, by reason.
fn cut_lines(server: &Server) -> std::collections::BTreeMap<String, u64> {
    let mut lines = std::collections::BTreeMap::new();
    for line in server.log_lines() {
        if line["level"] == "WARN" && line["count"].is_u64() {
            *lines
                .entry(line["reason"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    lines
}

/// A request whose body stops gets 408 at the body deadline, and connections silent after the
/// handshake (HTTP/1.1 and h2) are closed at the idle deadline: within the API server's 30 s
/// webhook timeout, where they used to stay open for minutes.
#[test]
fn stalled_bodies_and_silent_connections_are_cut_at_their_deadlines() {
    let (_dir, certs, server) = start_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = server.port;
    let (body, silent_h1, silent_h2) = runtime.block_on(async {
        let ca = &certs.ca_pem;
        let stalled_body = async {
            let start = Instant::now();
            let mut stream = tls(port, tls_config(ca, rustls::DEFAULT_VERSIONS, &[])).await.unwrap();
            stream
                .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            (start.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        };
        let silent = |alpn: &'static [u8]| async move {
            let start = Instant::now();
            let stream = tls(port, tls_config(ca, rustls::DEFAULT_VERSIONS, &[alpn])).await.unwrap();
            wait_closed(stream).await;
            start.elapsed()
        };
        tokio::join!(stalled_body, silent(b"http/1.1"), silent(b"h2"))
    });
    let (elapsed, answer) = body;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(8)).contains(&elapsed),
        "408 after {elapsed:?}"
    );
    for elapsed in [silent_h1, silent_h2] {
        assert!(
            (Duration::from_secs(9)..Duration::from_secs(14)).contains(&elapsed),
            "closed after {elapsed:?}"
        );
    }
    let lines = cut_lines(&server);
    assert_eq!(lines.get("body_timeout"), Some(&1), "{lines:?}");
    assert_eq!(lines.get("idle_timeout"), Some(&1), "{lines:?}");
}

fn assert_still_serves(server: &Server, ca: &str) {
    let agent = client(&[ca]);
    let review = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deployment-pod.json"),
    )
    .unwrap();
    let (status, body) = post(&agent, server, &review);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");
}
