//! Capture: load the kernel program, attach it to the interface's packet socket, and read its
//! ring buffer; [`clock`] places the kernel's timestamps on the wall clock.

pub mod clock;
pub mod ring;
pub mod socket;

use std::{io, time::Duration};

use tokio::time::Instant;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, MapData, MapError, PerCpuArray},
    programs::{ProgramError, SocketFilter, socket_filter::SocketFilterError},
};
use sniffer_common::{
    COUNTERS_MAP, Counter, EVENTS_MAP, LINK_LAYER_GLOBAL, PORTS_MAP, PROGRAM_NAME, PacketRecord,
    RECORD_SIZE, WAKEUP_BYTES_GLOBAL,
    ports::{bitmap_changes, port_bitmap},
};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};

use self::{
    ring::Ring,
    socket::{PacketSocket, SocketError},
};

/// The kernel object built by `cargo xtask build-ebpf`, embedded at compile time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SNIFFER_EBPF_OBJECT"));

/// Most records taken from the ring per [`Capture::next_batch`], so one call stays short.
pub const MAX_BATCH: usize = 4096;

/// Capture could not start or stopped working (exit code 2).
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The packet socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The object could not be loaded (maps created, relocations applied).
    #[error(
        "cannot load the kernel object (needs CAP_BPF, and a seccomp profile that allows bpf())"
    )]
    Load(#[from] EbpfError),
    /// The object lacks a program or map this loader expects.
    #[error("the kernel object has no {0:?}; it was built from other sources")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("BPF map {name} failed")]
    Map {
        /// The map.
        name: &'static str,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// The verifier refused the program, or loading it failed.
    #[error("cannot load the socket filter program")]
    Program(#[from] ProgramError),
    /// `SO_ATTACH_BPF` failed.
    #[error("cannot attach the socket filter")]
    Attach(#[from] SocketFilterError),
    /// The ring buffer could not be mapped.
    #[error("cannot map the ring buffer")]
    Ring(#[source] io::Error),
    /// Waiting on the ring buffer failed.
    #[error("cannot poll the ring buffer")]
    Poll(#[source] io::Error),
}

/// What to capture.
#[derive(Clone, Copy, Debug)]
pub struct CaptureOptions<'a> {
    /// Interface name (for the link type and messages).
    pub interface: &'a str,
    /// Interface index.
    pub ifindex: u32,
    /// Ports to match.
    pub ports: &'a [u16],
    /// Ring buffer size in bytes.
    pub ring_buffer_bytes: u32,
    /// Unread bytes in the ring that wake the reader (a power of two).
    pub wakeup_bytes: u64,
    /// The reader reads at most once per this interval while fewer than `wakeup_bytes` wait:
    /// the longest a record of slow traffic waits in the ring.
    pub poll_interval: Duration,
}

/// Totals kept by the kernel program, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Packets that matched a port.
    pub matched: u64,
    /// Matched packets whose record was lost because the ring was full.
    pub ring_full: u64,
}

/// Kernel-side cost of the program, from the kernel's BPF statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Nanoseconds spent running the program.
    pub run_time_ns: u64,
    /// Times the program ran (once per packet on the interface).
    pub run_count: u64,
}

/// A running capture: the program attached to a bound packet socket, and the ring to read.
pub struct Capture {
    ring: AsyncFd<Ring>,
    counters: PerCpuArray<MapData, u64>,
    /// Closing the socket detaches the program; `None` once stopped.
    socket: Option<PacketSocket>,
    /// Records of unexpected size taken off the ring (a loader/object mismatch).
    malformed: u64,
    /// The last drain stopped at [`MAX_BATCH`] with records left.
    more: bool,
    /// When the ring was last read.
    last_read: Instant,
    /// See [`CaptureOptions::poll_interval`].
    poll_interval: Duration,
    /// See [`CaptureOptions::wakeup_bytes`].
    wakeup_bytes: usize,
    ebpf: Ebpf,
}

impl Capture {
    /// Loads the program, fills the port map and starts capturing on the interface.
    ///
    /// Must run inside a tokio runtime with I/O enabled.
    pub fn start(options: &CaptureOptions<'_>) -> Result<Self, CaptureError> {
        let CaptureOptions {
            interface,
            ifindex,
            ports,
            ring_buffer_bytes,
            wakeup_bytes,
            poll_interval,
        } = *options;
        let socket = PacketSocket::open()?;
        let link = socket.link_layer(interface)? as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global(LINK_LAYER_GLOBAL, &link, true)
            .override_global(WAKEUP_BYTES_GLOBAL, &wakeup_bytes, true)
            .map_max_entries(EVENTS_MAP, ring_buffer_bytes)
            .load(OBJECT)?;

        let mut port_map: Array<_, u64> = Array::try_from(
            ebpf.map_mut(PORTS_MAP)
                .ok_or(CaptureError::Missing(PORTS_MAP))?,
        )
        .map_err(|source| CaptureError::Map {
            name: PORTS_MAP,
            source,
        })?;
        for (word, bits) in port_bitmap(ports) {
            port_map
                .set(word, bits, 0)
                .map_err(|source| CaptureError::Map {
                    name: PORTS_MAP,
                    source,
                })?;
        }

        let events = match ebpf.take_map(EVENTS_MAP) {
            Some(aya::maps::Map::RingBuf(data)) => data,
            _ => return Err(CaptureError::Missing(EVENTS_MAP)),
        };
        let ring = Ring::new(events, ring_buffer_bytes).map_err(CaptureError::Ring)?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(COUNTERS_MAP)
                .ok_or(CaptureError::Missing(COUNTERS_MAP))?,
        )
        .map_err(|source| CaptureError::Map {
            name: COUNTERS_MAP,
            source,
        })?;

        let program: &mut SocketFilter = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(CaptureError::Missing(PROGRAM_NAME))?
            .try_into()?;
        program.load()?;
        program.attach(socket.fd())?;
        socket.bind(ifindex)?;

        Ok(Self {
            // SAFETY: the ring owns its map descriptor, which stays open and unchanged for as
            // long as the `AsyncFd` owns the ring.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(|err| CaptureError::Poll(err.into_parts().1))?,
            counters,
            socket: Some(socket),
            malformed: 0,
            more: false,
            last_read: Instant::now(),
            poll_interval,
            wakeup_bytes: usize::try_from(wakeup_bytes).unwrap_or(usize::MAX),
            ebpf,
        })
    }

    /// Waits until records are due, then moves up to [`MAX_BATCH`] records into `batch`
    /// (possibly none).
    ///
    /// An empty ring is waited on without a timer: the kernel wakes the reader for the first
    /// record, so an idle sniffer sleeps. Records are then read at most once per
    /// [`CaptureOptions::poll_interval`], sooner when [`CaptureOptions::wakeup_bytes`] wait, so
    /// that a steady trickle costs a few wakeups a second, not one per packet.
    ///
    /// With records left from the last read it does not wait, but it yields to the runtime
    /// first: a backlog that never empties still lets the runtime's other tasks (the metrics
    /// endpoint and its `/healthz`) and its I/O run between two reads.
    ///
    /// Cancel-safe: nothing is taken from the ring before the wait completes, and a call after
    /// a cancelled one looks at the ring afresh.
    pub async fn next_batch(&mut self, batch: &mut Vec<PacketRecord>) -> Result<(), CaptureError> {
        if self.more {
            tokio::task::yield_now().await;
        } else {
            if self.ring.get_ref().unread_bytes() == 0 {
                self.wait_readable().await?;
            }
            let due = self.last_read + self.poll_interval;
            while Instant::now() < due && self.ring.get_ref().unread_bytes() < self.wakeup_bytes {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    ready = self.wait_readable() => ready?,
                }
            }
        }
        self.drain(batch, MAX_BATCH);
        self.last_read = Instant::now();
        Ok(())
    }

    /// Waits for the kernel's next wakeup.
    async fn wait_readable(&mut self) -> Result<(), CaptureError> {
        let mut guard = self.ring.readable_mut().await.map_err(CaptureError::Poll)?;
        // Cleared before reading: a wakeup sent while the ring is read is not lost.
        guard.clear_ready();
        Ok(())
    }

    /// Stops capturing: closes the socket, which detaches the program. Records already in the
    /// ring stay there for [`Capture::drain_remaining`].
    pub fn stop(&mut self) {
        self.socket = None;
    }

    /// Moves everything left in the ring into `batch` without waiting.
    pub fn drain_remaining(&mut self, batch: &mut Vec<PacketRecord>) {
        self.drain(batch, usize::MAX);
    }

    fn drain(&mut self, batch: &mut Vec<PacketRecord>, limit: usize) {
        let malformed = &mut self.malformed;
        self.more = self.ring.get_mut().read(limit, |item| {
            if item.len() == RECORD_SIZE {
                // SAFETY: the ring holds `PacketRecord`s written by the kernel program, which
                // shares this definition; `read_unaligned` needs no alignment.
                batch.push(unsafe { item.as_ptr().cast::<PacketRecord>().read_unaligned() });
            } else {
                *malformed += 1;
            }
        });
    }

    /// Captures `new` instead of `old` from now on, changing the kernel's port bitmap in place:
    /// ports in both keep matching throughout (see [`bitmap_changes`]).
    pub fn set_ports(&mut self, old: &[u16], new: &[u16]) -> Result<(), CaptureError> {
        let map_error = |source| CaptureError::Map {
            name: PORTS_MAP,
            source,
        };
        let mut port_map: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut(PORTS_MAP)
                .ok_or(CaptureError::Missing(PORTS_MAP))?,
        )
        .map_err(map_error)?;
        for (word, bits) in bitmap_changes(old, new) {
            port_map.set(word, bits, 0).map_err(map_error)?;
        }
        Ok(())
    }

    /// The index `interface` has now: `Ok(None)` when the kernel says it no longer exists (or
    /// capture was stopped). Asked on the capture's own socket, so a process out of descriptors
    /// still gets a true answer.
    ///
    /// # Errors
    ///
    /// When the kernel cannot answer, which says nothing about the interface.
    pub fn interface_index(&self, interface: &str) -> io::Result<Option<u32>> {
        self.socket
            .as_ref()
            .map_or(Ok(None), |socket| socket.interface_index(interface))
    }

    /// Bytes of the ring the kernel wrote and the reader has not read yet: how full it is.
    #[must_use]
    pub fn ring_unread_bytes(&self) -> u64 {
        self.ring.get_ref().unread_bytes() as u64
    }

    /// Reads the kernel's counters.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        let read = |counter: Counter| -> Result<u64, CaptureError> {
            let values =
                self.counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| CaptureError::Map {
                        name: COUNTERS_MAP,
                        source,
                    })?;
            Ok(values.iter().sum())
        };
        Ok(KernelCounters {
            matched: read(Counter::Matched)?,
            ring_full: read(Counter::RingFull)?,
        })
    }

    /// Time spent in and runs of the kernel program, counted while BPF statistics are enabled
    /// (`sysctl kernel.bpf_stats_enabled=1`); zero otherwise.
    pub fn program_stats(&self) -> Result<ProgramStats, CaptureError> {
        let info = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(CaptureError::Missing(PROGRAM_NAME))?
            .info()?;
        Ok(ProgramStats {
            run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            run_count: info.run_count(),
        })
    }

    /// Records taken off the ring with an unexpected size and discarded.
    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}
