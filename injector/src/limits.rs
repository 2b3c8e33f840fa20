//! What a client can make the webhook hold, bounded: connections, request-body bytes in memory,
//! and time. Without these bounds 40 unauthenticated clients sending 4 MiB bodies took the
//! process past its 64 MiB memory limit, and silent connections stayed open indefinitely.
//!
//! - At most [`Limits::max_connections`] connections are open; one over it is closed at accept.
//! - Request bodies are read only once their `Content-Length` fits in a byte budget shared by all
//!   requests ([`Limits::body_budget_bytes`]); otherwise the request gets `503` at once.
//! - HTTP/2 connections carry at most [`MAX_STREAMS_PER_CONNECTION`] streams, and flow-control
//!   windows of 64 KiB bound what a client can push before its body is read.
//! - TLS handshakes, request heads, request bodies and idle connections each have a deadline well
//!   under the API server's 30 s webhook timeout.
//!
//! Each cut is counted in the metrics and logged once per reason at most every
//! [`CUT_LOG_INTERVAL`], with the number of cuts since the last line.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use log::warn;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Connections open at once unless configured otherwise (`MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: u16 = 128;
/// Streams an HTTP/2 client may open at once on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 8;
/// HTTP/2 flow-control window, per stream and per connection: what a client can send that the
/// server has not asked for yet.
pub const H2_WINDOW_BYTES: u32 = 16 << 10;
/// The HTTP/1.1 read buffer's largest size.
pub const H1_MAX_BUF_BYTES: usize = 64 << 10;
/// Cuts of one reason are logged at most this often.
pub const CUT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds, with their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (TLS handshakes included).
    pub max_connections: usize,
    /// Request-body bytes held in memory by all requests together.
    pub body_budget_bytes: u64,
    /// Time from accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to receive a request's head (HTTP/1.1), from its first byte.
    pub header_timeout: Duration,
    /// Time to receive a whole request body, from when the handler starts reading it.
    pub body_timeout: Duration,
    /// A connection with no request in progress is closed after this long without a byte from the
    /// client.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: usize::from(DEFAULT_MAX_CONNECTIONS),
            body_budget_bytes: 8 << 20,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            // The manifests give the API server's call 5 s (`timeoutSeconds`).
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection or request was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// [`Limits::max_connections`] were already open.
    ConnectionCap,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// The request head did not arrive in time.
    HeaderTimeout,
    /// The request body did not arrive in time (`408`).
    BodyTimeout,
    /// The body budget was spent by other requests (`503`).
    BodyBudget,
    /// Nothing arrived on a connection with no request in progress.
    IdleTimeout,
    /// The body ended before its `Content-Length`: the client went away mid-request, and the
    /// request is not decided.
    BodyAborted,
}

impl Cut {
    /// Every reason, in the order of [`Cut::index`].
    pub const ALL: [Self; 7] = [
        Self::ConnectionCap,
        Self::HandshakeTimeout,
        Self::HeaderTimeout,
        Self::BodyTimeout,
        Self::BodyBudget,
        Self::IdleTimeout,
        Self::BodyAborted,
    ];

    /// Label for logs and metrics.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::ConnectionCap => "connection_cap",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::BodyTimeout => "body_timeout",
            Self::BodyBudget => "body_budget",
            Self::IdleTimeout => "idle_timeout",
            Self::BodyAborted => "body_aborted",
        }
    }

    /// Position in [`Cut::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    const fn message(self) -> &'static str {
        match self {
            Self::ConnectionCap => "connection refused: the connection limit is reached",
            Self::HandshakeTimeout => "connection closed: the TLS handshake took too long",
            Self::HeaderTimeout => "connection closed: the request head took too long",
            Self::BodyTimeout => "request refused with 408: its body took too long",
            Self::BodyBudget => "request refused with 503: the request-body memory budget is spent",
            Self::IdleTimeout => "connection closed: idle",
            Self::BodyAborted => {
                "request dropped undecided: its body ended before its Content-Length"
            }
        }
    }
}

/// Cuts by reason, and the rate limit of their log lines.
#[derive(Debug, Default)]
pub struct Cuts {
    counts: [AtomicU64; Cut::ALL.len()],
    log: Mutex<[CutLog; Cut::ALL.len()]>,
}

#[derive(Clone, Copy, Debug, Default)]
struct CutLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl Cuts {
    /// Counts a cut and logs it unless a line for the same reason was written within
    /// [`CUT_LOG_INTERVAL`]; the next line then says how many were not logged.
    pub fn record(&self, cut: Cut) {
        self.counts[cut.index()].fetch_add(1, Relaxed);
        if let Some(count) = self.due(cut, Instant::now()) {
            warn!(reason = cut.label(), count, interval_secs = CUT_LOG_INTERVAL.as_secs(); "{}", cut.message());
        }
    }

