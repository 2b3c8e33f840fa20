//! One accepted connection's life: the TLS handshake within its deadline, then HTTP/1.1 or
//! HTTP/2 until the client leaves, the connection goes idle, or the server drains.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use log::debug;
use tokio_rustls::TlsAcceptor;

use super::{App, DRAIN_TIMEOUT};
use crate::limits::{Activity, Cut, Watched};

/// A connection closed for idleness gets this long to go away by itself.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One accepted connection and what it needs.
pub(super) struct Connection<S> {
    pub(super) app: Arc<App>,
    pub(super) acceptor: TlsAcceptor,
    pub(super) service: S,
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) stop: tokio::sync::watch::Receiver<bool>,
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
    pub(super) async fn run(mut self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
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
