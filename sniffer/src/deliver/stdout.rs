//! Records as NDJSON lines on stdout (when no `OUTPUT_URL` is set): writing a line is
//! delivering it.
//!
//! Lines are encoded on the reader and written by a thread of their own, so a stdout that does
//! not drain (a pipe into a stalled program) never stops the reader, its health checks or its
//! signals. Like the HTTP output, the lines waiting for the writer are bounded by
//! `BUFFER_MAX_RECORDS`: beyond it new records are dropped and counted (`buffer_full`). At
//! shutdown the grace period bounds the wait for the writer; lines still waiting then are
//! counted as undeliverable. A write that fails (stdout closed) stops the agent (exit code 2),
//! and what it could not write is counted as undeliverable.

use std::{
    io::{self, Write},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::Ordering::Relaxed,
        mpsc::{self, Receiver, Sender},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use cli_support::time::Rfc3339Writer;
use log::error;
use sniffer_common::PacketRecord;

use crate::pipeline::Sink;
use crate::{
    capture::clock::WallClock,
    connections::record::ConnectionRecord,
    encode::packet::Record,
    metrics::{Stats, add, get},
};

/// Lines are handed to the writer in chunks of about this many bytes. Each chunk wakes the
/// writer, a context switch on the reader's CPU: 256 KiB rather than 64 took the flood
/// benchmark's stdout from 211 and 221 to 167 and 188 ns of process CPU a packet (two rounds
/// each), with a quarter of the switches.
const CHUNK_BYTES: usize = 256 * 1024;

/// Lines encoded and waiting for the writer thread, and how many records they hold.
struct Chunk {
    bytes: Vec<u8>,
    records: u64,
}

/// Under one lock, so that the writer and a shutdown never settle the same records twice.
#[derive(Debug, Default)]
struct Ledger {
    /// Set when the shutdown grace ran out: what is still queued was counted as undeliverable,
    /// and a write finishing later changes nothing.
    closed: bool,
}

/// Writes each record as one JSON line to `out`, from a thread of its own.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sniffer::{capture::clock::WallClock, deliver::stdout::Lines, metrics::{Stats, get}, pipeline::Sink};
/// use sniffer_common::PacketRecord;
///
/// let stats = Arc::new(Stats::default());
/// let mut out = Lines::new(Vec::new(), 1000, Arc::clone(&stats)).unwrap();
/// let raw = PacketRecord { ip_version: 4, dst_port: 8080, ..PacketRecord::default() };
/// out.take(&[raw, raw], &WallClock::from_offset(0)).unwrap();
/// let written = out.close().unwrap();
/// assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 2);
/// assert_eq!(get(&stats.records_delivered), 2);
/// ```
pub struct Lines<W: Write + Send + 'static> {
    /// The chunk being filled.
    pending: Vec<u8>,
    pending_records: u64,
    times: Rfc3339Writer,
    tx: Option<Sender<Chunk>>,
    writer: Option<JoinHandle<io::Result<W>>>,
    ledger: Arc<Mutex<Ledger>>,
    buffer_max_records: u64,
    stats: Arc<Stats>,
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write + Send + 'static> Lines<W> {
    /// Lines to `out`, written by a new thread; at most `buffer_max_records` records wait for
    /// it. Each is counted as delivered in `stats` once written.
    ///
    /// # Errors
    ///
    /// When the thread cannot start.
    pub fn new(out: W, buffer_max_records: usize, stats: Arc<Stats>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let writer = {
            let (ledger, stats) = (Arc::clone(&ledger), Arc::clone(&stats));
            thread::Builder::new()
                .name("stdout".to_owned())
                .spawn(move || write_lines(out, &rx, &ledger, &stats))?
        };
        Ok(Self {
            pending: Vec::with_capacity(CHUNK_BYTES + Record::MAX_JSON_LEN + 1),
            pending_records: 0,
            times: Rfc3339Writer::default(),
            tx: Some(tx),
            writer: Some(writer),
            ledger,
            buffer_max_records: buffer_max_records as u64,
            stats,
        })
    }

    /// How many of `count` new records fit under `BUFFER_MAX_RECORDS`; the rest are counted as
    /// dropped (`buffer_full`), the kept ones as queued.
    fn room(&self, count: usize) -> usize {
        let room = self
            .buffer_max_records
            .saturating_sub(get(&self.stats.records_queued));
        let kept = count.min(usize::try_from(room).unwrap_or(usize::MAX));
        add(&self.stats.dropped_buffer_full, (count - kept) as u64);
        add(&self.stats.records_queued, kept as u64);
        kept
    }

    /// Hands the chunk being filled to the writer.
    fn send_pending(&mut self) {
        if self.pending_records == 0 {
            return;
        }
        let chunk = Chunk {
            bytes: std::mem::replace(
                &mut self.pending,
                Vec::with_capacity(CHUNK_BYTES + Record::MAX_JSON_LEN + 1),
            ),
            records: std::mem::take(&mut self.pending_records),
        };
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk));
        if let Some(Err(mpsc::SendError(chunk))) = sent {
            // The writer is gone (it failed, and said why): these lines cannot be written.
            settle_undeliverable(&self.ledger, &self.stats, chunk.records);
        }
    }

    /// Stops taking lines and waits for the writer to write every one; returns the writer.
    ///
    /// # Errors
    ///
    /// The error that stopped the writer.
    pub fn close(mut self) -> io::Result<W> {
        self.send_pending();
        self.tx = None;
        self.writer
            .take()
            .expect("the writer runs until closed")
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the stdout writer thread panicked")))
    }
}

