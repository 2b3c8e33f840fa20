//! The tcp-sniffer kernel program: a socket filter on an `AF_PACKET` socket.
//!
//! For every TCP packet whose source or destination port is in `PORTS`, it writes one
//! [`PacketRecord`] into the `EVENTS` ring buffer. It always returns 0, so the kernel never queues a
//! packet to the socket: the socket is only the attachment point and userspace reads the ring.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::{map, socket_filter},
    maps::{Array, PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use sniffer_common::{
    CAPTURE_MAX_BYTES, CAPTURED_HEADER_SIZE, CaptureBuffer, CaptureControl, CapturedHeader,
    Counter, DEFAULT_PACKETS_RING_BYTES, DEFAULT_RING_BYTES, DEFAULT_WAKEUP_BYTES, LinkLayer,
    PORT_BITMAP_WORDS, PacketRecord, RING_ENTRY_BYTES,
    parse::{PacketBytes, parse_tcp},
    port_bit,
};

/// Ports to capture, as a bitmap ([`port_bit`]); set by the loader.
#[map]
static PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

/// One record per matched packet, read by userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// The first bytes of matched packets, while a packet capture asks for them ([`CAPTURE`]).
#[map]
static PACKETS: RingBuf = RingBuf::with_byte_size(DEFAULT_PACKETS_RING_BYTES, 0);

/// What to copy into [`PACKETS`], indexed by [`CaptureControl`]; set by userspace while
/// captures run, all zero otherwise.
#[map]
static CAPTURE: Array<u32> = Array::with_max_entries(CaptureControl::COUNT, 0);

/// Where a [`PACKETS`] entry is assembled: too large for the program's stack.
#[map]
static SCRATCH: PerCpuArray<CaptureBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters indexed by [`Counter`]; per-CPU so the hot path needs no atomics.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// What precedes the IP header on the attached interface ([`LinkLayer`]); set by the loader.
#[unsafe(no_mangle)]
static LINK_LAYER: u8 = LinkLayer::Ethernet as u8;

/// Userspace is woken each time this many bytes of records (a power of two) have accumulated;
/// set by the loader.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = DEFAULT_WAKEUP_BYTES;

/// Reads packet bytes through `bpf_skb_load_bytes`, the only packet access socket filters have.
struct Skb<'a>(&'a SkBuffContext);

impl PacketBytes for Skb<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(offset).ok()
    }

    #[inline(always)]
    fn packet_len(&self) -> u32 {
        self.0.len()
    }
}

#[inline(always)]
fn port_listed(port: u16) -> bool {
    let (word, bit) = port_bit(port);
    PORTS.get(word).is_some_and(|w| w & bit != 0)
}

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; this program cannot be preempted on this CPU while it runs.
        unsafe { *value += 1 };
    }
}

