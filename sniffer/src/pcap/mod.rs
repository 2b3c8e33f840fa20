//! Packets for Wireshark: on request, the kernel program copies matched packets' first bytes
//! (up to the end of the TCP header, unless the operator allows more) into a ring of their own;
//! [`run_tap`] reads it and hands each packet to the captures running ([`Captures`]) and to the
//! flight recorder ([`recorder`]); [`server`] streams them as pcapng ([`pcapng`]) to whoever asks
//! on `CAPTURE_LISTEN` (the pod's loopback: `kubectl port-forward`). Packet and connection
//! records go on unchanged meanwhile: this is a second reader of the kernel's output, not a stage
//! of the records' pipeline.

pub mod config;
pub mod pcapng;
pub mod recorder;
pub mod request;
pub mod server;

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use self::{config::CaptureConfig, recorder::Recorder};
use crate::{
    capture::{
        CaptureError,
        packets::{CapturedPacket, PacketBatch, PacketSource, Wanted},
    },
    metrics::{Stats, add},
};

/// Reads of the ring (each up to `MAX_BATCH` packets) a capture's client may lag behind before
/// the next ones are dropped (and counted).
const QUEUE_BATCHES: usize = 16;

/// The packets of one read of the ring, as captures share them.
pub type Shared = Arc<PacketBatch>;

/// One running capture, as the tap sees it.
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Shared>,
    ports: Option<Vec<u16>>,
    wanted: Wanted,
    ends: Instant,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct Running {
    subscribers: Vec<Subscriber>,
    next_id: u64,
}

/// The captures running, the flight recorder, and so what the kernel must copy.
pub struct Captures {
    running: Mutex<Running>,
    recorder: Option<Mutex<Recorder>>,
    /// Told when what the kernel must copy may have changed.
    changed: Notify,
    max_concurrent: usize,
    stats: Arc<Stats>,
}

/// A capture in progress: its packets arrive on `packets` until it is dropped.
pub struct Subscription {
    id: u64,
    captures: Arc<Captures>,
    /// Packets for this capture, in order, in the batches they were read in: the capture
    /// keeps those from or to its ports.
    pub packets: mpsc::Receiver<Shared>,
    /// Packets this capture lost because it read slower than they came.
    pub dropped: Arc<AtomicU64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut running = self.captures.lock();
        running.subscribers.retain(|s| s.id != self.id);
        self.captures
            .stats
            .capture
            .active
            .store(running.subscribers.len() as u64, Relaxed);
        drop(running);
        self.captures.changed.notify_one();
    }
}

/// `CAPTURE_MAX_CONCURRENT` captures are running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy {
    /// Until the first of them ends.
    pub retry_after: Duration,
}

impl Captures {
    /// No capture running yet; a flight recorder if `config` asks for one.
    #[must_use]
    pub fn new(config: &CaptureConfig, stats: Arc<Stats>) -> Arc<Self> {
        stats.capture.enabled.store(true, Relaxed);
        Arc::new(Self {
            running: Mutex::new(Running::default()),
            recorder: (config.recorder_bytes > 0)
                .then(|| Mutex::new(Recorder::new(config.recorder_bytes))),
            changed: Notify::new(),
            max_concurrent: config.max_concurrent,
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a capture of the packets from or to `ports` (all if `None`), copied as `wanted`
    /// says, until `ends`.
    ///
    /// # Errors
    ///
    /// When `CAPTURE_MAX_CONCURRENT` captures are running.
    pub fn subscribe(
        self: &Arc<Self>,
        ports: Option<Vec<u16>>,
        wanted: Wanted,
        ends: Instant,
    ) -> Result<Subscription, Busy> {
        let mut running = self.lock();
        if running.subscribers.len() >= self.max_concurrent {
            let first = running.subscribers.iter().map(|s| s.ends).min();
            let retry_after = first.map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(Instant::now())
            });
            add(&self.stats.capture.refused_busy, 1);
            return Err(Busy { retry_after });
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = running.next_id;
        running.next_id += 1;
        running.subscribers.push(Subscriber {
            id,
            tx,
            ports,
            wanted,
            ends,
            dropped: Arc::clone(&dropped),
        });
        self.stats
            .capture
            .active
            .store(running.subscribers.len() as u64, Relaxed);
        add(&self.stats.capture.started, 1);
        drop(running);
        self.changed.notify_one();
        Ok(Subscription {
            id,
            captures: Arc::clone(self),
            packets: rx,
            dropped,
        })
    }

    /// What the flight recorder holds, from or to `ports` if given; `None` when it is off.
    #[must_use]
    pub fn recent(&self, ports: Option<&[u16]>) -> Option<Vec<Arc<CapturedPacket>>> {
        let recorder = self.recorder.as_ref()?;
        Some(
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .packets(ports),
        )
    }

    /// What the kernel must copy for the captures running and the recorder.
    fn wanted(&self) -> Wanted {
        let running = self.lock();
        running.subscribers.iter().fold(
            Wanted {
                headers: self.recorder.is_some(),
                snaplen: 0,
            },
            |all, s| Wanted {
                headers: all.headers || s.wanted.headers,
                snaplen: all.snaplen.max(s.wanted.snaplen),
            },
        )
    }

    /// Hands a batch of packets to the recorder and to each capture running.
    fn distribute(&self, batch: PacketBatch) {
        let running = self.lock();
        if let Some(recorder) = &self.recorder {
            let mut recorder = recorder.lock().unwrap_or_else(PoisonError::into_inner);
            let before = recorder.forgotten();
            for packet in batch.iter() {
                let keep = packet.headers_len as usize;
                recorder.record(Arc::new(CapturedPacket::cut(packet, keep)));
            }
            add(
                &self.stats.capture.recorder_forgotten,
                recorder.forgotten() - before,
            );
        }
        if running.subscribers.is_empty() {
            return;
        }
        let batch = Arc::new(batch);
        for subscriber in &running.subscribers {
            if let Err(mpsc::error::TrySendError::Full(batch)) =
                subscriber.tx.try_send(Arc::clone(&batch))
            {
                let lost = match &subscriber.ports {
                    Some(ports) => batch.iter().filter(|p| p.matches(ports)).count(),
                    None => batch.len(),
                } as u64;
                subscriber.dropped.fetch_add(lost, Relaxed);
                add(&self.stats.capture.dropped_slow_client, lost);
            }
        }
    }
}

/// Reads the packets the kernel copies and hands them to `captures`, telling the kernel what to
/// copy whenever the captures running change. Runs until the ring cannot be read.
///
/// # Errors
///
/// When the ring cannot be waited on, or the kernel's switch cannot be set.
pub async fn run_tap(
    mut source: PacketSource,
    captures: Arc<Captures>,
) -> Result<(), CaptureError> {
    loop {
        source.want(captures.wanted())?;
        let mut batch = PacketBatch::default();
        tokio::select! {
            ready = source.next_batch(&mut batch) => ready?,
            () = captures.changed.notified() => continue,
        }
        if !batch.is_empty() {
            captures.distribute(batch);
        }
    }
}
