//! Batch and send: records go into batches on the reader, closed batches go through a channel to
//! `OUTPUT_CONCURRENCY` sender threads that POST them with `ureq` (blocking, so never on the async
//! reader), retrying as [`crate::retry`] decides. Several requests in flight hide the collector's
//! round trip, which otherwise caps delivery far below the capture rate.
//!
//! Memory is bounded by `BUFFER_MAX_RECORDS`: when that many records are queued, new ones are
//! dropped and counted instead of blocking the reader (which would lose kernel records silently).
//! Every loss reaches the collector in the `dropped` field of the next batch it accepts.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc::{self, Receiver},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use log::{error, warn};
use thiserror::Error;

use crate::{
    batch::{AgentInfo, Batcher, encode},
    metrics::{Stats, add, get},
    output::Sink,
    record::Record,
    resolve::CachingResolver,
    retry::{Backoff, Verdict, classify},
};

/// How to reach the collector.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// `OUTPUT_URL`, validated as an absolute http(s) URL.
    pub url: String,
    /// `OUTPUT_URL_AUTH_TOKEN`; never logged.
    pub token: Option<String>,
    /// Compress bodies with gzip (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of a whole request (connect, send, response).
    pub request_timeout: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// PEM file of CA certificates to trust instead of the platform's.
    pub ca_file: Option<PathBuf>,
    /// Records per batch.
    pub batch_max_records: usize,
    /// Age of a batch's oldest record that closes it.
    pub batch_max_wait: Duration,
    /// Records that may wait for delivery.
    pub buffer_max_records: usize,
    /// Requests in flight at once (sender threads).
    pub concurrency: usize,
}

/// The sender could not be set up (exit code 1: it is a configuration problem).
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// `OUTPUT_CA_FILE` could not be read.
    #[error("cannot read OUTPUT_CA_FILE {path:?}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `OUTPUT_CA_FILE` holds no usable certificate.
    #[error("OUTPUT_CA_FILE {path:?} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A sender thread could not start.
    #[error("cannot start a sender thread")]
    Thread(#[source] std::io::Error),
}

/// A [`Sink`] that batches records and hands them to the sender threads.
#[derive(Debug)]
pub struct HttpOutput {
    batcher: Batcher,
    tx: mpsc::Sender<Vec<Record>>,
    shared: Arc<Shared>,
    buffer_max_records: u64,
    senders: Vec<JoinHandle<()>>,
}

impl HttpOutput {
    /// Starts the sender threads.
    pub fn start(
        config: &DeliveryConfig,
        agent: AgentInfo,
        stats: Arc<Stats>,
    ) -> Result<Self, DeliveryError> {
        let shared = Arc::new(Shared {
            http: http_agent(config)?,
            url: config.url.clone(),
            authorization: config.token.as_ref().map(|t| format!("Bearer {t}")),
            gzip: config.gzip,
            request_timeout: config.request_timeout,
            backoff: (config.backoff_initial, config.backoff_max),
            agent,
            stats,
            seq: AtomicU64::new(0),
            assigned_dropped: Mutex::new(0),
            deadline: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let senders = (0..config.concurrency.max(1))
            .map(|index| {
                let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
                thread::Builder::new()
                    .name(format!("sender-{index}"))
                    .spawn(move || shared.work(&rx))
                    .map_err(DeliveryError::Thread)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            batcher: Batcher::new(config.batch_max_records, config.batch_max_wait),
            tx,
            shared,
            buffer_max_records: config.buffer_max_records as u64,
            senders,
        })
    }

    fn enqueue(&mut self, batch: Vec<Record>) {
        // `records_queued` already counts these records (see `accept`).
        if self.tx.send(batch).is_err() {
            error!("the sender threads are gone; records are lost");
        }
    }

    /// Closes the open batch and gives the senders until `grace` from now to deliver everything
    /// queued; then waits for them. Losses not yet reported go in a last batch without records.
    pub fn finish(mut self, grace: Duration) {
        if let Some(batch) = self.batcher.flush() {
            self.enqueue(batch);
        }
        *lock(&self.shared.deadline) = Some(Instant::now() + grace);
        drop(self.tx);
        for sender in self.senders {
            if sender.join().is_err() {
                error!("a sender thread panicked");
            }
        }
        let shared = &self.shared;
        if shared.stats.dropped_total() > *lock(&shared.assigned_dropped) && !shared.past_deadline()
        {
            shared.deliver(Vec::new());
        }
    }
}

impl Sink for HttpOutput {
    fn accept(&mut self, record: Record) -> std::io::Result<()> {
        let stats = &self.shared.stats;
        if get(&stats.records_queued) >= self.buffer_max_records {
            add(&stats.dropped_buffer_full, 1);
            return Ok(());
        }
        add(&stats.records_queued, 1);
        if let Some(batch) = self.batcher.push(record, Instant::now) {
            self.enqueue(batch);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tick(Instant::now());
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        self.batcher.deadline()
    }

    fn tick(&mut self, now: Instant) {
        if let Some(batch) = self.batcher.poll(now) {
            self.enqueue(batch);
        }
    }
}

/// A poisoned lock only means another sender panicked; the numbers inside are still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn http_agent(config: &DeliveryConfig) -> Result<ureq::Agent, DeliveryError> {
    use ureq::tls::{RootCerts, TlsConfig};
    let roots = match &config.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| DeliveryError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(DeliveryError::NoCertificate { path: path.clone() });
            }
            RootCerts::Specific(Arc::new(certs))
        }
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A redirect would carry the bearer token to another place: treat it as a refusal.
        .max_redirects(0)
        .timeout_connect(Some(config.connect_timeout))
        .timeout_global(Some(config.request_timeout))
        .max_idle_connections_per_host(config.concurrency.max(1))
        .user_agent(concat!("tcp-sniffer/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        CachingResolver::default(),
    ))
}

