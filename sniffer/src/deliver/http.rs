//! Batch and send: records go into batches on the reader, closed batches go through a channel to
//! `OUTPUT_CONCURRENCY` sender threads that POST them with `ureq` (blocking, so never on the async
//! reader), retrying as [`super::retry`] decides. Several requests in flight hide the collector's
//! round trip, which otherwise caps delivery far below the capture rate.
//!
//! Memory is bounded by `BUFFER_MAX_RECORDS`: when that many records are queued, new ones are
//! dropped and counted instead of blocking the reader (which would lose kernel records silently).
//! Every loss reaches the collector in the `dropped` field of the next batch it accepts.
//!
//! Every batch handed to a sender holds a [`Ticket`] that settles its records exactly once:
//! delivered, rejected, or undeliverable. A sender thread that panics settles its batch as
//! undeliverable on the way out and marks the agent unhealthy (the process then stops with exit
//! code 2). At shutdown the grace period bounds the exit: whatever is still queued or in flight at
//! the deadline is settled as undeliverable at once, without waiting for requests in flight.

use std::{
    io::Read as _,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
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

use sniffer_common::PacketRecord;

use crate::pipeline::Sink;

use super::{
    answer::{self, MAX_ANSWER_BYTES},
    batch::Batcher,
    resolve::CachingResolver,
    retry::{Backoff, Policy, Verdict, classify},
};
use crate::{
    capture::clock::WallClock,
    config::DeliveryConfig,
    connections::record::ConnectionRecord,
    encode::{AgentInfo, Batch, Body, Encoder, record::Record},
    metrics::{Stats, add, get},
};
use cli_support::small_file::{SmallFileError, read_small_file};

/// Largest accepted `OUTPUT_CA_FILE`: a bundle of every public root is about 220 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 4 << 20;

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
    /// `OUTPUT_CA_FILE` is a device, FIFO, socket or directory.
    #[error("OUTPUT_CA_FILE {path:?} is not a regular file")]
    CaFileKind {
        /// The file.
        path: PathBuf,
    },
    /// `OUTPUT_CA_FILE` is larger than any CA bundle.
    #[error("OUTPUT_CA_FILE {path:?} is larger than {MAX_CA_FILE_BYTES} bytes")]
    CaFileSize {
        /// The file.
        path: PathBuf,
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
    batcher: Batcher<Record>,
    /// Connection records travel in batches of their own.
    connections: Batcher<ConnectionRecord>,
    tx: mpsc::Sender<Batch>,
    shared: Arc<Shared>,
    buffer_max_records: u64,
    senders: Vec<JoinHandle<()>>,
    /// Encodes the last batch, which reports losses not reported yet, at shutdown.
    last_words: Encoder,
}

impl HttpOutput {
    /// How many of `count` new records fit in `BUFFER_MAX_RECORDS`; the rest are counted as
    /// dropped (`buffer_full`), the kept ones as queued.
    fn room(&self, count: usize) -> usize {
        let stats = &self.shared.stats;
        // The queue only grows while this runs (senders settle batches meanwhile): records past
        // its room now are the ones a record-by-record check would drop.
        let room = self
            .buffer_max_records
            .saturating_sub(get(&stats.records_queued));
        let kept = count.min(usize::try_from(room).unwrap_or(usize::MAX));
        add(&stats.dropped_buffer_full, (count - kept) as u64);
        add(&stats.records_queued, kept as u64);
        kept
    }

    /// Starts the sender threads.
    pub fn start(
        config: &DeliveryConfig,
        agent: AgentInfo,
        stats: Arc<Stats>,
    ) -> Result<Self, DeliveryError> {
        let agent = Arc::new(agent);
        let shared = Arc::new(Shared {
            http: http_agent(config)?,
            url: config.url.clone(),
            headers: config.headers.clone(),
            policy: if config.format.is_otlp() {
                Policy::Otlp
            } else {
                Policy::Standard
            },
            request_timeout: config.request_timeout,
            backoff: (config.backoff_initial, config.backoff_max),
            stats,
            seq: AtomicU64::new(0),
            ledger: Mutex::new(Ledger::default()),
            deadline: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let senders = (0..config.concurrency)
            .map(|index| {
                let (shared, rx) = (Arc::clone(&shared), Arc::clone(&rx));
                let encoder = Encoder::new(config.format, Arc::clone(&agent), config.gzip);
                thread::Builder::new()
                    .name(format!("sender-{index}"))
                    .spawn(move || shared.work(&rx, encoder))
                    .map_err(DeliveryError::Thread)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            batcher: Batcher::new(config.batch_max_records, config.batch_max_wait),
            connections: Batcher::new(config.batch_max_records, config.batch_max_wait),
            tx,
            shared,
            buffer_max_records: config.buffer_max_records as u64,
            senders,
            last_words: Encoder::new(config.format, agent, config.gzip),
        })
    }

    fn enqueue(&mut self, batch: Batch) {
        // `records_queued` already counts these records (see `room`).
        add(&self.shared.stats.batches_queued, 1);
        if let Err(mpsc::SendError(batch)) = self.tx.send(batch) {
            // Every sender is gone (each one that failed said why): settle the batch here.
            let ticket = self.shared.ticket(batch.len() as u64);
            ticket.settle(Fate::Undeliverable);
        }
    }
}

impl Sink for HttpOutput {
    fn take(&mut self, records: &[PacketRecord], clock: &WallClock) -> std::io::Result<()> {
        let kept = self.room(records.len());
        let mut records = records[..kept]
            .iter()
            .map(|raw| Record::from_kernel(raw, clock));
        while records.len() > 0 {
            if let Some(batch) = self.batcher.fill(&mut records, Instant::now) {
                self.enqueue(Batch::Packets(batch));
            }
        }
        self.tick(Instant::now());
        Ok(())
    }

    fn take_connections(&mut self, records: &[ConnectionRecord]) -> std::io::Result<()> {
        let kept = self.room(records.len());
        let mut records = records[..kept].iter().cloned();
        while records.len() > 0 {
            if let Some(batch) = self.connections.fill(&mut records, Instant::now) {
                self.enqueue(Batch::Connections(batch));
            }
        }
        self.tick(Instant::now());
        Ok(())
    }

    fn due(&self) -> Option<Instant> {
        match (self.batcher.due(), self.connections.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn tick(&mut self, now: Instant) {
        if let Some(batch) = self.batcher.close_if_due(now) {
            self.enqueue(Batch::Packets(batch));
        }
        if let Some(batch) = self.connections.close_if_due(now) {
            self.enqueue(Batch::Connections(batch));
        }
    }

    /// Closes the open batch and lets the senders deliver what is queued until `deadline` (the
    /// shutdown grace); then settles whatever is still queued or in flight as undeliverable
    /// without waiting for requests in flight. Losses not yet reported go in a last batch without
    /// records, if time remains.
    fn finish(mut self: Box<Self>, deadline: Instant) -> std::io::Result<()> {
        if let Some(batch) = self.batcher.close() {
            self.enqueue(Batch::Packets(batch));
        }
        if let Some(batch) = self.connections.close() {
            self.enqueue(Batch::Connections(batch));
        }
        *lock(&self.shared.deadline) = Some(deadline);
        let Self {
            tx,
            senders,
            shared,
            mut last_words,
            ..
        } = *self;
        drop(tx);
        while !senders.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let (batches, records) = shared.close();
        if records > 0 || batches > 0 {
            warn!(batches, records; "shutdown grace ran out with batches queued or in flight; their records are counted as undeliverable");
        }
        if shared.stats.dropped_total() > lock(&shared.ledger).assigned_dropped
            && !shared.past_deadline()
        {
            shared.deliver(Batch::Packets(Vec::new()), &mut last_words);
        }
        Ok(())
    }
}

/// A poisoned lock only means another sender panicked; the numbers inside are still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `OUTPUT_CA_FILE`, refusing what cannot be a CA bundle before reading it.
fn read_ca_file(path: &Path) -> Result<Vec<u8>, DeliveryError> {
    read_small_file(path, MAX_CA_FILE_BYTES).map_err(|err| match err {
        SmallFileError::Io(source) => DeliveryError::CaFile {
            path: path.to_owned(),
            source,
        },
        SmallFileError::NotRegular => DeliveryError::CaFileKind {
            path: path.to_owned(),
        },
        SmallFileError::TooLarge { .. } => DeliveryError::CaFileSize {
            path: path.to_owned(),
        },
    })
}

fn http_agent(config: &DeliveryConfig) -> Result<ureq::Agent, DeliveryError> {
    use ureq::tls::{RootCerts, TlsConfig};
    let roots = match &config.ca_file {
        None => RootCerts::PlatformVerifier,
        Some(path) => {
            let pem = read_ca_file(path)?;
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
    /// The token's header and `OUTPUT_HEADERS`; values never logged.
    headers: Vec<(String, String)>,
    policy: Policy,
    request_timeout: Duration,
    backoff: (Duration, Duration),
    stats: Arc<Stats>,
    /// Next batch number.
    seq: AtomicU64,
    ledger: Mutex<Ledger>,
    /// Set at shutdown: give up on whatever is not delivered by then.
    deadline: Mutex<Option<Instant>>,
}

/// Who owes what, under one lock so that a settlement and a shutdown never count a record twice.
#[derive(Debug, Default)]
struct Ledger {
    /// Losses already written into the `dropped` of a batch delivered or being attempted.
    assigned_dropped: u64,
    /// Of those, the ones in batches not settled yet.
    in_flight_dropped: u64,
    /// Bumped by [`Shared::close`]: tickets of an earlier generation were settled by it.
    generation: u64,
}

/// How a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// The collector accepted it, but for `rejected` of its records (an OTLP partial success).
    Delivered {
        /// Records the collector said it dropped.
        rejected: u64,
    },
    /// The collector refused it (or it could not be encoded).
    Rejected,
    /// The shutdown grace ran out, or its sender thread failed.
    Undeliverable,
}

/// A batch in a sender's hands: its records and the losses its `dropped` reports. Settled exactly
/// once; dropped unsettled (a panicking sender), it settles as undeliverable.
#[derive(Debug)]
struct Ticket<'a> {
    shared: &'a Shared,
    count: u64,
    dropped: u64,
    generation: u64,
    settled: bool,
}

impl Ticket<'_> {
    fn settle(mut self, fate: Fate) {
        self.settled = true;
        self.shared.settle(&self, fate);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.settle(self, Fate::Undeliverable);
        }
    }
}

/// Result of one POST.
enum Attempt {
    Status {
        status: u16,
        retry_after: Option<String>,
        /// The answer's first [`MAX_ANSWER_BYTES`].
        body: Vec<u8>,
        /// More followed them (or reading them failed).
        truncated: bool,
    },
    Failed(ureq::Error),
}

/// Longest uninterrupted sleep between retries, so a shutdown deadline is noticed quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

impl Shared {
    /// A sender thread: delivers batches until the channel is closed and empty, or until a
    /// delivery panics (a bug), which marks the agent failed.
    fn work(&self, rx: &Mutex<Receiver<Batch>>, mut encoder: Encoder) {
        loop {
            let next = lock(rx).recv();
            let Ok(records) = next else { return };
            if !self.supervised(|| self.deliver(records, &mut encoder)) {
                return;
            }
        }
    }

    /// Runs `work`; if it panics, records the failure and returns false. The batch the panic
    /// interrupted has already been settled as undeliverable by its ticket.
    fn supervised(&self, work: impl FnOnce()) -> bool {
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(()) => true,
            Err(payload) => {
                self.stats.sender_failed.store(true, Relaxed);
                error!(error = cli_support::log::panic_message(payload.as_ref()); "a sender thread failed; the agent stops with exit code 2");
                false
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

    /// Sleeps `delay`, or until the shutdown deadline if that comes first.
    fn sleep(&self, delay: Duration) {
        let until = Instant::now().checked_add(delay);
        loop {
            let now = Instant::now();
            let end = match (until, self.deadline()) {
                (Some(until), Some(deadline)) => until.min(deadline),
                (Some(end), None) | (None, Some(end)) => end,
                (None, None) => now + SLEEP_SLICE,
            };
            if now >= end {
                return;
            }
            thread::sleep((end - now).min(SLEEP_SLICE));
        }
    }

    /// Takes a batch of `count` queued records in hand, fixing the losses its `dropped` reports:
    /// a retried batch must carry the same `dropped` (the collector deduplicates by seq), so later
    /// losses go to a later batch.
    fn ticket(&self, count: u64) -> Ticket<'_> {
        let mut ledger = lock(&self.ledger);
        let total = self.stats.dropped_total();
        let dropped = total - ledger.assigned_dropped;
        ledger.assigned_dropped = total;
        ledger.in_flight_dropped += dropped;
        Ticket {
            shared: self,
            count,
            dropped,
            generation: ledger.generation,
            settled: false,
        }
    }

    fn settle(&self, ticket: &Ticket<'_>, fate: Fate) {
        let stats = &self.stats;
        // Under the lock, so a concurrent batch sees a loss and its release together.
        let mut ledger = lock(&self.ledger);
        if ticket.generation != ledger.generation {
            // Already settled as undeliverable when the shutdown grace ran out.
            return;
        }
        ledger.in_flight_dropped -= ticket.dropped;
        let (batches, records) = match fate {
            Fate::Delivered { .. } => (&stats.batches_delivered, &stats.records_delivered),
            Fate::Rejected => (&stats.batches_rejected, &stats.dropped_rejected),
            Fate::Undeliverable => (&stats.batches_undeliverable, &stats.dropped_undeliverable),
        };
        add(batches, 1);
        if let Fate::Delivered { rejected } = fate {
            // Counted as losses like a refusal: a later batch reports them.
            let rejected = rejected.min(ticket.count);
            add(records, ticket.count - rejected);
            add(&stats.dropped_rejected, rejected);
            stats
                .last_delivery_unix
                .store(cli_support::clock::unix_seconds(), Relaxed);
        } else {
            add(records, ticket.count);
            // The losses this batch reported never arrived: a later batch reports them again.
            ledger.assigned_dropped -= ticket.dropped;
        }
        stats.records_queued.fetch_sub(ticket.count, Relaxed);
        if ticket.count > 0 {
            stats.batches_queued.fetch_sub(1, Relaxed);
        }
    }

    /// Settles everything queued or in flight as undeliverable, now; senders that finish later
    /// change nothing. Returns the batches and records it settled.
    fn close(&self) -> (u64, u64) {
        let stats = &self.stats;
        let mut ledger = lock(&self.ledger);
        ledger.generation += 1;
        ledger.assigned_dropped -= std::mem::take(&mut ledger.in_flight_dropped);
        let records = stats.records_queued.swap(0, Relaxed);
        let batches = stats.batches_queued.swap(0, Relaxed);
        add(&stats.batches_undeliverable, batches);
        add(&stats.dropped_undeliverable, records);
        (batches, records)
    }

    /// Delivers one batch, retrying until it is accepted, refused, or the deadline passes.
    fn deliver(&self, batch: Batch, encoder: &mut Encoder) {
        let ticket = self.ticket(batch.len() as u64);
        let dropped = ticket.dropped;
        let seq = self.seq.fetch_add(1, Relaxed);
        let encoded = match &batch {
            Batch::Packets(records) => encoder.body(seq, dropped, records),
            Batch::Connections(records) => encoder.connection_body(seq, dropped, records),
        };
        let body = match encoded {
            Ok(body) => body,
            Err(err) => {
                error!(seq, error = err.to_string().as_str(); "cannot encode batch; dropped");
                ticket.settle(Fate::Rejected);
                return;
            }
        };
        drop(batch);
        self.send(&body, encoder, ticket, seq);
        encoder.recycle(body);
    }

    /// Sends batch `seq` until it is accepted, refused, or the deadline passes, and settles
    /// `ticket` accordingly.
    fn send(&self, body: &Body, encoder: &Encoder, ticket: Ticket<'_>, seq: u64) {
        let count = ticket.count;
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            if self.past_deadline() {
                warn!(seq, records = count; "shutdown grace ran out; batch not delivered");
                ticket.settle(Fate::Undeliverable);
                return;
            }
            let retry_after = match self.post(body.as_slice(), encoder) {
                Attempt::Status {
                    status,
                    retry_after,
                    body: answer,
                    truncated,
                } => {
                    self.stats.last_status.store(u64::from(status), Relaxed);
                    let verdict = classify(
                        self.policy,
                        status,
                        retry_after.as_deref(),
                        SystemTime::now(),
                    );
                    match verdict {
                        Verdict::Delivered => {
                            let rejected = answer::rejected_records(
                                encoder.format(),
                                &answer,
                                truncated,
                                seq,
                                count,
                            );
                            ticket.settle(Fate::Delivered { rejected });
                            return;
                        }
                        Verdict::Reject => {
                            error!(seq, status, records = count; "collector refused the batch with HTTP {status}; dropped, not retried");
                            ticket.settle(Fate::Rejected);
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
            self.sleep(backoff.next_delay(fastrand::f64(), retry_after));
        }
    }

    /// One attempt, timed into the delivery histogram.
    fn post(&self, body: &[u8], encoder: &Encoder) -> Attempt {
        let start = Instant::now();
        let attempt = self.attempt(body, encoder);
        self.stats.delivery_seconds.0.observe(start.elapsed());
        attempt
    }

    fn attempt(&self, body: &[u8], encoder: &Encoder) -> Attempt {
        let timeout = self.deadline().map_or(self.request_timeout, |deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .min(self.request_timeout)
                .max(Duration::from_millis(1))
        });
        let mut request = self
            .http
            .post(&self.url)
            .header("Content-Type", encoder.format().content_type());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if encoder.gzip() {
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
                // Read the answer's start: OTLP's partial success is in it, and a small answer
                // read whole lets the connection be kept alive. A longer one is cut, not lost.
                let mut body = Vec::new();
                let limit = MAX_ANSWER_BYTES as u64 + 1;
                let read = response
                    .body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .reader()
                    .take(limit)
                    .read_to_end(&mut body);
                let truncated = read.is_err() || body.len() > MAX_ANSWER_BYTES;
                body.truncate(MAX_ANSWER_BYTES);
                Attempt::Status {
                    status,
                    retry_after,
                    body,
                    truncated,
                }
            }
            Err(err) => Attempt::Failed(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::encode::Format;

    fn config() -> DeliveryConfig {
        DeliveryConfig {
            url: "http://127.0.0.1:9/".into(),
            format: Format::Batch,
            headers: Vec::new(),
            gzip: false,
            connect_timeout: Duration::from_millis(100),
            request_timeout: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(20),
            ca_file: None,
            batch_max_records: 10,
            batch_max_wait: Duration::from_secs(1),
            buffer_max_records: 100,
            concurrency: 1,
        }
    }

    fn shared() -> Shared {
        Shared {
            http: http_agent(&config()).unwrap(),
            url: config().url,
            headers: Vec::new(),
            policy: Policy::Standard,
            request_timeout: Duration::from_millis(100),
            backoff: (Duration::from_millis(10), Duration::from_millis(20)),
            stats: Arc::new(Stats::default()),
            seq: AtomicU64::new(0),
            ledger: Mutex::new(Ledger::default()),
            deadline: Mutex::new(None),
        }
    }

    /// Queues `count` records in one batch, as `HttpOutput` does.
    fn queue(shared: &Shared, count: u64) {
        add(&shared.stats.records_queued, count);
        add(&shared.stats.batches_queued, 1);
    }

    #[test]
    fn a_panicking_sender_settles_its_batch_and_marks_the_agent_failed() {
        let shared = shared();
        queue(&shared, 7);
        add(&shared.stats.dropped_buffer_full, 2);
        let survived = shared.supervised(|| {
            let _ticket = shared.ticket(7);
            panic!("a bug in the sender");
        });
        assert!(!survived);
        let stats = &shared.stats;
        assert!(!stats.healthy());
        assert_eq!(get(&stats.dropped_undeliverable), 7);
        assert_eq!(get(&stats.batches_undeliverable), 1);
        assert_eq!(get(&stats.records_queued), 0);
        // The two losses the failed batch would have reported are reported by the next one.
        assert_eq!(shared.ticket(0).dropped, 2 + 7);
        assert!(shared.supervised(|| {}));
    }

    #[test]
    fn close_settles_what_is_in_flight_once() {
        let shared = shared();
        queue(&shared, 5);
        queue(&shared, 3);
        add(&shared.stats.dropped_ring_full, 4);
        let in_flight = shared.ticket(5);
        assert_eq!(in_flight.dropped, 4);
        // The grace runs out: both batches (one in flight, one still queued) are undeliverable.
        assert_eq!(shared.close(), (2, 8));
        let stats = &shared.stats;
        assert_eq!(get(&stats.dropped_undeliverable), 8);
        // The request in flight comes back later: it changes nothing.
        in_flight.settle(Fate::Delivered { rejected: 0 });
        assert_eq!(get(&stats.records_delivered), 0);
        assert_eq!(get(&stats.batches_delivered), 0);
        assert_eq!(
            (get(&stats.records_queued), get(&stats.batches_queued)),
            (0, 0)
        );
        // Everything lost is still to be reported: ring losses and the undeliverable records.
        assert_eq!(shared.ticket(0).dropped, 4 + 8);
        assert_eq!(
            stats.dropped_total(),
            get(&stats.dropped_ring_full) + get(&stats.dropped_undeliverable)
        );
    }

    #[test]
    fn settled_batches_release_their_losses_unless_delivered() {
        let shared = shared();
        queue(&shared, 1);
        queue(&shared, 1);
        add(&shared.stats.dropped_buffer_full, 3);
        let first = shared.ticket(1);
        let second = shared.ticket(1);
        assert_eq!((first.dropped, second.dropped), (3, 0));
        first.settle(Fate::Rejected);
        second.settle(Fate::Delivered { rejected: 0 });
        // 3 buffer losses + the rejected record, none delivered yet.
        assert_eq!(shared.ticket(0).dropped, 4);
    }

    #[test]
    fn a_sleep_ends_at_the_shutdown_deadline() {
        let shared = shared();
        *lock(&shared.deadline) = Some(Instant::now() + Duration::from_millis(50));
        let start = Instant::now();
        shared.sleep(Duration::MAX);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn ca_files_that_cannot_be_bundles_are_refused_before_reading() {
        assert!(matches!(
            read_ca_file(Path::new("/dev/zero")),
            Err(DeliveryError::CaFileKind { .. })
        ));
        let dir = std::env::temp_dir().join(format!("ca-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            read_ca_file(&dir),
            Err(DeliveryError::CaFileKind { .. })
        ));
        let fifo = dir.join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_ca_file(&fifo),
            Err(DeliveryError::CaFileKind { .. })
        ));
        let big = dir.join("big.pem");
        let mut file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_CA_FILE_BYTES + 1).unwrap();
        file.flush().unwrap();
        assert!(matches!(
            read_ca_file(&big),
            Err(DeliveryError::CaFileSize { .. })
        ));
        let small = dir.join("ca.pem");
        std::fs::write(&small, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(read_ca_file(&small).unwrap().len(), 28);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
