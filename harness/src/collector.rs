//! A minimal HTTP/1.1 collector for the benchmark: answers 204 to every POST and counts the
//! distinct batches, their records and their `dropped` field — or, for the flood, only reads
//! the bodies (any format) and counts their bytes, so that it costs little beside the sniffer.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use serde::{Deserialize, de::IgnoredAny};

/// The fields of a batch the collector counts; records are parsed but not kept.
#[derive(Deserialize)]
struct BatchView {
    seq: u64,
    dropped: u64,
    records: Vec<IgnoredAny>,
}

/// What the collector has seen.
#[derive(Default, Clone, Copy)]
pub struct Tally {
    /// Distinct batches (by `seq`).
    pub batches: u64,
    /// Records in distinct batches.
    pub records: u64,
    /// Sum of `dropped` over distinct batches.
    pub dropped: u64,
    /// Body bytes read (every request, parsed or not).
    pub bytes: u64,
}

/// A running collector; stops on drop.
pub struct BenchCollector {
    /// Its address inside the namespace it was started in.
    pub addr: SocketAddr,
    seen: Arc<Mutex<(HashSet<u64>, Tally)>>,
    stop: Arc<AtomicBool>,
    /// Open connections, shut down when the collector is dropped (a restart, as clients see it).
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

/// What the collector does with a body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bodies {
    /// Parses it as a `batch` body and counts distinct batches.
    Count,
    /// Only reads it.
    Discard,
}

impl BenchCollector {
    /// Listens on 127.0.0.1 inside network namespace `netns`, on a free port.
    pub fn start(netns: &str) -> Result<Self> {
        Self::start_on(netns, 0, Arc::default())
    }

    /// Like [`BenchCollector::start`], but bodies are only read and their bytes counted.
    pub fn start_discarding(netns: &str) -> Result<Self> {
        Self::listen(netns, 0, Arc::default(), Bodies::Discard)
    }

    /// Listens on 127.0.0.1:`port` inside `netns`, adding to the counts in `seen` (so a restarted
    /// collector keeps the tally of the one before).
    pub fn start_on(
        netns: &str,
        port: u16,
        seen: Arc<Mutex<(HashSet<u64>, Tally)>>,
    ) -> Result<Self> {
        Self::listen(netns, port, seen, Bodies::Count)
    }

    fn listen(
        netns: &str,
        port: u16,
        seen: Arc<Mutex<(HashSet<u64>, Tally)>>,
        bodies: Bodies,
    ) -> Result<Self> {
        let path = format!("/run/netns/{netns}");
        let listener = thread::spawn(move || -> Result<TcpListener> {
            let ns = File::open(&path).with_context(|| format!("cannot open {path}"))?;
            // SAFETY: joins this short-lived thread to the namespace before binding.
            ensure!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0,
                "setns failed"
            );
            Ok(TcpListener::bind(("127.0.0.1", port))?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
        listener.set_nonblocking(true)?;
        let collector = Self {
            addr: listener.local_addr()?,
            seen,
            stop: Arc::default(),
            connections: Arc::default(),
        };
        let (seen, stop) = (Arc::clone(&collector.seen), Arc::clone(&collector.stop));
        let connections = Arc::clone(&collector.connections);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Ok(clone) = stream.try_clone() {
                            connections.lock().expect("lock").push(clone);
                        }
                        let seen = Arc::clone(&seen);
                        thread::spawn(move || serve(stream, &seen, bodies));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(collector)
    }

    /// Counts so far.
    pub fn tally(&self) -> Tally {
        self.seen.lock().expect("lock").1
    }

    /// The shared counts, to hand to a restarted collector.
    pub fn shared(&self) -> Arc<Mutex<(HashSet<u64>, Tally)>> {
        Arc::clone(&self.seen)
    }
}

impl Drop for BenchCollector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for connection in self.connections.lock().expect("lock").drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn serve(stream: TcpStream, seen: &Mutex<(HashSet<u64>, Tally)>, bodies: Bodies) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = None;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0; length.unwrap_or(0)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().expect("lock").1.bytes += body.len() as u64;
        if bodies == Bodies::Count
            && let Ok(batch) = serde_json::from_slice::<BatchView>(&body)
        {
            let mut guard = seen.lock().expect("lock");
            let (seqs, tally) = &mut *guard;
            if seqs.insert(batch.seq) {
                tally.batches += 1;
                tally.records += batch.records.len() as u64;
                tally.dropped += batch.dropped;
            }
        }
        if writer
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
