//! Read the ring buffer the kernel program writes records into, many records per pass.
//!
//! aya's `RingBuf` publishes the read position after every record. The kernel program reads that
//! position on every reservation, from the other CPU, so its cache line went back and forth once
//! per packet on both sides. This reader publishes it once per pass (up to
//! [`MAX_BATCH`](super::MAX_BATCH) records): the kernel cannot reuse the records of a pass until
//! then, which a ring of megabytes does not miss.
//!
//! The layout is the kernel's (`kernel/bpf/ringbuf.c`), a stable ABI: one page holding the
//! consumer position, mapped read-write; then one page holding the producer position and the
//! data pages mapped twice in a row, read-only, so that a record crossing the end of the ring
//! reads as one slice. Each record is an 8-byte header (length with `BUSY` and `DISCARD` bits,
//! page offset) followed by its bytes, padded to 8.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
    time::Duration,
};

use aya::maps::MapData;
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::Instant,
};

/// Set in a record's length while the kernel is writing it.
const BUSY: u32 = 1 << 31;
/// Set in a record's length when the program discarded it.
const DISCARD: u32 = 1 << 30;
/// Bytes of a record's header.
const HEADER: usize = 8;

/// One `mmap` of the ring's file descriptor.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping of `fd`; the kernel checks length and offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing uses afterwards.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The ring of a `BPF_MAP_TYPE_RINGBUF` map, read by this process.
#[derive(Debug)]
pub struct Ring {
    /// Owns the file descriptor, which must outlive the mappings.
    map: MapData,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    /// Data bytes minus one (their count is a power of two).
    mask: usize,
    /// Where the next record starts; published to the kernel at the end of each pass.
    pos: usize,
}

