//! Deliver: where records go. Both outputs implement one [`Sink`]: [`stdout`] writes NDJSON lines,
//! [`http`] groups records into batches ([`batch`]) and POSTs them to `OUTPUT_URL` from sender
//! threads, with the configured headers ([`sniffer_common::headers`]), retrying as [`retry`] decides, resolving the
//! collector's name through [`resolve`]; [`answer`] reads what an OTLP collector says it rejected.

pub mod answer;
pub mod batch;
pub mod http;
pub mod resolve;
pub mod retry;
pub mod stdout;

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
