//! Capture: load the kernel program, attach it to the interface's packet socket, and read its
//! ring buffer; [`clock`] places the kernel's timestamps on the wall clock.

pub mod clock;
pub mod config;
pub mod load;
pub mod packets;
pub mod ring;
pub mod socket;

use std::{io, time::Duration};

use aya::maps::{Array, Map, MapData, MapError, PerCpuArray};
use sniffer_common::{
    CAPTURE_MAP, COUNTERS_MAP, Counter, EVENTS_MAP, LINK_LAYER_GLOBAL, LinkLayer, PACKETS_MAP,
    PORTS_MAP, PROGRAM_NAME, PacketRecord, RECORD_SIZE, WAKEUP_BYTES_GLOBAL,
    bitmap::{bitmap_changes, port_bitmap},
};
use thiserror::Error;

use self::{
    config::page_size,
    load::{LoadError, Loaded, Loader},
    packets::PacketSource,
    ring::{PacedRing, Ring},
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
    /// The object could not be loaded (maps created, relocations applied, program verified).
    #[error(
        "cannot load the kernel object (needs CAP_BPF, and a seccomp profile that allows bpf())"
    )]
    Load(#[from] LoadError),
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
    /// The kernel's counters of the program could not be read.
    #[error("cannot read the socket filter's statistics")]
    Stats(#[source] io::Error),
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
    /// Size of the ring packet captures read (a power of two and a page multiple), or `None`
    /// when captures are off: the ring is then one page, and [`Capture::take_packet_source`] `None`.
    pub packets_ring_bytes: Option<u32>,
}

/// Totals kept by the kernel program, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Packets that matched a port.
    pub matched: u64,
    /// Matched packets whose record was lost because the ring was full.
    pub ring_full: u64,
    /// Packets copied for packet captures.
    pub captured: u64,
    /// Packets captures asked for and lost because their ring was full.
    pub capture_ring_full: u64,
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
    ring: PacedRing,
    /// The packet captures' ring, until [`Capture::take_packet_source`] hands it out.
    packets: Option<PacketSource>,
    counters: PerCpuArray<MapData, u64>,
    /// Closing the socket detaches the program; `None` once stopped.
    socket: Option<PacketSocket>,
    /// Records of unexpected size taken off the ring (a loader/object mismatch).
    malformed: u64,
    /// What precedes the IP header on the interface.
    link_layer: LinkLayer,
    /// The port bitmap the program matches against.
    ports: Array<MapData, u64>,
    /// The maps not taken and the program, kept for as long as the capture runs.
    loaded: Loaded,
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
            packets_ring_bytes,
        } = *options;
        let socket = PacketSocket::open()?;
        let link_layer = socket.link_layer(interface)?;
        let link = link_layer as u8;
        let wakeup = wakeup_bytes.to_ne_bytes();
        let mut loaded = Loader::new(OBJECT)
            .global(LINK_LAYER_GLOBAL, std::slice::from_ref(&link))
            .global(WAKEUP_BYTES_GLOBAL, &wakeup)
            .max_entries(EVENTS_MAP, ring_buffer_bytes)
            .max_entries(PACKETS_MAP, packets_ring_bytes.unwrap_or_else(page_size))
            .load(PROGRAM_NAME)?;

        let mut ports_map: Array<MapData, u64> = Array::try_from(take(&mut loaded, PORTS_MAP)?)
            .map_err(|source| CaptureError::Map {
                name: PORTS_MAP,
                source,
            })?;
        for (word, bits) in port_bitmap(ports) {
            ports_map
                .set(word, bits, 0)
                .map_err(|source| CaptureError::Map {
                    name: PORTS_MAP,
                    source,
                })?;
        }

        let Map::RingBuf(events) = take(&mut loaded, EVENTS_MAP)? else {
            return Err(CaptureError::Missing(EVENTS_MAP));
        };
        let ring = Ring::new(events, ring_buffer_bytes).map_err(CaptureError::Ring)?;
        let packets = match packets_ring_bytes {
            Some(bytes) => Some(Self::packet_source(
                &mut loaded,
                bytes,
                poll_interval,
                wakeup_bytes,
            )?),
            None => None,
        };
        let counters =
            PerCpuArray::try_from(take(&mut loaded, COUNTERS_MAP)?).map_err(|source| {
                CaptureError::Map {
                    name: COUNTERS_MAP,
                    source,
                }
            })?;

        socket.attach(loaded.program())?;
        socket.bind(ifindex)?;

        Ok(Self {
            ring: PacedRing::new(ring, poll_interval, wakeup_bytes).map_err(CaptureError::Poll)?,
            counters,
            ports: ports_map,
            socket: Some(socket),
            malformed: 0,
            packets,
            link_layer,
            loaded,
        })
    }

    /// Waits until records are due ([`PacedRing`]), then moves up to [`MAX_BATCH`] records
    /// into `batch` (possibly none).
    ///
    /// Cancel-safe: nothing is taken from the ring before the wait completes.
    pub async fn next_batch(&mut self, batch: &mut Vec<PacketRecord>) -> Result<(), CaptureError> {
        self.ring.ready().await.map_err(CaptureError::Poll)?;
        self.drain(batch, MAX_BATCH);
        Ok(())
    }

    fn packet_source(
        loaded: &mut Loaded,
        ring_bytes: u32,
        poll_interval: Duration,
        wakeup_bytes: u64,
    ) -> Result<PacketSource, CaptureError> {
        let Map::RingBuf(ring) = take(loaded, PACKETS_MAP)? else {
            return Err(CaptureError::Missing(PACKETS_MAP));
        };
        let ring = Ring::new(ring, ring_bytes).map_err(CaptureError::Ring)?;
        let control =
            Array::try_from(take(loaded, CAPTURE_MAP)?).map_err(|source| CaptureError::Map {
                name: CAPTURE_MAP,
                source,
            })?;
        Ok(PacketSource::new(
            PacedRing::new(ring, poll_interval, wakeup_bytes).map_err(CaptureError::Poll)?,
            control,
        ))
    }

    /// What precedes the IP header on the interface captured.
    #[must_use]
    pub const fn link_layer(&self) -> LinkLayer {
        self.link_layer
    }

    /// The ring packet captures read, and the switch that fills it; `None` when captures are
    /// off or it was taken already.
    pub fn take_packet_source(&mut self) -> Option<PacketSource> {
        self.packets.take()
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
        self.ring.read(limit, |item| {
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
        for (word, bits) in bitmap_changes(old, new) {
            self.ports.set(word, bits, 0).map_err(map_error)?;
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
        self.ring.unread_bytes() as u64
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
            captured: read(Counter::Captured)?,
            capture_ring_full: read(Counter::CaptureRingFull)?,
        })
    }

    /// Time spent in and runs of the kernel program, counted while BPF statistics are enabled
    /// (`sysctl kernel.bpf_stats_enabled=1`); zero otherwise.
    pub fn program_stats(&self) -> Result<ProgramStats, CaptureError> {
        let (run_time_ns, run_count) =
            load::run_stats(self.loaded.program()).map_err(CaptureError::Stats)?;
        Ok(ProgramStats {
            run_time_ns,
            run_count,
        })
    }

    /// Records taken off the ring with an unexpected size and discarded.
    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// Takes map `name` out of `loaded`, or says the object lacks it.
fn take(loaded: &mut Loaded, name: &'static str) -> Result<Map, CaptureError> {
    loaded.take_map(name).ok_or(CaptureError::Missing(name))
}
