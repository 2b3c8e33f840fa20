//! What each request gets: `POST /mutate` and the probes (`/healthz`, `/readyz`, `/metrics`)
//! as warp filters, and the state the handlers share ([`App`]).

use std::{
    convert::Infallible,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use log::{info, warn};
use warp::{Filter as _, Rejection, Reply, http::StatusCode};

use crate::{
    decide::Decision,
    limits::{BodyBudget, Cut, Limits},
    metrics::Metrics,
    options::InjectorOptions,
    review::{self, ReviewError},
    tls::CertStore,
};

/// Largest accepted `/mutate` body: an AdmissionReview of an UPDATE carries two objects of up
/// to 1.5 MiB each (etcd's limit), plus the envelope.
pub const MAX_BODY_BYTES: u64 = 4 << 20;

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
pub(super) async fn rejection(
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
pub(super) fn probes(
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

/// The webhook port's routes: `POST /mutate` and the probes (`/healthz`, `/readyz`, `/metrics`).
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