/// State the sender threads share.
#[derive(Debug)]
struct Shared {
    http: ureq::Agent,
    url: String,
    authorization: Option<String>,
    gzip: bool,
    request_timeout: Duration,
    backoff: (Duration, Duration),
    agent: AgentInfo,
    stats: Arc<Stats>,
    /// Next batch number.
    seq: AtomicU64,
    /// Losses already written into the `dropped` of a batch delivered or being attempted.
    assigned_dropped: Mutex<u64>,
    /// Set at shutdown: give up on whatever is not delivered by then.
    deadline: Mutex<Option<Instant>>,
}

/// Why a batch was given up.
#[derive(Clone, Copy)]
enum Loss {
    /// The collector refused it (or it could not be encoded).
    Rejected,
    /// The shutdown grace ran out.
    Undeliverable,
}

/// Result of one POST.
enum Attempt {
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    Failed(ureq::Error),
}

/// Longest uninterrupted sleep between retries, so a shutdown deadline is noticed quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

impl Shared {
    /// A sender thread: delivers batches until the channel is closed and empty.
    fn work(&self, rx: &Mutex<Receiver<Vec<Record>>>) {
        loop {
            let next = lock(rx).recv();
            match next {
                Ok(records) => self.deliver(records),
                Err(_) => return,
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    fn past_deadline(&self) -> bool {
        self.deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Sleeps until `until`, or until the shutdown deadline if that comes first.
    fn sleep_until(&self, until: Instant) {
        loop {
            let now = Instant::now();
            let end = self
                .deadline()
                .map_or(until, |deadline| until.min(deadline));
            if now >= end {
                return;
            }
            thread::sleep((end - now).min(SLEEP_SLICE));
        }
    }

    /// Delivers one batch, retrying until it is accepted, refused, or the deadline passes.
    fn deliver(&self, records: Vec<Record>) {
        let count = records.len() as u64;
        let seq = self.seq.fetch_add(1, Relaxed);
        // A retried batch must carry the same `dropped` (the collector deduplicates by seq), so
        // the losses it reports are fixed now; later losses go to a later batch.
        let dropped = {
            let mut assigned = lock(&self.assigned_dropped);
            let total = self.stats.dropped_total();
            let dropped = total - *assigned;
            *assigned = total;
            dropped
        };
        let body = match encode(&self.agent, seq, dropped, &records, self.gzip) {
            Ok(body) => body,
            Err(err) => {
                error!(seq, error = err.to_string().as_str(); "cannot encode batch; dropped");
                self.give_up(count, dropped, Loss::Rejected);
                return;
            }
        };
        drop(records);
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            if self.past_deadline() {
                warn!(seq, records = count; "shutdown grace ran out; batch not delivered");
                self.give_up(count, dropped, Loss::Undeliverable);
                return;
            }
            let retry_after = match self.post(&body) {
                Attempt::Status {
                    status,
                    retry_after,
                } => {
                    self.stats.last_status.store(u64::from(status), Relaxed);
                    match classify(status, retry_after.as_deref(), SystemTime::now()) {
                        Verdict::Delivered => {
                            add(&self.stats.records_delivered, count);
                            add(&self.stats.batches_delivered, 1);
                            self.stats.last_delivery_unix.store(unix_now(), Relaxed);
                            self.stats.records_queued.fetch_sub(count, Relaxed);
                            return;
                        }
                        Verdict::Reject => {
                            error!(seq, status, records = count; "collector refused the batch with HTTP {status}; dropped, not retried");
                            self.give_up(count, dropped, Loss::Rejected);
                            return;
                        }
                        Verdict::Retry { after } => {
                            warn!(seq, status, attempt = backoff.attempts() + 1; "collector answered HTTP {status}; will retry");
                            after
                        }
                    }
                }
                Attempt::Failed(err) => {
                    self.stats.last_status.store(0, Relaxed);
                    warn!(seq, attempt = backoff.attempts() + 1, error = err.to_string().as_str(); "cannot reach the collector; will retry");
                    None
                }
            };
            add(&self.stats.batch_retries, 1);
            let delay = backoff.next_delay(fastrand::f64(), retry_after);
            self.sleep_until(Instant::now() + delay);
        }
    }

    /// Counts a batch as lost and releases its `dropped` so a later batch reports it again.
    fn give_up(&self, count: u64, dropped: u64, loss: Loss) {
        let (batches, records) = match loss {
            Loss::Rejected => (&self.stats.batches_rejected, &self.stats.dropped_rejected),
            Loss::Undeliverable => (
                &self.stats.batches_undeliverable,
                &self.stats.dropped_undeliverable,
            ),
        };
        // Under the lock, so a concurrent batch sees the loss and the release together.
        let mut assigned = lock(&self.assigned_dropped);
        add(batches, 1);
        add(records, count);
        *assigned -= dropped;
        self.stats.records_queued.fetch_sub(count, Relaxed);
    }

    fn post(&self, body: &[u8]) -> Attempt {
        let timeout = self.deadline().map_or(self.request_timeout, |deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .min(self.request_timeout)
                .max(Duration::from_millis(1))
        });
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        if self.gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        match request
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body)
        {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // Read the (small) answer so the connection can be kept alive.
                let _ = response
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_vec();
                Attempt::Status {
                    status,
                    retry_after,
                }
            }
            Err(err) => Attempt::Failed(err),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