    /// Whether a line is due for `cut` at `now`, and how many cuts it reports.
    fn due(&self, cut: Cut, now: Instant) -> Option<u64> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = &mut log[cut.index()];
        entry.unlogged += 1;
        if entry
            .last
            .is_some_and(|last| now.duration_since(last) < CUT_LOG_INTERVAL)
        {
            return None;
        }
        entry.last = Some(now);
        Some(std::mem::take(&mut entry.unlogged))
    }

    /// Cuts of one reason so far.
    #[must_use]
    pub fn count(&self, cut: Cut) -> u64 {
        self.counts[cut.index()].load(Relaxed)
    }
}

/// What a connection's watchdog needs to know: when the client last sent a byte, and whether a
/// request is being handled.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last byte received.
    last_read_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// A connection that just opened.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn read_now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Relaxed);
    }

    /// A request started; it is in flight until the guard is dropped.
    #[must_use]
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(Arc::clone(self))
    }

    /// When the connection becomes idle enough to close: `None` while a request is in flight.
    #[must_use]
    pub fn idle_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        (self.in_flight.load(Relaxed) == 0).then(|| {
            self.start + Duration::from_millis(self.last_read_ms.load(Relaxed)) + idle_timeout
        })
    }
}

/// A request in progress on a connection (see [`Activity::request`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        // Finishing a request counts as activity: the idle time starts now.
        self.0.read_now();
    }
}

/// A stream that tells its [`Activity`] whenever the client sent something.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_now();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Budget units are KiB, so a 4 MiB body takes 4096 permits.
const BUDGET_UNIT: u64 = 1024;

/// The request-body bytes all requests may hold together.
#[derive(Debug)]
pub struct BodyBudget {
    permits: tokio::sync::Semaphore,
}

impl BodyBudget {
    /// A budget of `bytes`.
    #[must_use]
    pub fn new(bytes: u64) -> Self {
        let units = usize::try_from(bytes / BUDGET_UNIT).unwrap_or(usize::MAX);
        Self {
            permits: tokio::sync::Semaphore::new(units.min(tokio::sync::Semaphore::MAX_PERMITS)),
        }
    }

    /// Reserves room for a body of `bytes`, or `None` when the budget cannot hold it now. The
    /// room is given back when the reservation is dropped.
    #[must_use]
    pub fn reserve(&self, bytes: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT).max(1)).ok()?;
        self.permits.try_acquire_many(units).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_lines_are_rate_limited_per_reason_and_report_what_they_skipped() {
        let cuts = Cuts::default();
        let t0 = Instant::now();
        assert_eq!(cuts.due(Cut::IdleTimeout, t0), Some(1));
        assert_eq!(
            cuts.due(Cut::IdleTimeout, t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            cuts.due(Cut::IdleTimeout, t0 + Duration::from_secs(2)),
            None
        );
        // Another reason has its own clock.
        assert_eq!(
            cuts.due(Cut::BodyBudget, t0 + Duration::from_secs(2)),
            Some(1)
        );
        assert_eq!(
            cuts.due(
                Cut::IdleTimeout,
                t0 + CUT_LOG_INTERVAL + Duration::from_secs(1)
            ),
            Some(3)
        );
    }

    #[test]
    fn cuts_are_counted_by_reason() {
        let cuts = Cuts::default();
        for _ in 0..3 {
            cuts.record(Cut::ConnectionCap);
        }
        assert_eq!(cuts.count(Cut::ConnectionCap), 3);
        assert_eq!(cuts.count(Cut::IdleTimeout), 0);
        for (i, cut) in Cut::ALL.iter().enumerate() {
            assert_eq!(cut.index(), i);
        }
    }

    #[test]
    fn budget_holds_bodies_until_released() {
        let budget = BodyBudget::new(10 << 20);
        let a = budget.reserve(4 << 20).expect("room for the first");
        let b = budget.reserve(4 << 20).expect("room for the second");
        assert!(budget.reserve(4 << 20).is_none(), "12 MiB > 10 MiB");
        assert!(budget.reserve(1).is_some(), "small bodies still fit");
        drop(a);
        assert!(budget.reserve(4 << 20).is_some());
        drop(b);
        assert!(budget.reserve(u64::MAX).is_none());
    }

    #[test]
    fn idle_deadline_waits_for_requests_in_flight() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(10);
        let first = activity.idle_deadline(timeout).unwrap();
        assert!(first <= Instant::now() + timeout);
        let request = activity.request();
        assert_eq!(activity.idle_deadline(timeout), None);
        std::thread::sleep(Duration::from_millis(20));
        drop(request);
        assert!(activity.idle_deadline(timeout).unwrap() > first);
    }
}
