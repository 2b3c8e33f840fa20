//! The HTTPS server: warp routes served by hyper-util (HTTP/1.1 and HTTP/2) over tokio-rustls,
//! within the bounds of [`crate::limits`].
//!
//! warp 0.4 has no TLS of its own, so connections are accepted here ([`serve`]), the TLS
//! handshake is done with tokio-rustls and each stream is handed to hyper with
//! `warp::service(routes)` (`connection.rs`). What a request gets is [`routes()`] (`routes.rs`);
//! the plain-HTTP probes and metrics port is [`serve_metrics`] (`metrics_port.rs`).

mod connection;
mod metrics_port;
mod routes;

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use log::{error, info, warn};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};

use self::connection::Connection;
pub use self::{
    metrics_port::serve_metrics,
    routes::{App, MAX_BODY_BYTES, routes},
};
use crate::limits::{Cut, H1_MAX_BUF_BYTES, H2_WINDOW_BYTES, MAX_STREAMS_PER_CONNECTION};

/// On shutdown, connections get this long to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTPS on `listener` within `app.limits` until `shutdown` resolves, then lets open
/// connections finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = app.limits;
    let acceptor = TlsAcceptor::from(tls);
    let service = warp::service(routes(Arc::clone(&app)));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(H1_MAX_BUF_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(H2_WINDOW_BYTES)
        .initial_connection_window_size(H2_WINDOW_BYTES)
        .adaptive_window(false)
        .max_header_list_size(64 << 10)
        .max_send_buf_size(64 << 10);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    error!(error = err.to_string().as_str(); "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            // Closed at once: a connection over the cap costs a socket for microseconds.
            app.metrics.cuts.record(Cut::ConnectionCap);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            app: Arc::clone(&app),
            acceptor: acceptor.clone(),
            service: service.clone(),
            builder: builder.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            connection.run(tcp, peer).await;
            drop(permit);
        });
    }
    app.ready.store(false, Ordering::Relaxed);
    info!("draining connections");
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all permits back means all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.acquire_many(all))
        .await
        .is_err()
    {
        warn!("connections still open after the drain timeout; closing them");
    }
}
