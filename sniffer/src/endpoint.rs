//! The small HTTP/1.1 endpoints the sniffer serves (metrics and probes on `METRICS_ADDR`, packet
//! captures on `CAPTURE_LISTEN`): one request per connection, a bounded number of connections,
//! a bounded request head read within a deadline, and an accept loop that neither spins nor
//! stops when accepting fails, nor makes the agent fail when its address is taken.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use log::{error, info, warn};
use tokio::{
    io::AsyncReadExt as _,
    net::{TcpListener, TcpStream},
};

/// The most bytes of a request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8192;
/// Waits after a failed accept (out of descriptors, say) grow from the first to the last.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// How often a failing accept is logged.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often an address that could not be bound is tried again.
const BIND_RETRY: Duration = Duration::from_secs(10);

/// An endpoint's name (in logs) and bounds.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// The variable that sets its address, as logs name it (`METRICS_ADDR`).
    pub variable: &'static str,
    /// What it serves, as logs name it.
    pub what: &'static str,
    /// Connections served at once; more are closed at accept, so that idle connections cannot
    /// take the process's descriptors.
    pub max_connections: usize,
}

/// The request line of a request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// `GET`, …
    pub method: String,
    /// The path and query.
    pub target: String,
}

/// Reads a request head (up to [`MAX_HEAD_BYTES`]) from `stream` and returns its request line;
/// `None` when the client closes first, sends too much, or the line is not `METHOD TARGET ...`.
pub async fn read_request_line(stream: &mut TcpStream) -> Option<RequestLine> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD_BYTES {
            return None;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    request_line(&head)
}

/// The request line of `head`.
fn request_line(head: &[u8]) -> Option<RequestLine> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    (!method.is_empty() && target.starts_with('/')).then(|| RequestLine {
        method: method.to_owned(),
        target: target.to_owned(),
    })
}

/// Listens on `addr`. The IPv6 wildcard (`[::]:9464`: every address of the pod, IPv4 included)
/// falls back to the IPv4 wildcard in a pod without IPv6.
///
/// # Errors
///
/// When neither can be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Err(err)
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && (err.kind() == std::io::ErrorKind::AddrNotAvailable
                    || err.raw_os_error() == Some(libc::EAFNOSUPPORT)) =>
        {
            TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port())).await
        }
        bound => bound,
    }
}

/// Serves `handle` on `addr`, bound already (`first`) or not. When the address cannot be taken
/// (an app in the pod uses the port), capture goes on: the error is logged and the bind retried
/// every 10 s, so a sidecar never crash-loops over one of its endpoints.
pub async fn listen_and_serve<H, F>(
    endpoint: Endpoint,
    addr: SocketAddr,
    first: std::io::Result<TcpListener>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut bound = first;
    loop {
        match bound {
            Ok(listener) => return serve(endpoint, listener, handle).await,
            Err(err) => {
                error!(address = addr.to_string().as_str(), error = err.to_string().as_str();
                       "cannot listen on {}; {} off until it can (retrying every 10 s)",
                       endpoint.variable, endpoint.what);
                tokio::time::sleep(BIND_RETRY).await;
                bound = bind(addr).await;
                if bound.is_ok() {
                    info!(address = addr.to_string().as_str(); "{} listening", endpoint.what);
                }
            }
        }
    }
}

/// Accepts connections on `listener` and runs `handle` on each in a task of its own, at most
/// `endpoint.max_connections` at once. An accept that fails waits before the next one (up to a
/// second) instead of spinning, and is logged at most every 10 s.
pub async fn serve<H, F>(endpoint: Endpoint, listener: TcpListener, handle: H)
where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(AtomicUsize::new(0));
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut logged: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF.0;
                accepted
            }
            Err(err) => {
                if logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_INTERVAL) {
                    warn!(error = err.to_string().as_str();
                          "{} cannot accept connections; retrying", endpoint.what);
                    logged = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        if open.fetch_add(1, Relaxed) >= endpoint.max_connections {
            open.fetch_sub(1, Relaxed);
            drop(stream);
            continue;
        }
        let open = Arc::clone(&open);
        let served = handle(stream, peer);
        tokio::spawn(async move {
            served.await;
            open.fetch_sub(1, Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line(b"GET /capture?seconds=5 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(RequestLine {
                method: "GET".into(),
                target: "/capture?seconds=5".into()
            })
        );
        assert_eq!(request_line(b"GET\r\n\r\n"), None);
        assert_eq!(request_line(b"GET capture HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe /x\r\n\r\n"), None);
    }
}
