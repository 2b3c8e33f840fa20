//! The sender threads: each takes closed batches from the queue, encodes them and POSTs them,
//! retrying as [`crate::deliver::retry`] decides, until the batch is settled.

use std::{
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
    client::{Client, Failure},
    ledger::{Fate, Ledger, Ticket},
    lock,
    plain::Connection,
    queue::Queue,
    wire::Answer,
};
use crate::{
    deliver::{
        answer,
        retry::{Backoff, Policy, Verdict, classify},
    },
    encode::{Body, Encoder, Item},
    metrics::{Stats, add},
};

/// State the sender threads share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Carries the token's header and `OUTPUT_HEADERS`, whose values are never logged.
    pub(super) client: Client,
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

/// Longest uninterrupted sleep between retries, so a shutdown deadline is noticed quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

impl Shared {
    /// A sender thread: delivers batches until the queue is closed and empty, or until a
    /// delivery panics (a bug), which marks the agent failed.
    pub(super) fn work(&self, queue: &Queue<Vec<Item>>, mut encoder: Encoder) {
        // This sender's connection to an `http://` collector, kept between batches.
        let mut kept = None;
        while let Some(records) = queue.pop() {
            if !self.supervised(|| self.deliver(records, &mut encoder, &mut kept)) {
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

    /// Delivers one batch, retrying until it is accepted, refused, or the deadline passes;
    /// `kept` is the sender's kept connection.
    pub(super) fn deliver(
        &self,
        batch: Vec<Item>,
        encoder: &mut Encoder,
        kept: &mut Option<Connection>,
    ) {
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
        self.send(&body, encoder, kept, ticket, seq);
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
    fn send(
        &self,
        body: &Body,
        encoder: &Encoder,
        kept: &mut Option<Connection>,
        ticket: Ticket<'_>,
        seq: u64,
    ) {
        let count = ticket.count;
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            if self.past_deadline() {
                warn!(seq, records = count; "shutdown grace ran out; batch not delivered");
                ticket.settle(Fate::Undeliverable);
                return;
            }
            let retry_after = match self.post(kept, body.as_slice()) {
                Ok(Answer {
                    status,
                    retry_after,
                    body: answer,
                    truncated,
                }) => {
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
                Err(err) => {
                    self.stats.last_status.store(0, Relaxed);
                    warn!(seq, attempt = backoff.attempts() + 1, error = err.to_string().as_str(); "cannot reach the collector; will retry");
                    None
                }
            };
            add(&self.stats.batch_retries, 1);
            self.sleep(backoff.next_delay(fastrand::f64(), retry_after));
        }
    }

    /// One attempt, timed into the delivery histogram, bounded by the request timeout and the
    /// shutdown deadline.
    fn post(&self, kept: &mut Option<Connection>, body: &[u8]) -> Result<Answer, Failure> {
        let start = Instant::now();
        let timeout = self.deadline().map_or(self.request_timeout, |deadline| {
            deadline
                .saturating_duration_since(start)
                .min(self.request_timeout)
                .max(Duration::from_millis(1))
        });
        let attempt = self.client.post(kept, body, timeout);
        self.stats.delivery_seconds.0.observe(start.elapsed());
        attempt
    }
}
