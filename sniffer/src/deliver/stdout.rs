//! Records as NDJSON lines on stdout (when no `OUTPUT_URL` is set): writing a line is
//! delivering it.

use std::{
    io::{self, Write},
    sync::Arc,
    time::Instant,
};

use sniffer_common::{PacketRecord, time::Rfc3339Writer};

use super::Sink;
use crate::{
    capture::clock::WallClock,
    connections::record::ConnectionRecord,
    encode::record::Record,
    metrics::{Stats, add},
};

/// Lines are handed to the writer in chunks of about this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// Writes each record as one JSON line to `out`.
///
/// # Examples
///
/// ```
/// use std::{sync::Arc, time::Instant};
/// use sniffer::{capture::clock::WallClock, deliver::{Sink, stdout::Lines}, metrics::{Stats, get}};
/// use sniffer_common::PacketRecord;
///
/// let stats = Arc::new(Stats::default());
/// let mut out = Lines::new(Vec::new(), Arc::clone(&stats));
/// let raw = PacketRecord { ip_version: 4, dst_port: 8080, ..PacketRecord::default() };
/// out.take(&[raw, raw], &WallClock::from_offset(0)).unwrap();
/// assert_eq!(out.get_ref().iter().filter(|&&b| b == b'\n').count(), 2);
/// assert_eq!(get(&stats.records_delivered), 2);
/// ```
#[derive(Debug)]
pub struct Lines<W: Write> {
    out: W,
    /// Lines not yet written to `out`.
    pending: Vec<u8>,
    times: Rfc3339Writer,
    stats: Arc<Stats>,
}

impl<W: Write> Lines<W> {
    /// Lines to `out`, counted as delivered in `stats` once written.
    #[must_use]
    pub fn new(out: W, stats: Arc<Stats>) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(CHUNK_BYTES + Record::MAX_JSON_LEN + 1),
            times: Rfc3339Writer::default(),
            stats,
        }
    }

    /// The writer, for tests.
    #[must_use]
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn write_pending(&mut self) -> io::Result<()> {
        // Cleared even when the write fails: the error stops the agent, and a retry would repeat
        // lines that were partly written.
        let result = self.out.write_all(&self.pending);
        self.pending.clear();
        result
    }
}

impl<W: Write> Sink for Lines<W> {
    fn take(&mut self, records: &[PacketRecord], clock: &WallClock) -> io::Result<()> {
        for raw in records {
            Record::from_kernel(raw, clock).write_json(&mut self.pending, &mut self.times);
            self.pending.push(b'\n');
            if self.pending.len() >= CHUNK_BYTES {
                self.write_pending()?;
            }
        }
        self.write_pending()?;
        self.out.flush()?;
        add(&self.stats.records_delivered, records.len() as u64);
        Ok(())
    }

    fn take_connections(&mut self, records: &[ConnectionRecord]) -> io::Result<()> {
        for record in records {
            record.write_json(&mut self.pending);
            self.pending.push(b'\n');
        }
        self.write_pending()?;
        self.out.flush()?;
        add(&self.stats.records_delivered, records.len() as u64);
        Ok(())
    }

    fn finish(mut self: Box<Self>, _deadline: Instant) -> io::Result<()> {
        self.write_pending()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::get;

    #[test]
    fn one_json_object_per_line_counted_as_delivered() {
        let clock = WallClock::from_offset(0);
        let stats = Arc::new(Stats::default());
        let mut out = Lines::new(Vec::new(), Arc::clone(&stats));
        let raws: Vec<PacketRecord> = [80, 443]
            .map(|port| PacketRecord {
                ip_version: 4,
                dst_port: port,
                ..PacketRecord::default()
            })
            .into();
        out.take(&raws, &clock).unwrap();
        // More than a chunk in one read: written in pieces, nothing lost.
        let many = vec![raws[0]; 1000];
        out.take(&many, &clock).unwrap();
        assert_eq!(get(&stats.records_delivered), 1002);
        let text = String::from_utf8(out.get_ref().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 1002);
        assert_eq!(lines[1]["dst_port"], 443);
        assert!(text.ends_with('\n'));
    }
}