/// Wakes userspace when this record is the only unread one (the ring was empty: the reader may
/// be asleep waiting for it) or when the unread data crosses a multiple of `WAKEUP_BYTES`.
///
/// The ring's default wakes the reader whenever it has caught up, which at high packet rates means
/// one wakeup (an IPI and a context switch) per packet; the reader instead reads again a short
/// while after each read that found records, and waits for a wakeup only once the ring is empty,
/// so an idle sniffer sleeps. Crossing a multiple is checked rather than a threshold so that a
/// crossing missed by a race between CPUs is made up at the next one; two CPUs writing the first
/// records into an empty ring at once may both see the other's and not wake the reader, which
/// then finds them at its next once-a-second look.
///
/// `before` is the unread data without this record, `entry_bytes` the record's room in the ring.
#[inline(always)]
fn wakeup_flags(before: u64, entry_bytes: u64) -> u64 {
    // SAFETY: read-only global rewritten by the loader before load.
    let step = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    let mask = !(step.wrapping_sub(1));
    let pending = before.wrapping_add(entry_bytes);
    if before == 0 || pending & mask != before & mask {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// Copies the packet's first bytes into [`PACKETS`] when a capture asks for them: up to the end
/// of its TCP header, or its first `Snaplen` bytes, whichever [`CAPTURE`] asks for and is longer.
#[inline(always)]
fn capture(ctx: &SkBuffContext, record: &PacketRecord) {
    let control = |entry: CaptureControl| CAPTURE.get(entry as u32).copied().unwrap_or(0);
    let (headers, snaplen) = (
        control(CaptureControl::Headers),
        control(CaptureControl::Snaplen),
    );
    if headers == 0 && snaplen == 0 {
        return;
    }
    let wanted = if headers != 0 {
        snaplen.max(record.headers_len)
    } else {
        snaplen
    };
    let len = wanted.min(record.len).min(CAPTURE_MAX_BYTES);
    if len == 0 {
        return;
    }
    // The same value, bounded so that the verifier sees it within 1..=CAPTURE_MAX_BYTES (a
    // power of two): read back through memory, so that the compiler cannot drop the bound as
    // redundant (it knows the value is in range; the verifier tracks another register).
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    let len = (len.wrapping_sub(1) & (CAPTURE_MAX_BYTES - 1)) + 1;
    let Some(buffer) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry; the program cannot be preempted on it while it runs.
    let buffer = unsafe { &mut *buffer };
    // SAFETY: `skb` is the context pointer the kernel passed to this program; `len` is at least
    // one and at most the length of `data`, which the verifier checks as well.
    let loaded =
        unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, buffer.data.as_mut_ptr().cast(), len) };
    if loaded != 0 {
        return;
    }
    // SAFETY: reads of the context the kernel passed; the verifier rewrites them into reads of
    // the `sk_buff`.
    let (vlan_present, vlan_tci, vlan_proto) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.vlan_present, skb.vlan_tci, skb.vlan_proto)
    };
    let (vlan_tci, vlan_proto) = if vlan_present != 0 {
        (vlan_tci as u16, vlan_proto as u16)
    } else {
        (0, 0)
    };
    buffer.header = CapturedHeader {
        ts_ns: record.ts_ns,
        len: record.len,
        captured: len as u16,
        headers_len: record.headers_len as u16,
        src_port: record.src_port,
        dst_port: record.dst_port,
        vlan_tci,
        vlan_proto,
    };
    let size = CAPTURED_HEADER_SIZE + len as usize;
    // SAFETY: the header and the first `len` bytes of `data`, contiguous in the `repr(C)` buffer.
    let entry =
        unsafe { core::slice::from_raw_parts((buffer as *const CaptureBuffer).cast::<u8>(), size) };
    let ring_bytes = (8 + size as u64 + 7) & !7;
    // Asked before the copy goes in: the data already waiting.
    let before = PACKETS.query(BPF_RB_AVAIL_DATA.into());
    match PACKETS.output::<[u8]>(entry, wakeup_flags(before, ring_bytes)) {
        Ok(()) => bump(Counter::Captured),
        Err(_) => bump(Counter::CaptureRingFull),
    }
}

/// Socket filter entry point; see the crate documentation.
#[socket_filter]
pub fn tcp_sniffer(ctx: SkBuffContext) -> i64 {
    // SAFETY: read-only global rewritten by the loader before load; volatile so it is not folded.
    let link = LinkLayer::from_u8(unsafe { core::ptr::read_volatile(&LINK_LAYER) });
    let Some(mut record) = parse_tcp(&Skb(&ctx), link) else {
        return 0;
    };
    if !port_listed(record.src_port) && !port_listed(record.dst_port) {
        return 0;
    }
    bump(Counter::Matched);
    // SAFETY: helper without preconditions.
    record.ts_ns = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `skb` is the context pointer the kernel passed to this program.
    record.pkt_type = unsafe { (*ctx.skb.skb).pkt_type };
    match EVENTS.reserve::<PacketRecord>(0) {
        Some(mut entry) => {
            entry.write(record);
            // Asked after the reservation, which counts as unread data already.
            let before = EVENTS
                .query(BPF_RB_AVAIL_DATA.into())
                .wrapping_sub(RING_ENTRY_BYTES);
            entry.submit(wakeup_flags(before, RING_ENTRY_BYTES));
        }
        None => bump(Counter::RingFull),
    }
    capture(&ctx, &record);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects any path that could get here.
    loop {}
}
