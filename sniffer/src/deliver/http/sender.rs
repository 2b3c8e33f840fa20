//! The sender threads: each takes closed batches from the queue, encodes them and POSTs them,
//! retrying as [`crate::deliver::retry`] decides, until the batch is settled.

use std::{
    io::Read as _,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use log::{error, warn};

use super::{
    ledger::{Fate, Ledger, Ticket},
    lock,
    queue::Queue,
};
use crate::{
    deliver::{
        answer::{self, MAX_ANSWER_BYTES},
        retry::{Backoff, Policy, Verdict, classify},
    },
    encode::{Body, Encoder, Item},
    metrics::{Stats, add},
};

/// State the sender threads share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) http: ureq::Agent,
    pub(super) url: String,
    /// The token's header and `OUTPUT_HEADERS`; values never logged.
    pub(super) headers: Vec<(String, String)>,
    pub(super) policy: Policy,
    pub(super) request_timeout: Duration,
    pub(super) backoff: (Duration, Duration),
    pub(super) stats: Arc<Stats>,
    /// Next batch number.
    pub(super) seq: AtomicU64,
    pub(super) ledger: Mutex<Ledger>,
    /// Set at shutdown: give up on whatever is not delivered by then.
    pub(super) deadline: Mutex<Option<Instant>>,
    /// Encoded batches, emptied, for the reader to fill again (see `Batcher::reuse`).
    pub(super) spares: Mutex<Vec<Vec<Item>>>,
    /// How many of them are kept: one per sender and the one being filled.
    pub(super) max_spares: usize,
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
    /// A sender thread: delivers batches until the queue is closed and empty, or until a
    /// delivery panics (a bug), which marks the agent failed.
    pub(super) fn work(&self, queue: &Queue<Vec<Item>>, mut encoder: Encoder) {
        while let Some(records) = queue.pop() {
            if !self.supervised(|| self.deliver(records, &mut encoder)) {
                break;
            }
        }
        queue.leave();
    }

    /// Runs `work`; if it panics, records the failure and returns false. The batch the panic
    /// interrupted has already been settled as undeliverable by its ticket.
    pub(super) fn supervised(&self, work: impl FnOnce()) -> bool {
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(()) => true,
            Err(payload) => {
                self.stats.sender_failed.store(true, Relaxed);
                error!(error = cli_support::log::panic_message(payload.as_ref()); "a sender thread failed; the agent stops with exit code 2");
                false
            }
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    pub(super) fn past_deadline(&self) -> bool {
        self.deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Sleeps `delay`, or until the shutdown deadline if that comes first.
    pub(super) fn sleep(&self, delay: Duration) {
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

    /// Delivers one batch, retrying until it is accepted, refused, or the deadline passes.
    pub(super) fn deliver(&self, batch: Vec<Item>, encoder: &mut Encoder) {
        let ticket = self.ticket(batch.len() as u64);
        let dropped = ticket.dropped;
        let seq = self.seq.fetch_add(1, Relaxed);
        let body = match encoder.body(seq, dropped, &batch) {
            Ok(body) => body,
            Err(err) => {
                error!(seq, error = err.to_string().as_str(); "cannot encode batch; dropped");
                ticket.settle(Fate::Rejected);
                return;
            }
        };
        self.give_back(batch);
        self.send(&body, encoder, ticket, seq);
        encoder.recycle(body);
    }

    /// Keeps an encoded batch's memory for the reader to fill again, up to `max_spares`.
    fn give_back(&self, mut batch: Vec<Item>) {
        batch.clear();
        let mut spares = lock(&self.spares);
        if batch.capacity() > 0 && spares.len() < self.max_spares {
            spares.push(batch);
        }
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
