//! Batch and send: records go into batches on the reader, closed batches go through a channel to
//! a sender thread that POSTs them with `ureq` (blocking, so never on the async reader), retrying
//! as [`crate::retry`] decides.
//!
//! Memory is bounded by `BUFFER_MAX_RECORDS`: when that many records are queued, new ones are
//! dropped and counted instead of blocking the reader (which would lose kernel records silently).
//! Every loss reaches the collector in the `dropped` field of the next batch it accepts.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        Arc,
        atomic::Ordering::Relaxed,
        mpsc::{self, Receiver, RecvTimeoutError},
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
    /// The sender thread could not start.
    #[error("cannot start the sender thread")]
    Thread(#[source] std::io::Error),
}

enum Message {
    Batch(Vec<Record>),
    /// No more batches; deliver what is queued until `deadline`.
    Finish {
        deadline: Instant,
    },
}

/// A [`Sink`] that batches records and hands them to the sender thread.
#[derive(Debug)]
pub struct HttpOutput {
    batcher: Batcher,
    tx: mpsc::Sender<Message>,
    stats: Arc<Stats>,
    buffer_max_records: u64,
    sender: JoinHandle<()>,
}

impl HttpOutput {
    /// Starts the sender thread.
    pub fn start(
        config: &DeliveryConfig,
        agent: AgentInfo,
        stats: Arc<Stats>,
    ) -> Result<Self, DeliveryError> {
        let http = http_agent(config)?;
        let (tx, rx) = mpsc::channel();
        let sender = Sender {
            http,
            url: config.url.clone(),
            authorization: config.token.as_ref().map(|t| format!("Bearer {t}")),
            gzip: config.gzip,
            request_timeout: config.request_timeout,
            backoff: (config.backoff_initial, config.backoff_max),
            agent,
            rx,
            queue: VecDeque::new(),
            deadline: None,
            closed: false,
            seq: 0,
            assigned_dropped: 0,
            stats: Arc::clone(&stats),
        };
        let sender = thread::Builder::new()
            .name("sender".into())
            .spawn(move || sender.run())
            .map_err(DeliveryError::Thread)?;
        Ok(Self {
            batcher: Batcher::new(config.batch_max_records, config.batch_max_wait),
            tx,
            stats,
            buffer_max_records: config.buffer_max_records as u64,
            sender,
        })
    }

    fn enqueue(&mut self, batch: Vec<Record>) {
        // `records_queued` already counts these records (see `accept`).
        if self.tx.send(Message::Batch(batch)).is_err() {
            error!("the sender thread is gone; records are lost");
        }
    }

    /// Closes the open batch and gives the sender until `grace` from now to deliver everything
    /// queued; then waits for it.
    pub fn finish(mut self, grace: Duration) {
        if let Some(batch) = self.batcher.flush() {
            self.enqueue(batch);
        }
        let deadline = Instant::now() + grace;
        let _ = self.tx.send(Message::Finish { deadline });
        drop(self.tx);
        if self.sender.join().is_err() {
            error!("the sender thread panicked");
        }
    }
}

impl Sink for HttpOutput {
    fn accept(&mut self, record: Record) -> std::io::Result<()> {
        if get(&self.stats.records_queued) >= self.buffer_max_records {
            add(&self.stats.dropped_buffer_full, 1);
            return Ok(());
        }
        add(&self.stats.records_queued, 1);
        if let Some(batch) = self.batcher.push(record, Instant::now()) {
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
        .user_agent(concat!("tcp-sniffer/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// The sender thread's state.
struct Sender {
    http: ureq::Agent,
    url: String,
    authorization: Option<String>,
    gzip: bool,
    request_timeout: Duration,
    backoff: (Duration, Duration),
    agent: AgentInfo,
    rx: Receiver<Message>,
    /// Batches received but not yet attempted.
    queue: VecDeque<Vec<Record>>,
    /// Set by [`Message::Finish`]: give up on whatever is not delivered by then.
    deadline: Option<Instant>,
    closed: bool,
    seq: u64,
    /// Losses already written into a batch's `dropped` (delivered or being attempted).
    assigned_dropped: u64,
    stats: Arc<Stats>,
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

impl Sender {
    fn run(mut self) {
        loop {
            if let Some(records) = self.queue.pop_front() {
                self.deliver(records);
                continue;
            }
            if self.deadline.is_some() || self.closed {
                break;
            }
            match self.rx.recv() {
                Ok(message) => self.receive(message),
                Err(_) => self.closed = true,
            }
        }
        // Losses not yet reported (the kernel's last drops, given-up batches) travel in a final
        // batch without records, while there is time.
        if self.stats.dropped_total() > self.assigned_dropped && !self.past_deadline() {
            self.deliver(Vec::new());
        }
    }

    fn receive(&mut self, message: Message) {
        match message {
            Message::Batch(records) => self.queue.push_back(records),
            Message::Finish { deadline } => self.deadline = Some(deadline),
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Waits until `until` (or the deadline), taking in messages meanwhile.
    fn wait(&mut self, until: Instant) {
        let until = self.deadline.map_or(until, |deadline| until.min(deadline));
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            if self.closed {
                thread::sleep(until - now);
                return;
            }
            match self.rx.recv_timeout(until - now) {
                Ok(message) => self.receive(message),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    /// Delivers one batch, retrying until it is accepted, refused, or the deadline passes.
    fn deliver(&mut self, records: Vec<Record>) {
        let count = records.len() as u64;
        let seq = self.seq;
        self.seq += 1;
        // A retried batch must carry the same `dropped` (the collector deduplicates by seq), so
        // the losses it reports are fixed now; later losses go to the next batch.
        let dropped = self.stats.dropped_total() - self.assigned_dropped;
        self.assigned_dropped += dropped;
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
            self.wait(Instant::now() + delay);
        }
    }

    /// Counts a batch as lost and releases its `dropped` so the next batch reports it again.
    fn give_up(&mut self, count: u64, dropped: u64, loss: Loss) {
        self.assigned_dropped -= dropped;
        let (batches, records) = match loss {
            Loss::Rejected => (&self.stats.batches_rejected, &self.stats.dropped_rejected),
            Loss::Undeliverable => (
                &self.stats.batches_undeliverable,
                &self.stats.dropped_undeliverable,
            ),
        };
        add(batches, 1);
        add(records, count);
        self.stats.records_queued.fetch_sub(count, Relaxed);
    }

    fn post(&self, body: &[u8]) -> Attempt {
        let timeout = self.deadline.map_or(self.request_timeout, |deadline| {
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
