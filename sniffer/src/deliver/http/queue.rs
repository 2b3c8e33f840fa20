//! The closed batches waiting for a sender thread, each handed to the sender that became idle
//! last.
//!
//! A channel whose receivers queue on a mutex hands batches out in turn: each sender, and its
//! encoder's body buffer (hundreds of KiB), is used once every `OUTPUT_CONCURRENCY` batches, by
//! when the buffer has left the CPU's caches and encoding waits on memory for every line it
//! writes. Here the sender that finished last takes the next batch, with its buffer still warm;
//! the others take batches only while it is busy (a slow collector), which is what they are for,
//! and their buffers are not grown while they are not needed. Flood benchmark, HTTP `batch`, six
//! rounds beside the build with the channel: process CPU per packet 14 ns less at the median
//! (per round −33 to +27: within the machine's noise), peak RSS 17.2 MiB against 17.9–18.1.
//!
//! A batch that closes while a sender is busy is left for that sender, unless the oldest batch
//! waiting has waited [`SPILL_AFTER`] when the next one closes. The reader closes two or three
//! batches in one pass of the ring, and waking an idle sender for each made two senders
//! alternate, encoding side by side on one CPU with both buffers cold (perf of the flood: two
//! senders with half the samples each; now one has them all). What this costs: a batch that
//! closes while its sender's request hangs or is retried waits for that sender, unless another
//! batch closes [`SPILL_AFTER`] or more after it (traffic goes on); none is lost by it.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard, PoisonError},
    thread::{self, Thread},
    time::{Duration, Instant},
};

/// How long the oldest item may have waited for a busy taker when the next is pushed before an
/// idle taker is woken: longer than a batch takes a sender when the collector keeps up (a
/// millisecond or two), short beside the time a batch waits for its records
/// (`BATCH_MAX_WAIT_MS`).
const SPILL_AFTER: Duration = Duration::from_millis(20);

/// A FIFO of items for a set of taker threads, waking the one idle the shortest time when none is
/// busy or an item has waited too long.
#[derive(Debug)]
pub(super) struct Queue<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// Items with the time each was pushed.
    items: VecDeque<(T, Instant)>,
    /// Takers waiting for an item, the one that came last at the end.
    idle: Vec<Thread>,
    /// Takers that have not left.
    takers: usize,
    /// No item is pushed any more: takers leave once the items are taken.
    closed: bool,
}

impl<T> Queue<T> {
    /// A queue for `takers` threads, each of which calls [`Queue::leave`] when it stops taking.
    pub(super) fn new(takers: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                idle: Vec::new(),
                takers,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state stays whole whatever a panicking holder was doing (each change is one step).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `item` and, when no taker is busy or the oldest item has waited [`SPILL_AFTER`],
    /// wakes the taker idle the shortest time; gives the item back when no taker is left to take
    /// it.
    pub(super) fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.takers == 0 {
            return Err(item);
        }
        let now = Instant::now();
        state.items.push_back((item, now));
        // Takers off the idle list are working, or woken and about to take an item.
        let busy = state.takers.saturating_sub(state.idle.len());
        let waited = state.items.front().map_or(Duration::ZERO, |(_, since)| {
            now.saturating_duration_since(*since)
        });
        if (busy == 0 || waited >= SPILL_AFTER)
            && let Some(taker) = state.idle.pop()
        {
            taker.unpark();
        }
        Ok(())
    }

