//! Who owes what: every batch in a sender's hands holds a [`Ticket`] that settles its records
//! exactly once, and the [`Ledger`] keeps which losses a batch's `dropped` already reports.

use super::{lock, sender::Shared};
use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::add;

/// Who owes what, under one lock so that a settlement and a shutdown never count a record twice.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Losses already written into the `dropped` of a batch delivered or being attempted.
    pub(super) assigned_dropped: u64,
    /// Of those, the ones in batches not settled yet.
    pub(super) in_flight_dropped: u64,
    /// Bumped by [`Shared::close`]: tickets of an earlier generation were settled by it.
    pub(super) generation: u64,
}

/// How a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
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
pub(super) struct Ticket<'a> {
    pub(super) shared: &'a Shared,
    pub(super) count: u64,
    pub(super) dropped: u64,
    pub(super) generation: u64,
    pub(super) settled: bool,
}

impl Ticket<'_> {
    pub(super) fn settle(mut self, fate: Fate) {
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

impl Shared {
    /// Takes a batch of `count` queued records in hand, fixing the losses its `dropped` reports:
    /// a retried batch must carry the same `dropped` (the collector deduplicates by seq), so later
    /// losses go to a later batch.
    pub(super) fn ticket(&self, count: u64) -> Ticket<'_> {
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

    pub(super) fn settle(&self, ticket: &Ticket<'_>, fate: Fate) {
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
    pub(super) fn close(&self) -> (u64, u64) {
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
}
