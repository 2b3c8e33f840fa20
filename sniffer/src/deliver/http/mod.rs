//! Batch and send: records go into batches on the reader, closed batches go through a queue to
//! `OUTPUT_CONCURRENCY` sender threads that POST them with blocking I/O (so never on the async
//! reader), retrying as [`crate::deliver::retry`] decides. Several requests in flight hide the collector's
//! round trip, which otherwise caps delivery far below the capture rate.
//!
//! Memory is bounded by `BUFFER_MAX_RECORDS`: when that many records are queued, new ones are
//! dropped and counted instead of blocking the reader (which would lose kernel records silently).
//! Every loss reaches the collector in the `dropped` field of the next batch it accepts.
//!
//! Every batch handed to a sender holds a ticket (`ledger.rs`) that settles its records exactly once:
//! delivered, rejected, or undeliverable. A sender thread that panics settles its batch as
//! undeliverable on the way out and marks the agent unhealthy (the process then stops with exit
//! code 2). At shutdown the grace period bounds the exit: whatever is still queued or in flight at
//! the deadline is settled as undeliverable at once, without waiting for requests in flight.
//!
//! The parts: this file is the [`Sink`] and its buffer admission; `sender.rs` the sender threads
//! and their retry loop; `queue.rs` which sender takes the next batch; `ledger.rs` who owes which
//! records (the `Ticket`s); [`client`] the HTTP client: `plain.rs` for `http://` (its answers read
//! by `wire.rs`), ureq with its CA bundle for `https://`.

pub mod client;
mod ledger;
mod plain;
mod queue;
mod sender;
mod wire;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use log::warn;
use thiserror::Error;

use sniffer_common::PacketRecord;

use self::{
    client::{Client, MAX_CA_FILE_BYTES},
    ledger::{Fate, Ledger},
    queue::Queue,
    sender::Shared,
};
use super::batcher::Batcher;
use crate::{
    capture::clock::WallClock,
    connections::record::ConnectionRecord,
    deliver::config::DeliveryConfig,
    deliver::retry::Policy,
    encode::{AgentInfo, Encoder, Item, packet::Record},
    metrics::{Stats, add, get},
    pipeline::Sink,
};

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
    /// `OUTPUT_URL`, accepted by the URL rule, is not one the HTTP client takes (a bug).
    #[error("OUTPUT_URL is not a URL the HTTP client takes")]
    Url(#[source] ureq::http::uri::InvalidUri),
    /// A sender thread could not start.
    #[error("cannot start a sender thread")]
    Thread(#[source] std::io::Error),
}

/// A [`Sink`] that batches records and hands them to the sender threads.
#[derive(Debug)]
pub struct HttpOutput {
    /// Packet and connection records, in one batch as they come.
    batcher: Batcher<Item>,
    /// Closed batches for the senders.
    queue: Arc<Queue<Vec<Item>>>,
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
            client: Client::new(config)?,
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
            spares: Mutex::new(Vec::new()),
            max_spares: config.concurrency + 1,
        });
        let queue = Arc::new(Queue::new(config.concurrency));
        let senders = (0..config.concurrency)
            .map(|index| {
                let (shared, queue) = (Arc::clone(&shared), Arc::clone(&queue));
                let encoder = Encoder::new(config.format, Arc::clone(&agent), config.gzip);
                thread::Builder::new()
                    .name(format!("sender-{index}"))
                    .spawn(move || shared.work(&queue, encoder))
                    .map_err(DeliveryError::Thread)
            })
            .collect::<Result<_, _>>()
            .inspect_err(|_| {
                // The senders that started stop at once (nothing was queued).
                queue.close();
            })?;
        Ok(Self {
            batcher: Batcher::new(config.batch_max_records, config.batch_max_wait),
            queue,
            shared,
            buffer_max_records: config.buffer_max_records as u64,
            senders,
            last_words: Encoder::new(config.format, agent, config.gzip),
        })
    }

    /// Moves `records` into batches, handing each full one to the senders.
    fn fill(&mut self, mut records: impl ExactSizeIterator<Item = Item>) {
        while records.len() > 0 {
            if self.batcher.wants_memory()
                && let Some(spare) = lock(&self.shared.spares).pop()
            {
                self.batcher.reuse(spare);
            }
            if let Some(batch) = self.batcher.fill(&mut records, Instant::now) {
                self.enqueue(batch);
            }
        }
        self.tick(Instant::now());
    }

    fn enqueue(&mut self, batch: Vec<Item>) {
        // `records_queued` already counts these records (see `room`).
        add(&self.shared.stats.batches_queued, 1);
        if let Err(batch) = self.queue.push(batch) {
            // Every sender is gone (each one that failed said why): settle the batch here.
            let ticket = self.shared.ticket(batch.len() as u64);
            ticket.settle(Fate::Undeliverable);
        }
    }
}

impl Sink for HttpOutput {
    fn take(&mut self, records: &[PacketRecord], clock: &WallClock) -> std::io::Result<()> {
        let kept = self.room(records.len());
        self.fill(
            records[..kept]
                .iter()
                .map(|raw| Item::Packet(Record::from_kernel(raw, clock))),
        );
        Ok(())
    }

    fn take_connections(&mut self, records: &[ConnectionRecord]) -> std::io::Result<()> {
        let kept = self.room(records.len());
        self.fill(
            records[..kept]
                .iter()
                .map(|record| Item::Connection(Box::new(record.clone()))),
        );
        Ok(())
    }

    fn due(&self) -> Option<Instant> {
        self.batcher.due()
    }

    fn tick(&mut self, now: Instant) {
        if let Some(batch) = self.batcher.close_if_due(now) {
            self.enqueue(batch);
        }
    }

    /// Closes the open batch and lets the senders deliver what is queued until `deadline` (the
    /// shutdown grace); then settles whatever is still queued or in flight as undeliverable
    /// without waiting for requests in flight. Losses not yet reported go in a last batch without
    /// records, if time remains.
    fn finish(mut self: Box<Self>, deadline: Instant) -> std::io::Result<()> {
        if let Some(batch) = self.batcher.close() {
            self.enqueue(batch);
        }
        *lock(&self.shared.deadline) = Some(deadline);
        let Self {
            queue,
            senders,
            shared,
            mut last_words,
            ..
        } = *self;
        queue.close();
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
            shared.deliver(Vec::new(), &mut last_words, &mut None);
        }
        Ok(())
    }
}

/// A poisoned lock only means another sender panicked; the numbers inside are still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, path::Path};

    use super::{client::read_ca_file, *};
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
            client: Client::new(&config()).unwrap(),
            policy: Policy::Standard,
            request_timeout: Duration::from_millis(100),
            backoff: (Duration::from_millis(10), Duration::from_millis(20)),
            stats: Arc::new(Stats::default()),
            seq: AtomicU64::new(0),
            ledger: Mutex::new(Ledger::default()),
            deadline: Mutex::new(None),
            spares: Mutex::new(Vec::new()),
            max_spares: 2,
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