// SAFETY: the mappings are plain shared memory owned by the `Ring`; nothing is tied to a thread.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring of `map`, whose data area is `byte_size` bytes (a power-of-two multiple of
    /// the page size, as the kernel requires of ring buffers).
    ///
    /// # Errors
    ///
    /// When `byte_size` cannot be the map's, or a mapping fails.
    pub fn new(map: MapData, byte_size: u32) -> io::Result<Self> {
        // SAFETY: no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(io::Error::other)?;
        let size = usize::try_from(byte_size).map_err(io::Error::other)?;
        if !size.is_power_of_two() || size < page {
            return Err(io::Error::other(format!(
                "ring of {byte_size} bytes is not a power-of-two number of pages"
            )));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let mut ring = Self {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
            pos: 0,
        };
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page starts with the kernel's `unsigned long consumer_pos`, which
        // is aligned and lives as long as the mapping.
        unsafe { self.consumer.ptr.cast::<AtomicUsize>().as_ref() }
    }

    fn producer_pos(&self) -> usize {
        // SAFETY: as for `consumer_pos`, on the producer page. Acquire pairs with the kernel's
        // release store, so the headers of the records before it are visible.
        unsafe { self.producer.ptr.cast::<AtomicUsize>().as_ref() }.load(Ordering::Acquire)
    }

    /// Bytes written by the kernel and not read yet (committed or still being written).
    #[must_use]
    pub fn unread_bytes(&self) -> usize {
        self.producer_pos()
            .wrapping_sub(self.pos)
            .min(self.mask + 1)
    }

    /// Calls `each` with the bytes of every committed record, in order, at most `limit` of them
    /// (discarded ones are skipped and not counted), then gives their room back to the kernel.
    /// Returns whether it stopped at `limit` (more may be waiting); a record the kernel is still
    /// writing ends the pass like an empty ring, as the next wakeup or poll comes for it.
    pub fn read(&mut self, limit: usize, mut each: impl FnMut(&[u8])) -> bool {
        let producer = self.producer_pos();
        // SAFETY: the data pages follow the producer page, mapped twice in a row.
        let data = unsafe { self.producer.ptr.as_ptr().add(self.page) };
        let mut taken = 0;
        let mut pos = self.pos;
        // Positions only grow (wrapping), so "not equal" means "behind".
        while pos != producer && taken < limit {
            let offset = pos & self.mask;
            // SAFETY: `offset + HEADER` lies in the first copy of the data pages; the header's
            // length word is aligned to 8. Acquire pairs with the kernel's commit (`xchg`).
            let len = unsafe { (*data.add(offset).cast::<AtomicU32>()).load(Ordering::Acquire) };
            if len & BUSY != 0 {
                // Reserved but not yet committed: the records after it wait for the next pass.
                break;
            }
            let bytes = (len & !(BUSY | DISCARD)) as usize;
            assert!(
                bytes <= self.mask + 1 - HEADER,
                "ring record of {bytes} bytes in a ring of {}: the kernel's layout is not this reader's",
                self.mask + 1
            );
            if len & DISCARD == 0 {
                // SAFETY: the kernel wrote `bytes` bytes after the header, which may run past the
                // end of the first copy of the data into the second; they stay unchanged until
                // the consumer position passes them.
                each(unsafe { std::slice::from_raw_parts(data.add(offset + HEADER), bytes) });
                taken += 1;
            }
            pos = pos.wrapping_add((HEADER + bytes).next_multiple_of(8));
        }
        if pos != self.pos {
            self.pos = pos;
            // Release: the records are read before the kernel may write over them.
            self.consumer_pos().store(pos, Ordering::Release);
        }
        taken == limit
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

/// A [`Ring`] read at a pace: waited on without a timer while empty (the kernel program wakes
/// the reader for the first record), then read at most once per `interval` while less than
/// `wakeup_bytes` wait, so that a steady trickle costs a few wakeups a second, not one per
/// record, and an idle reader sleeps.
#[derive(Debug)]
pub struct PacedRing {
    ring: AsyncFd<Ring>,
    /// The last read stopped at its limit with records left.
    more: bool,
    last_read: Instant,
    interval: Duration,
    wakeup_bytes: usize,
}

impl PacedRing {
    /// Paces `ring`. Must run inside a tokio runtime with I/O enabled.
    ///
    /// # Errors
    ///
    /// When the ring cannot be registered with the runtime.
    pub fn new(ring: Ring, interval: Duration, wakeup_bytes: u64) -> io::Result<Self> {
        Ok(Self {
            // SAFETY: the ring owns its map descriptor, which stays open and unchanged for as
            // long as the `AsyncFd` owns the ring.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(|err| err.into_parts().1)?,
            more: false,
            last_read: Instant::now(),
            interval,
            wakeup_bytes: usize::try_from(wakeup_bytes).unwrap_or(usize::MAX),
        })
    }

    /// Waits until records are due: at once with records left from the last read (after
    /// yielding to the runtime, so that a backlog that never empties still lets its other tasks
    /// and its I/O run), otherwise as the type's documentation says.
    ///
    /// Cancel-safe: nothing is read, and a call after a cancelled one looks at the ring afresh.
    ///
    /// # Errors
    ///
    /// When waiting on the ring's descriptor fails.
    pub async fn ready(&mut self) -> io::Result<()> {
        if self.more {
            tokio::task::yield_now().await;
            return Ok(());
        }
        if self.ring.get_ref().unread_bytes() == 0 {
            self.wait_readable().await?;
        }
        let due = self.last_read + self.interval;
        while Instant::now() < due && self.ring.get_ref().unread_bytes() < self.wakeup_bytes {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                ready = self.wait_readable() => ready?,
            }
        }
        Ok(())
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        // Cleared before reading: a wakeup sent while the ring is read is not lost.
        guard.clear_ready();
        Ok(())
    }

    /// Reads up to `limit` records, as [`Ring::read`] does.
    pub fn read(&mut self, limit: usize, each: impl FnMut(&[u8])) {
        self.more = self.ring.get_mut().read(limit, each);
        self.last_read = Instant::now();
    }

    /// See [`Ring::unread_bytes`].
    #[must_use]
    pub fn unread_bytes(&self) -> usize {
        self.ring.get_ref().unread_bytes()
    }
}
