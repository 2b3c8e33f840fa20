//! The plain-HTTP port of the probes and `/metrics`, for the kubelet and Prometheus, so the
//! webhook port can be opened to the API server alone.

use std::{sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use warp::Filter as _;

use super::routes::{App, probes, rejection};

/// Connections the plain-HTTP metrics port keeps open at once.
const METRICS_MAX_CONNECTIONS: usize = 16;
/// The longest a metrics-port connection stays open (a scrape or a probe takes milliseconds).
const METRICS_CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// Serves the probes (`/healthz`, `/readyz`, `/metrics`) over plain HTTP/1.1 on `listener`, for
/// the kubelet and Prometheus. At most 16 connections, each for at most 10 s.
pub async fn serve_metrics(listener: TcpListener, app: Arc<App>) {
    let service = warp::service(
        probes(Arc::clone(&app))
            .recover(move |r| rejection(Arc::clone(&app), r))
            .unify(),
    );
    let connections = Arc::new(Semaphore::new(METRICS_MAX_CONNECTIONS));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .max_buf_size(16 << 10);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            continue;
        };
        let connection =
            builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service.clone()));
        tokio::spawn(async move {
            let _ = tokio::time::timeout(METRICS_CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}
