//! Where records go: NDJSON on stdout here, batches to `OUTPUT_URL` in [`crate::deliver`].

use std::{
    io::{self, Write},
    time::Instant,
};

use crate::record::Record;

/// Receives converted records in capture order.
pub trait Sink {
    /// Takes one record.
    fn accept(&mut self, record: Record) -> io::Result<()>;
    /// Called after each batch read from the ring, and before exit.
    fn flush(&mut self) -> io::Result<()>;
    /// When [`Sink::tick`] must be called next, if ever (a batch closing on age).
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Lets time-driven work happen (closing a batch that reached its age).
    fn tick(&mut self, _now: Instant) {}
}

/// Writes each record as one JSON line.
///
/// # Examples
///
/// ```
/// use sniffer::output::{Ndjson, Sink as _};
///
/// let mut out = Ndjson::new(Vec::new());
/// out.flush().unwrap();
/// assert!(out.into_inner().unwrap().is_empty());
/// ```
#[derive(Debug)]
pub struct Ndjson<W: Write> {
    out: W,
    /// Lines not yet written to `out`.
    pending: Vec<u8>,
    written: u64,
}

/// Lines are handed to the writer in chunks of about this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

impl<W: Write> Ndjson<W> {
    /// Buffers writes to `out`; lines reach it on [`Sink::flush`] or when the buffer fills.
    #[must_use]
    pub fn new(out: W) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(CHUNK_BYTES + 1024),
            written: 0,
        }
    }

    /// Records accepted so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Sink for Ndjson<W> {
    fn accept(&mut self, record: Record) -> io::Result<()> {
        record.write_json(&mut self.pending);
        self.pending.push(b'\n');
        self.written += 1;
        if self.pending.len() >= CHUNK_BYTES {
            // Cleared even when the write fails: the error ends the process, and a retry would
            // repeat lines that were partly written.
            let result = self.out.write_all(&self.pending);
            self.pending.clear();
            result?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.out.write_all(&self.pending);
        self.pending.clear();
        result?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use sniffer_common::PacketRecord;

    use super::*;
    use crate::clock::WallClock;

    #[test]
    fn one_json_object_per_line() {
        let clock = WallClock::from_offset(0);
        let mut out = Ndjson::new(Vec::new());
        for port in [80, 443] {
            let raw = PacketRecord {
                ip_version: 4,
                dst_port: port,
                ..PacketRecord::default()
            };
            out.accept(Record::from_kernel(&raw, &clock)).unwrap();
        }
        out.flush().unwrap();
        assert_eq!(out.written(), 2);
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["dst_port"], 443);
        assert!(text.ends_with('\n'));
    }
}
