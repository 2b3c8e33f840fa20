//! The HTTPS server: warp routes served by hyper-util (HTTP/1.1 and HTTP/2) over tokio-rustls.
//!
//! warp 0.4 has no TLS of its own, so connections are accepted here, the TLS handshake is done
//! with tokio-rustls, and each stream is handed to hyper with `warp::service(routes)`.

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use log::{debug, error, info, warn};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use warp::{Filter as _, Rejection, Reply, http::StatusCode};

use crate::{
    decide::Decision,
    metrics::Metrics,
    options::InjectorOptions,
    review::{self, ReviewError},
};

/// Largest accepted `/mutate` body: an AdmissionReview of an UPDATE carries two objects of up
/// to 1.5 MiB each (etcd's limit), plus the envelope.
pub const MAX_BODY_BYTES: u64 = 4 << 20;
/// A client must finish the TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// … and send a request's headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, connections get this long to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// How to build the container.
    pub options: InjectorOptions,
    /// Counters.
    pub metrics: Metrics,
    /// False once shutdown began: `/readyz` then fails so the Service stops sending requests.
    pub ready: AtomicBool,
}

impl App {
    /// Ready to serve `options`.
    #[must_use]
    pub fn new(options: InjectorOptions) -> Arc<Self> {
        Arc::new(Self {
            options,
            metrics: Metrics::default(),
            ready: AtomicBool::new(true),
        })
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> warp::reply::Response {
    warp::reply::with_status(
        warp::reply::with_header(body.into(), "content-type", "text/plain; charset=utf-8"),
        status,
    )
    .into_response()
}

/// Answers one `/mutate` body and logs the decision.
fn mutate(app: &App, body: &Bytes) -> warp::reply::Response {
    let start = Instant::now();
    match review::review(body, &app.options) {
        Ok(outcome) => {
            let latency = start.elapsed();
            app.metrics.decided(&outcome.decision, latency);
            if log::log_enabled!(log::Level::Info) {
                log_decision(&outcome, latency);
            }
            warp::reply::with_header(outcome.body, "content-type", "application/json")
                .into_response()
        }
        Err(err) => {
            app.metrics.bad_request(start.elapsed());
            warn!(error = err.to_string().as_str(); "bad admission request");
            let status = match err {
                ReviewError::Json(_)
                | ReviewError::ApiVersion(_)
                | ReviewError::Kind(_)
                | ReviewError::MissingRequest => StatusCode::BAD_REQUEST,
            };
            text(status, format!("{err}\n"))
        }
    }
}

/// One JSON line per admission decision.
fn log_decision(outcome: &review::Outcome, latency: Duration) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let (decision, reason, ports): (&str, &str, Option<&[u16]>) = match &outcome.decision {
        Decision::Inject { ports, source, .. } => ("injected", source.label(), Some(ports)),
        Decision::Skip { reason, .. } => ("skipped", reason.label(), None),
        Decision::Deny { reason } => ("denied", reason, None),
    };
    info!(
        namespace = outcome.namespace.as_str(),
        pod = outcome.pod.as_str(),
        uid = outcome.uid.as_str(),
        operation = outcome.operation,
        dry_run = outcome.dry_run,
        decision,
        reason,
        ports:serde = ports,
        latency_us;
        "admission decision"
    );
}

/// Turns warp's rejections into plain-text answers that say what was wrong.
async fn rejection(
    app: Arc<App>,
    rejection: Rejection,
) -> Result<warp::reply::Response, Infallible> {
    let (status, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not found: the webhook serves POST /mutate, GET /healthz, GET /readyz, GET /metrics",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        app.metrics.bad_request(Duration::ZERO);
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than the 4 MiB limit",
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        app.metrics.bad_request(Duration::ZERO);
        (
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        )
    } else {
        (StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(text(status, format!("{message}\n")))
}

/// The routes: `POST /mutate`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
pub fn routes(
    app: Arc<App>,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = Infallible>
+ Clone
+ Send
+ Sync
+ 'static {
    let with_app = {
        let app = Arc::clone(&app);
        warp::any().map(move || Arc::clone(&app))
    };
    // Paths before methods, so an unknown path is a 404 rather than a 405.
    let mutate = warp::path("mutate")
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and(with_app.clone())
        .map(|body: Bytes, app: Arc<App>| mutate(&app, &body));
    let healthz = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| text(StatusCode::OK, "ok\n"));
    let readyz = warp::path("readyz")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| {
            if app.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }
        });
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_app)
        .map(|app: Arc<App>| {
            warp::reply::with_header(
                app.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        });
    mutate
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(move |r| rejection(Arc::clone(&app), r))
        .unify()
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then lets open connections finish
/// (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let service = warp::service(routes(Arc::clone(&app)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    debug!(peer = peer.to_string().as_str(), error = err.to_string().as_str(); "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(peer = peer.to_string().as_str(); "TLS handshake timed out");
                    return;
                }
            };
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                debug!(peer = peer.to_string().as_str(), error = err.to_string().as_str(); "connection ended with an error");
            }
        });
    }
    app.ready.store(false, Ordering::Relaxed);
    info!("draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after the drain timeout; closing them");
    }
}
