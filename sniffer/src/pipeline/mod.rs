//! The records' pipeline and its one contract: every stage after the reader is a [`Sink`] — it
//! takes the records of one ring read (and connection records), hands them on, and is told when
//! time passes and when to finish. The stages, in order: [`tracking`] (`RECORDS=connections` or
//! `both`: packets into connections, in front of the output), then the output, one of
//! [`crate::deliver`]'s (stdout lines, or batches to `OUTPUT_URL`). `main.rs` assembles them.

pub mod tracking;

use std::{io, time::Instant};

use sniffer_common::PacketRecord;

use crate::{capture::clock::WallClock, connections::record::ConnectionRecord};

/// Receives the records read from the ring, in capture order, and hands them over.
pub trait Sink {
    /// Takes the records of one read from the ring; `clock` places their timestamps.
    ///
    /// # Errors
    ///
    /// When the records cannot be handed over at all (stdout closed): the agent stops.
    fn take(&mut self, records: &[PacketRecord], clock: &WallClock) -> io::Result<()>;

    /// Takes connection records (`RECORDS=connections` or `both`), delivered like packet
    /// records and accounted with them.
    ///
    /// # Errors
    ///
    /// As [`Sink::take`].
    fn take_connections(&mut self, records: &[ConnectionRecord]) -> io::Result<()>;

    /// When [`Sink::tick`] is due next (an open batch reaching its age), if ever.
    fn due(&self) -> Option<Instant> {
        None
    }

    /// Lets time-driven work happen: a batch that reached its age is closed and sent.
    fn tick(&mut self, _now: Instant) {}

    /// Hands over everything taken, giving up at `deadline`; the agent then stops.
    ///
    /// # Errors
    ///
    /// When the last records cannot be written (stdout closed).
    fn finish(self: Box<Self>, deadline: Instant) -> io::Result<()>;
}
