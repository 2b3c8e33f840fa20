//! Group the records: close a batch at `BATCH_MAX_RECORDS` or when its oldest record is
//! `BATCH_MAX_WAIT_MS` old.
//!
//! Pure logic: time is passed in, nothing here does I/O.

use std::time::{Duration, Instant};

/// Collects records (packet records, or connection records) into batches.
#[derive(Debug)]
#[must_use]
pub struct Batcher<T> {
    max_records: usize,
    max_wait: Duration,
    current: Vec<T>,
    /// When the oldest record of `current` arrived.
    opened: Option<Instant>,
}

impl<T> Batcher<T> {
    /// A batcher closing batches at `max_records` records or `max_wait` after their first record.
    pub fn new(max_records: usize, max_wait: Duration) -> Self {
        Self {
            max_records: max_records.max(1),
            max_wait,
            current: Vec::new(),
            opened: None,
        }
    }

    /// Moves records from `records` into the open batch until they run out or it is full;
    /// returns the batch it completed, if it did (call again for the rest). `now` is called only
    /// when a record opens a batch (reading the clock for every record was 5 % of the sniffer's
    /// CPU). Records are made straight in the batch's memory: pushing them one by one cost a
    /// copy and a capacity check each.
    pub fn fill(
        &mut self,
        records: &mut impl ExactSizeIterator<Item = T>,
        now: impl FnOnce() -> Instant,
    ) -> Option<Vec<T>> {
        if records.len() == 0 {
            return None;
        }
        if self.current.is_empty() {
            self.opened = Some(now());
            self.current.reserve(self.max_records);
        }
        let room = self.max_records - self.current.len();
        self.current.extend(records.take(room));
        (self.current.len() >= self.max_records).then(|| self.take_current())
    }

    /// Gives the batcher an emptied batch whose memory the next batch reuses, if it has none
    /// yet. A fresh batch of thousands of records is memory the allocator hands back to the
    /// kernel when it is freed and faults in again page by page when it is filled: under a flood
    /// that was 5 % of the sniffer's CPU.
    pub fn reuse(&mut self, mut spare: Vec<T>) {
        if self.current.capacity() == 0 {
            spare.clear();
            self.current = spare;
        }
    }

    /// Whether the batch to be filled next has no memory yet (see [`Batcher::reuse`]).
    #[must_use]
    pub fn wants_memory(&self) -> bool {
        self.current.capacity() == 0
    }

    /// When the open batch reaches its age, if one is open.
    #[must_use]
    pub fn due(&self) -> Option<Instant> {
        self.opened.map(|opened| opened + self.max_wait)
    }

    /// Closes the open batch if it has reached its age at `now`.
    pub fn close_if_due(&mut self, now: Instant) -> Option<Vec<T>> {
        let due = self.due().is_some_and(|due| now >= due);
        due.then(|| self.take_current())
    }

    /// Closes the open batch now, if it holds anything (at shutdown).
    pub fn close(&mut self) -> Option<Vec<T>> {
        (!self.current.is_empty()).then(|| self.take_current())
    }

    /// Records in the open batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no batch is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    fn take_current(&mut self) -> Vec<T> {
        self.opened = None;
        std::mem::take(&mut self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::packet::{Record, test_record as record};

    fn push(
        batcher: &mut Batcher<Record>,
        port: u16,
        now: impl FnOnce() -> Instant,
    ) -> Option<Vec<Record>> {
        batcher.fill(&mut std::iter::once(record(port)), now)
    }

    fn ports(batch: &[Record]) -> Vec<u16> {
        batch.iter().map(|r| r.dst_port).collect()
    }

    #[test]
    fn fill_splits_a_read_at_batch_boundaries() {
        let now = Instant::now();
        let mut batcher = Batcher::new(3, Duration::from_secs(1));
        let mut read = (1..=7).map(record);
        assert_eq!(
            batcher.fill(&mut read, || now).as_deref().map(ports),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            batcher.fill(&mut read, || now).as_deref().map(ports),
            Some(vec![4, 5, 6])
        );
        assert_eq!(batcher.fill(&mut read, || now), None);
        assert_eq!(read.len(), 0);
        assert_eq!(batcher.len(), 1);
        assert_eq!(batcher.fill(&mut read, || panic!("nothing to add")), None);
        assert_eq!(batcher.close().as_deref().map(ports), Some(vec![7]));
    }

    #[test]
    fn a_reused_batch_is_filled_in_its_own_memory() {
        let now = Instant::now();
        let mut batcher = Batcher::new(2, Duration::from_secs(1));
        assert!(batcher.wants_memory());
        let mut spare = Vec::with_capacity(8);
        spare.push(record(9));
        let memory = spare.as_ptr();
        batcher.reuse(spare);
        assert!(!batcher.wants_memory());
        // A second spare while the first is unused is not taken.
        batcher.reuse(Vec::with_capacity(8));
        assert!(push(&mut batcher, 1, || now).is_none());
        let batch = push(&mut batcher, 2, || now).expect("full");
        assert_eq!(ports(&batch), [1, 2]);
        assert_eq!(batch.as_ptr(), memory);
        assert!(batcher.wants_memory());
    }

    #[test]
    fn closes_at_max_records() {
        let now = Instant::now();
        let mut batcher = Batcher::new(3, Duration::from_secs(1));
        assert!(push(&mut batcher, 1, || now).is_none());
        let not_called = || -> Instant { panic!("the clock is read only when a batch opens") };
        assert!(push(&mut batcher, 2, not_called).is_none());
        let batch = push(&mut batcher, 3, not_called).expect("full");
        assert_eq!(ports(&batch), [1, 2, 3]);
        assert!(batcher.is_empty());
        assert_eq!(batcher.due(), None);
    }

    #[test]
    fn closes_when_the_oldest_record_is_max_wait_old() {
        let start = Instant::now();
        let wait = Duration::from_millis(500);
        let mut batcher = Batcher::new(100, wait);
        assert_eq!(batcher.close_if_due(start), None);
        push(&mut batcher, 1, || start);
        push(&mut batcher, 2, || start + Duration::from_millis(400));
        assert_eq!(batcher.due(), Some(start + wait));
        assert!(
            batcher
                .close_if_due(start + Duration::from_millis(499))
                .is_none()
        );
        assert_eq!(batcher.close_if_due(start + wait).map(|b| b.len()), Some(2));
        assert_eq!(batcher.due(), None);
        // The next batch's clock starts at its own first record.
        push(&mut batcher, 3, || start + Duration::from_secs(2));
        assert_eq!(batcher.due(), Some(start + Duration::from_secs(2) + wait));
    }

    #[test]
    fn close_takes_a_partial_batch_only() {
        let mut batcher = Batcher::new(10, Duration::from_secs(1));
        assert_eq!(batcher.close(), None);
        push(&mut batcher, 1, Instant::now);
        assert_eq!(batcher.len(), 1);
        assert_eq!(batcher.close().map(|b| b.len()), Some(1));
        assert_eq!(batcher.close(), None);
    }
}
