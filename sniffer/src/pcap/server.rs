//! The capture endpoint on `CAPTURE_LISTEN`: `GET /capture` streams the packets matched from now
//! on as pcapng, `GET /capture/recent` what the flight recorder holds. Plain HTTP/1.1, one
//! request per connection; the body is the pcapng itself, ended by closing the connection, so
//! `curl -sN … | wireshark -k -i -` shows each packet as it is read.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use log::{debug, info};
use sniffer_common::CAPTURE_MAX_BYTES;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::{Instant, timeout},
};

use super::{
    Captures, Shared, Subscription,
    config::CaptureConfig,
    pcapng::{self, LinkType, Statistics},
    request::{self, Limits, Live, Request, RequestError},
};
use crate::{
    capture::{clock::WallClock, packets::Wanted},
    endpoint::{self, Endpoint},
    metrics::{Stats, add, get},
};

/// The longest a client may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The longest one write may wait on a client that reads nothing; then the capture ends.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Connections served beyond the captures allowed, so that one more is answered `429` rather
/// than closed.
const SPARE_CONNECTIONS: usize = 4;
/// Reads of the ring (each up to `MAX_BATCH` packets) written per write call at most.
const BATCHES_PER_WRITE: usize = 16;
/// Packets of the flight recorder written per write call.
const PACKETS_PER_WRITE: usize = 1024;

/// The interface as a capture's Interface Description Block names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// `if_name`: the interface captured.
    pub name: String,
    /// `if_description`: which pod, namespace and node.
    pub description: String,
    /// What precedes the IP header.
    pub link: LinkType,
}

/// Everything a capture request needs.
pub struct Server {
    /// The captures running and the recorder.
    pub captures: Arc<Captures>,
    /// The endpoint's settings.
    pub config: CaptureConfig,
    /// The ports captured now (they follow `PORTS_FILE`).
    pub ports: watch::Receiver<Vec<u16>>,
    /// The interface captured.
    pub interface: Interface,
    /// Where captures are counted.
    pub stats: Arc<Stats>,
}

impl Server {
    /// Serves captures on `addr` (bound already, or not: see [`endpoint::listen_and_serve`]).
    pub async fn listen_and_serve(self, addr: SocketAddr, first: std::io::Result<TcpListener>) {
        let endpoint = Endpoint {
            variable: "CAPTURE_LISTEN",
            what: "packet captures",
            max_connections: self.config.max_concurrent + SPARE_CONNECTIONS,
        };
        let server = Arc::new(self);
        endpoint::listen_and_serve(endpoint, addr, first, move |stream, peer| {
            let server = Arc::clone(&server);
            async move { server.respond(stream, peer).await }
        })
        .await;
    }

    async fn respond(&self, mut stream: TcpStream, peer: SocketAddr) {
        let Ok(Some(line)) =
            timeout(REQUEST_DEADLINE, endpoint::read_request_line(&mut stream)).await
        else {
            return;
        };
        let asked = {
            let ports = self.ports.borrow();
            request::parse(
                &line.method,
                &line.target,
                Limits {
                    max_duration: self.config.max_duration,
                    max_snaplen: self.config.max_snaplen,
                    ports: &ports,
                },
            )
        };
        let result = match asked {
            Err(refused) => {
                add(&self.stats.capture.refused_bad_request, 1);
                refuse(&mut stream, &refused).await
            }
            Ok(Request::Live(live)) => self.live(&mut stream, peer, live).await,
            Ok(Request::Recent { ports }) => self.recent(&mut stream, ports.as_deref()).await,
        };
        if let Err(err) = result {
            debug!(peer = peer.to_string().as_str(), error = err.to_string().as_str();
                   "capture connection ended");
        }
        let _ = stream.shutdown().await;
    }

