//! The HTTPS server: warp routes served by hyper-util (HTTP/1.1 and HTTP/2) over tokio-rustls,
//! within the bounds of [`crate::limits`].
//!
//! warp 0.4 has no TLS of its own, so connections are accepted here, the TLS handshake is done
//! with tokio-rustls, and each stream is handed to hyper with `warp::service(routes)`.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use log::{debug, error, info, warn};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use warp::{Filter as _, Rejection, Reply, http::StatusCode};

use crate::{
    decide::Decision,
    limits::{
        Activity, BodyBudget, Cut, H1_MAX_BUF_BYTES, H2_WINDOW_BYTES, Limits,
        MAX_STREAMS_PER_CONNECTION, Watched,
    },
    metrics::Metrics,
    options::InjectorOptions,
    review::{self, ReviewError},
    tls::CertStore,
};

/// Largest accepted `/mutate` body: an AdmissionReview of an UPDATE carries two objects of up
/// to 1.5 MiB each (etcd's limit), plus the envelope.
pub const MAX_BODY_BYTES: u64 = 4 << 20;
/// On shutdown, connections get this long to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection closed for idleness gets this long to go away by itself.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// How to build the container.
    pub options: InjectorOptions,
    /// Counters.
    pub metrics: Metrics,
    /// False once shutdown began: `/readyz` then fails so the Service stops sending requests.
    pub ready: AtomicBool,
    /// Bounds on connections, body memory and time.
    pub limits: Limits,
    budget: BodyBudget,
    /// The serving certificate, once loaded: its expiry is a metric.
    pub certificate: OnceLock<Arc<CertStore>>,
}

impl App {
    /// Ready to serve `options` within `limits`.
    #[must_use]
    pub fn new(options: InjectorOptions, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            options,
            metrics: Metrics::default(),
            ready: AtomicBool::new(true),
            limits,
            budget: BodyBudget::new(limits.body_budget_bytes),
            certificate: OnceLock::new(),
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

/// Reads a body of `length` bytes (room reserved in the body budget) within the body deadline.
async fn read_body(
    app: &App,
    length: u64,
    mut body: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>> + Unpin,
) -> Result<Vec<u8>, Cut> {
    let capacity = usize::try_from(length).map_err(|_| Cut::BodyBudget)?;
    let read = async {
        let mut bytes = Vec::with_capacity(capacity);
        while let Some(chunk) = body.next().await {
            // A stream that breaks (the client closed early) is an aborted request.
            let Ok(mut chunk) = chunk else {
                return Err(Cut::BodyAborted);
            };
            while chunk.has_remaining() {
                let part = chunk.chunk();
                bytes.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        // Fewer bytes than announced (hyper ends an HTTP/2 stream early this way): never decide
        // on a truncated review.
        if bytes.len() as u64 == length {
            Ok(bytes)
        } else {
            Err(Cut::BodyAborted)
        }
    };
    tokio::time::timeout(app.limits.body_timeout, read)
        .await
        .map_err(|_| Cut::BodyTimeout)?
}

/// The answer to a request cut short, which also closes an HTTP/1.1 connection (its body was not
/// read).
fn refusal(cut: Cut) -> warp::reply::Response {
    let (status, message) = match cut {
        Cut::BodyBudget => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook holds as many request bodies as its memory budget allows; retry",
        ),
        Cut::BodyAborted => (
            StatusCode::BAD_REQUEST,
            "the request body ended before its Content-Length",
        ),
        _ => (
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        ),
    };
    let mut response = text(status, format!("{message}\n"));
    let headers = response.headers_mut();
    headers.insert("connection", warp::http::HeaderValue::from_static("close"));
    if cut == Cut::BodyBudget {
        headers.insert("retry-after", warp::http::HeaderValue::from_static("1"));
    }
    response
}

/// Answers one `/mutate` body and logs the decision.
fn mutate(app: &App, body: &[u8]) -> warp::reply::Response {
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
                | ReviewError::MissingRequest
                | ReviewError::Uid { .. } => StatusCode::BAD_REQUEST,
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
        return Ok(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the {} MiB limit\n",
                MAX_BODY_BYTES >> 20
            ),
        ));
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

/// `GET /healthz`, `GET /readyz` and `GET /metrics`, served on both ports.
fn probes(
    app: Arc<App>,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    let with_app = warp::any().map(move || Arc::clone(&app));
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
                app.metrics
                    .render(app.certificate.get().and_then(|c| c.not_after())),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        });
    healthz.or(readyz).unify().or(metrics).unify()
}