    /// The oldest item, waiting for one; `None` once the queue is closed and empty.
    pub(super) fn pop(&self) -> Option<T> {
        let me = thread::current();
        loop {
            let mut state = self.lock();
            // Woken without being taken off the idle list (a spurious wakeup): off it now.
            state.idle.retain(|taker| taker.id() != me.id());
            if let Some((item, _)) = state.items.pop_front() {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state.idle.push(me.clone());
            drop(state);
            thread::park();
        }
    }

    /// Pushes no more: every taker takes what is left, then gets `None`.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for taker in state.idle.drain(..) {
            taker.unpark();
        }
    }

    /// A taker stops taking (it returned, or its work panicked).
    pub(super) fn leave(&self) {
        let mut state = self.lock();
        state.takers = state.takers.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, mpsc},
        time::{Duration, Instant},
    };

    use super::*;

    fn idle(queue: &Queue<u32>) -> usize {
        queue.lock().idle.len()
    }

    fn wait_until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A taker named `name` that reports what it takes on `tx`, until the queue closes.
    fn taker(queue: &Arc<Queue<u32>>, name: &str, tx: &mpsc::Sender<(String, u32)>) {
        spawn_taker(queue, name, tx, None);
    }

    /// The same, working on each item until released through the returned sender (or until it
    /// is dropped).
    fn busy_taker(
        queue: &Arc<Queue<u32>>,
        name: &str,
        tx: &mpsc::Sender<(String, u32)>,
    ) -> mpsc::Sender<()> {
        let (release, gate) = mpsc::channel();
        spawn_taker(queue, name, tx, Some(gate));
        release
    }

    fn spawn_taker(
        queue: &Arc<Queue<u32>>,
        name: &str,
        tx: &mpsc::Sender<(String, u32)>,
        gate: Option<mpsc::Receiver<()>>,
    ) {
        let (queue, tx) = (Arc::clone(queue), tx.clone());
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Some(item) = queue.pop() {
                    let name = thread::current().name().unwrap().to_owned();
                    tx.send((name, item)).unwrap();
                    if gate.as_ref().is_some_and(|gate| gate.recv().is_err()) {
                        break;
                    }
                }
                queue.leave();
            })
            .unwrap();
    }

    #[test]
    fn the_taker_idle_the_shortest_time_takes_the_next_item() {
        let queue = Arc::new(Queue::new(2));
        let (tx, rx) = mpsc::channel();
        taker(&queue, "first", &tx);
        wait_until(|| idle(&queue) == 1);
        taker(&queue, "second", &tx);
        wait_until(|| idle(&queue) == 2);
        queue.push(1).unwrap();
        assert_eq!(rx.recv().unwrap(), ("second".to_owned(), 1));
        // Idle again, it is again the last to have come: it takes the next one too.
        wait_until(|| idle(&queue) == 2);
        queue.push(2).unwrap();
        assert_eq!(rx.recv().unwrap(), ("second".to_owned(), 2));
        queue.close();
        wait_until(|| queue.lock().takers == 0);
        assert_eq!(queue.push(3), Err(3), "no taker left");
    }

    /// The next item a taker reports, failing the test rather than hanging it.
    fn taken(rx: &mpsc::Receiver<(String, u32)>) -> (String, u32) {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("an item taken")
    }

    #[test]
    fn a_busy_taker_keeps_what_comes_until_an_item_has_waited_too_long() {
        let queue = Arc::new(Queue::new(2));
        let (tx, rx) = mpsc::channel();
        taker(&queue, "cold", &tx);
        wait_until(|| idle(&queue) == 1);
        // "warm" came last, so it takes the first item; it then works until released.
        let release = busy_taker(&queue, "warm", &tx);
        wait_until(|| idle(&queue) == 2);
        queue.push(1).unwrap();
        assert_eq!(taken(&rx), ("warm".to_owned(), 1));
        // Busy: the next item waits for it rather than waking "cold".
        queue.push(2).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(idle(&queue), 1, "\"cold\" still idle");
        release.send(()).unwrap();
        assert_eq!(taken(&rx), ("warm".to_owned(), 2));
        // Busy again; an item that has waited `SPILL_AFTER` when the next comes wakes "cold",
        // which takes both in order.
        queue.push(3).unwrap();
        thread::sleep(SPILL_AFTER);
        queue.push(4).unwrap();
        assert_eq!(taken(&rx), ("cold".to_owned(), 3));
        assert_eq!(taken(&rx), ("cold".to_owned(), 4));
        drop(release);
        queue.close();
        wait_until(|| queue.lock().takers == 0);
    }

    #[test]
    fn items_come_out_in_order_and_closing_drains_them_first() {
        let queue = Arc::new(Queue::new(1));
        for item in 1..=3 {
            queue.push(item).unwrap();
        }
        queue.close();
        let (tx, rx) = mpsc::channel();
        taker(&queue, "only", &tx);
        drop(tx);
        let taken: Vec<u32> = rx.iter().map(|(_, item)| item).collect();
        assert_eq!(taken, [1, 2, 3]);
    }
}