/// Counts `records` that will never be written.
fn settle_undeliverable(ledger: &Mutex<Ledger>, stats: &Stats, records: u64) {
    let ledger = lock(ledger);
    if !ledger.closed {
        add(&stats.dropped_undeliverable, records);
        stats.records_queued.fetch_sub(records, Relaxed);
    }
}

/// The writer thread: writes chunks until the channel closes. After a failed write, the rest
/// is counted as undeliverable and the agent is told to stop.
fn write_lines<W: Write>(
    mut out: W,
    rx: &Receiver<Chunk>,
    ledger: &Mutex<Ledger>,
    stats: &Stats,
) -> io::Result<W> {
    let mut failure = None;
    for chunk in rx {
        if failure.is_some() {
            settle_undeliverable(ledger, stats, chunk.records);
            continue;
        }
        match out.write_all(&chunk.bytes).and_then(|()| out.flush()) {
            Ok(()) => {
                let ledger = lock(ledger);
                if !ledger.closed {
                    add(&stats.records_delivered, chunk.records);
                    stats.records_queued.fetch_sub(chunk.records, Relaxed);
                }
            }
            Err(err) => {
                error!(error = err.to_string().as_str(); "cannot write records to stdout; the agent stops");
                stats.output_failed.store(true, Relaxed);
                settle_undeliverable(ledger, stats, chunk.records);
                failure = Some(err);
            }
        }
    }
    failure.map_or(Ok(out), Err)
}