/// The webhook port's routes: `POST /mutate` and the [probes](probes).
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
        .and(warp::header::<u64>("content-length"))
        .and(warp::body::stream())
        .and(with_app)
        .then(|length: u64, body, app: Arc<App>| async move {
            // Held until the answer is built: the body is in memory until then.
            let reserved = app.budget.reserve(length);
            let result = match reserved {
                Some(_) => read_body(&app, length, body).await,
                None => Err(Cut::BodyBudget),
            };
            match result {
                Ok(body) => mutate(&app, &body),
                Err(cut) => {
                    app.metrics.cuts.record(cut);
                    app.metrics.bad_request(Duration::ZERO);
                    refusal(cut)
                }
            }
        });
    mutate
        .or(probes(Arc::clone(&app)))
        .unify()
        .recover(move |r| rejection(Arc::clone(&app), r))
        .unify()
}

/// Connections the plain-HTTP metrics port keeps open at once.
const METRICS_MAX_CONNECTIONS: usize = 16;
/// The longest a metrics-port connection stays open (a scrape or a probe takes milliseconds).
const METRICS_CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// Serves the [probes](probes) over plain HTTP/1.1 on `listener`, for the kubelet and Prometheus,
/// so the webhook port can be opened to the API server alone. At most 16 connections, each for
/// at most 10 s.
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

/// One accepted connection and what it needs.
struct Connection<S> {
    app: Arc<App>,
    acceptor: TlsAcceptor,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl<S> Connection<S>
where
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Handshake, then serve requests until the client leaves, goes idle, or the server stops.
    async fn run(mut self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let limits = self.app.limits;
        let stream = match tokio::time::timeout(limits.handshake_timeout, self.acceptor.accept(tcp))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                debug!(peer = peer.to_string().as_str(), error = err.to_string().as_str(); "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.app.metrics.cuts.record(Cut::HandshakeTimeout);
                return;
            }
        };
        let activity = Activity::new();
        let service = Tracked {
            inner: TowerToHyperService::new(self.service),
            activity: Arc::clone(&activity),
        };
        let connection = self.builder.serve_connection(
            TokioIo::new(Watched::new(stream, Arc::clone(&activity))),
            service,
        );
        tokio::pin!(connection);
        // Once closing, the connection gets until this instant to finish on its own.
        let mut closing: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let idle_at = activity.idle_deadline(limits.idle_timeout);
            // Re-checked at least every second: a request may start or end meanwhile.
            let wake = closing.unwrap_or_else(|| idle_at.unwrap_or(now + Duration::from_secs(1)));
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        let timed_out = err
                            .downcast_ref::<hyper::Error>()
                            .is_some_and(hyper::Error::is_timeout);
                        if timed_out {
                            self.app.metrics.cuts.record(Cut::HeaderTimeout);
                        } else {
                            debug!(peer = peer.to_string().as_str(), error = err.to_string().as_str(); "connection ended with an error");
                        }
                    }
                    return;
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if closing.is_some_and(|until| now >= until) {
                        // The client did not close after the final response or GOAWAY.
                        return;
                    }
                    if closing.is_none() && idle_at.is_some_and(|at| now >= at)
                        && activity.idle_deadline(limits.idle_timeout).is_some_and(|at| now >= at)
                    {
                        self.app.metrics.cuts.record(Cut::IdleTimeout);
                        connection.as_mut().graceful_shutdown();
                        closing = Some(now + IDLE_CLOSE_GRACE);
                    }
                }
                changed = self.stop.changed(), if closing.is_none() => {
                    if changed.is_err() || *self.stop.borrow() {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + DRAIN_TIMEOUT);
                    }
                }
            }
        }
    }
}

/// A service that marks its connection busy while a request is handled, so the idle watchdog
/// leaves it alone.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        let in_flight = self.activity.request();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}