    /// Streams the packets matched from now on until the request's limits or the client end it.
    async fn live(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        live: Live,
    ) -> std::io::Result<()> {
        let Live {
            duration,
            max_packets,
            max_bytes,
            snaplen,
            ports,
        } = live;
        let wanted = Wanted {
            headers: snaplen.is_none(),
            snaplen: snaplen.unwrap_or(0),
        };
        let ends = Instant::now() + duration;
        let mut subscription = match self.captures.subscribe(ports.clone(), wanted, ends) {
            Ok(subscription) => subscription,
            Err(busy) => {
                let seconds = busy.retry_after.as_secs() + 1;
                let message = format!(
                    "{} capture(s) running, the most CAPTURE_MAX_CONCURRENT allows; retry in {seconds} s\n",
                    self.config.max_concurrent
                );
                return write_response(
                    stream,
                    "429 Too Many Requests",
                    &[("Retry-After", &seconds.to_string())],
                    &message,
                )
                .await;
            }
        };
        let ring_full_before = get(&self.stats.capture.dropped_ring_full);
        let start_ns = wall_now_ns();
        info!(peer = peer.to_string().as_str(), seconds = duration.as_secs(),
              ports:serde = ports, snaplen = snaplen.unwrap_or(0); "packet capture started");
        let mut head = response_head();
        let header_len = head.len();
        self.file_start(&mut head, snaplen.unwrap_or(CAPTURE_MAX_BYTES));
        let mut sent = (head.len() - header_len) as u64;
        self.send(stream, &head).await?;

        let (mut written, mut counted) = (0u64, 0u64);
        let mut buf = Vec::with_capacity(256 * 1024);
        let mut batches = Vec::with_capacity(BATCHES_PER_WRITE);
        let mut probe = [0u8; 64];
        let mut full = false;
        while !full {
            tokio::select! {
                () = tokio::time::sleep_until(ends) => break,
                gone = stream.read(&mut probe) => match gone {
                    // A client only reads: anything it sends, or its end, ends the capture.
                    Ok(_) | Err(_) => break,
                },
                received = subscription.packets.recv_many(&mut batches, BATCHES_PER_WRITE) => {
                    if received == 0 {
                        break;
                    }
                }
            }
            let clock = WallClock::now();
            buf.clear();
            let packets = batches.iter().flat_map(|batch: &Shared| batch.iter());
            for packet in packets {
                if ports.as_deref().is_some_and(|ports| !packet.matches(ports)) {
                    continue;
                }
                let before = buf.len();
                let ts = u64::try_from(clock.wall(packet.ts_ns).unix_nanos()).unwrap_or(0);
                let keep = snaplen.unwrap_or(packet.headers_len) as usize;
                let data = &packet.data[..packet.data.len().min(keep)];
                pcapng::enhanced_packet(&mut buf, ts, packet.len, data);
                if max_bytes.is_some_and(|max| sent + buf.len() as u64 > max) {
                    buf.truncate(before);
                    full = true;
                    break;
                }
                written += 1;
                if max_packets.is_some_and(|max| written >= max) {
                    full = true;
                    break;
                }
            }
            batches.clear();
            sent += buf.len() as u64;
            self.send(stream, &buf).await?;
            add(&self.stats.capture.packets, written - counted);
            counted = written;
        }
        self.finish(stream, &subscription, start_ns, written, ring_full_before)
            .await
    }

    /// Ends a live capture with its statistics.
    async fn finish(
        &self,
        stream: &mut TcpStream,
        subscription: &Subscription,
        start_ns: u64,
        written: u64,
        ring_full_before: u64,
    ) -> std::io::Result<()> {
        // Packets lost to a full kernel ring while this capture ran: the ring is shared, so a
        // capture of some ports is also told of losses on the others.
        let ring_full = get(&self.stats.capture.dropped_ring_full) - ring_full_before;
        let dropped = subscription.dropped.load(Relaxed) + ring_full;
        let mut end = Vec::new();
        pcapng::interface_statistics(
            &mut end,
            Statistics {
                start_ns,
                end_ns: wall_now_ns(),
                received: written + dropped,
                dropped,
            },
        );
        info!(packets = written, dropped; "packet capture ended");
        self.send(stream, &end).await
    }

    /// Sends what the flight recorder holds.
    async fn recent(&self, stream: &mut TcpStream, ports: Option<&[u16]>) -> std::io::Result<()> {
        let Some(packets) = self.captures.recent(ports) else {
            add(&self.stats.capture.refused_bad_request, 1);
            return write_response(
                stream,
                "404 Not Found",
                &[],
                "the flight recorder is off: CAPTURE_RECORDER_BYTES is 0\n",
            )
            .await;
        };
        add(&self.stats.capture.started, 1);
        let mut buf = response_head();
        self.file_start(&mut buf, CAPTURE_MAX_BYTES);
        let clock = WallClock::now();
        for chunk in packets.chunks(PACKETS_PER_WRITE) {
            for packet in chunk {
                let ts = u64::try_from(clock.wall(packet.ts_ns).unix_nanos()).unwrap_or(0);
                // The recorder keeps each packet cut at its headers already.
                pcapng::enhanced_packet(&mut buf, ts, packet.len, &packet.data);
            }
            add(&self.stats.capture.packets, chunk.len() as u64);
            self.send(stream, &buf).await?;
            buf.clear();
        }
        Ok(())
    }

    /// The Section Header and Interface Description blocks.
    fn file_start(&self, out: &mut Vec<u8>, snaplen: u32) {
        pcapng::section_header(
            out,
            concat!("tcp-sniffer ", env!("CARGO_PKG_VERSION")),
            std::env::consts::ARCH,
            "Linux",
        );
        pcapng::interface_description(
            out,
            self.interface.link,
            snaplen,
            &self.interface.name,
            &self.interface.description,
        );
    }

    /// Writes `bytes` within [`WRITE_DEADLINE`], counting them.
    async fn send(&self, stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        timeout(WRITE_DEADLINE, stream.write_all(bytes))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        add(&self.stats.capture.bytes, bytes.len() as u64);
        Ok(())
    }
}

/// The head of a pcapng response: no length, the end of the connection ends the file.
fn response_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-pcapng\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n".to_vec()
}

/// Now, nanoseconds since the Unix epoch.
fn wall_now_ns() -> u64 {
    u64::try_from(cli_support::clock::realtime_ns()).unwrap_or(0)
}

async fn refuse(stream: &mut TcpStream, refused: &RequestError) -> std::io::Result<()> {
    write_response(stream, refused.status(), &[], &format!("{refused}\n")).await
}

async fn write_response(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    timeout(WRITE_DEADLINE, stream.write_all(response.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