impl<W: Write + Send + 'static> Sink for Lines<W> {
    fn take(&mut self, records: &[PacketRecord], clock: &WallClock) -> io::Result<()> {
        let kept = self.room(records.len());
        for raw in &records[..kept] {
            Record::from_kernel(raw, clock).write_json(&mut self.pending, &mut self.times);
            self.pending.push(b'\n');
            self.pending_records += 1;
            if self.pending.len() >= CHUNK_BYTES {
                self.send_pending();
            }
        }
        self.send_pending();
        Ok(())
    }

    fn take_connections(&mut self, records: &[ConnectionRecord]) -> io::Result<()> {
        let kept = self.room(records.len());
        for record in &records[..kept] {
            record.write_json(&mut self.pending, &mut self.times);
            self.pending.push(b'\n');
            self.pending_records += 1;
            if self.pending.len() >= CHUNK_BYTES {
                self.send_pending();
            }
        }
        self.send_pending();
        Ok(())
    }

    /// Waits for the writer until `deadline` (the shutdown grace); lines it has not written by
    /// then are counted as undeliverable, and the process may exit with the writer still blocked.
    fn finish(mut self: Box<Self>, deadline: Instant) -> io::Result<()> {
        self.send_pending();
        self.tx = None;
        let writer = self.writer.take().expect("the writer runs until closed");
        while !writer.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if !writer.is_finished() {
            let mut ledger = lock(&self.ledger);
            ledger.closed = true;
            let records = self.stats.records_queued.swap(0, Relaxed);
            add(&self.stats.dropped_undeliverable, records);
            error!(records; "stdout did not take the last records within the shutdown grace; they are counted as undeliverable");
            return Ok(());
        }
        writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the stdout writer thread panicked")))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(port: u16) -> PacketRecord {
        PacketRecord {
            ip_version: 4,
            dst_port: port,
            ..PacketRecord::default()
        }
    }

    #[test]
    fn one_json_object_per_line_counted_as_delivered() {
        let clock = WallClock::from_offset(0);
        let stats = Arc::new(Stats::default());
        let mut out = Lines::new(Vec::new(), 10_000, Arc::clone(&stats)).unwrap();
        out.take(&[raw(80), raw(443)], &clock).unwrap();
        // More than a chunk in one read: written in pieces, nothing lost.
        out.take(&vec![raw(80); 1000], &clock).unwrap();
        let text = String::from_utf8(out.close().unwrap()).unwrap();
        assert_eq!(get(&stats.records_delivered), 1002);
        assert_eq!(get(&stats.records_queued), 0);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 1002);
        assert_eq!(lines[1]["dst_port"], 443);
        assert!(text.ends_with('\n'));
    }

    /// A writer that blocks until told to go on, like a pipe nobody reads.
    struct Stalled(Arc<(Mutex<bool>, std::sync::Condvar)>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (go, cond) = &*self.0;
            let mut go = go.lock().unwrap();
            while !*go {
                go = cond.wait(go).unwrap();
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_stdout_never_blocks_the_reader_and_every_record_is_counted() {
        let clock = WallClock::from_offset(0);
        let stats = Arc::new(Stats::default());
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let mut out =
            Box::new(Lines::new(Stalled(Arc::clone(&gate)), 1000, Arc::clone(&stats)).unwrap());
        let start = Instant::now();
        for _ in 0..5 {
            out.take(&vec![raw(80); 400], &clock).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the reader waited"
        );
        // 1000 wait for the stalled writer; the other 1000 were dropped at once.
        assert_eq!(get(&stats.dropped_buffer_full), 1000);
        assert_eq!(get(&stats.records_queued), 1000);
        let deadline = Instant::now() + Duration::from_millis(200);
        out.finish(deadline).unwrap();
        assert!(Instant::now() < deadline + Duration::from_millis(100));
        assert_eq!(get(&stats.dropped_undeliverable), 1000);
        assert_eq!(get(&stats.records_delivered), 0);
        assert_eq!(get(&stats.records_queued), 0);
        // The writer wakes later: what it writes then changes no count.
        let (go, cond) = &*gate;
        *go.lock().unwrap() = true;
        cond.notify_all();
        thread::sleep(Duration::from_millis(100));
        assert_eq!(get(&stats.records_delivered), 0);
        assert_eq!(get(&stats.dropped_undeliverable), 1000);
    }

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_stops_the_agent_and_counts_what_it_lost() {
        let clock = WallClock::from_offset(0);
        let stats = Arc::new(Stats::default());
        let mut out = Lines::new(Closed, 10_000, Arc::clone(&stats)).unwrap();
        out.take(&vec![raw(80); 300], &clock).unwrap();
        out.take(&vec![raw(80); 300], &clock).unwrap();
        assert!(out.close().is_err());
        assert!(stats.output_failed.load(Relaxed));
        assert_eq!(get(&stats.dropped_undeliverable), 600);
        assert_eq!(get(&stats.records_queued), 0);
    }
}
