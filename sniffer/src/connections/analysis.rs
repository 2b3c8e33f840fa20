//! What one connection's packets say about it: counts, handshake times, retransmissions, windows
//! and how it ended. Pure: fed one packet at a time, it never reads a clock.
//!
//! Every definition here is the one written in docs/specs/OUTPUT_FORMAT.md ("Connection
//! records"), and the test in `sniffer/tests/integration/connections.rs` holds it against
//! tshark's analysis of the same packets.

use sniffer_common::{PacketRecord, tcp_flags};

use super::{
    rtt::{AckRtt, Samples},
    zeek::{History, Segment, Zeek},
};

/// One side of a connection. `A` is the endpoint with the lower (address, port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The lower (address, port).
    A,
    /// The higher (address, port).
    B,
}

impl Side {
    /// The other side.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }
}

/// An address (16 bytes, IPv4 in the first four) and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address bytes in network order.
    pub addr: [u8; 16],
    /// TCP port.
    pub port: u16,
}

/// What names a connection: both endpoints, in a fixed order so that both directions map to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// 4 or 6.
    pub ip_version: u8,
    /// The lower endpoint.
    pub a: Endpoint,
    /// The higher endpoint.
    pub b: Endpoint,
}

/// Three numbers, where the derived `Hash` would feed the hasher field by field and byte by
/// byte: the tracker hashes every packet's key.
impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let Self { ip_version, a, b } = self;
        state.write_u128(u128::from_ne_bytes(a.addr));
        state.write_u128(u128::from_ne_bytes(b.addr));
        state.write_u64(u64::from(*ip_version) << 32 | u64::from(a.port) << 16 | u64::from(b.port));
    }
}

impl Key {
    /// The connection a packet belongs to, and which side sent it.
    ///
    /// # Examples
    ///
    /// ```
    /// use sniffer::connections::analysis::{Key, Side};
    /// use sniffer_common::{PacketRecord, addr_words};
    ///
    /// let mut ip = [0u8; 16];
    /// ip[..4].copy_from_slice(&[10, 0, 0, 1]);
    /// let request = PacketRecord { ip_version: 4, src_addr: addr_words(ip), src_port: 51000,
    ///                              dst_addr: addr_words(ip), dst_port: 8080, ..Default::default() };
    /// let reply = PacketRecord { src_port: 8080, dst_port: 51000, ..request };
    /// let (key, side) = Key::of(&request);
    /// assert_eq!(Key::of(&reply), (key, side.other()));
    /// ```
    #[must_use]
    pub fn of(raw: &PacketRecord) -> (Self, Side) {
        let src = Endpoint {
            addr: raw.src_addr_bytes(),
            port: raw.src_port,
        };
        let dst = Endpoint {
            addr: raw.dst_addr_bytes(),
            port: raw.dst_port,
        };
        let ip_version = raw.ip_version;
        // The derived order, compared as numbers rather than byte by byte.
        let order = |e: &Endpoint| (u128::from_be_bytes(e.addr), e.port);
        if order(&src) <= order(&dst) {
            (
                Self {
                    ip_version,
                    a: src,
                    b: dst,
                },
                Side::A,
            )
        } else {
            (
                Self {
                    ip_version,
                    a: dst,
                    b: src,
                },
                Side::B,
            )
        }
    }

    /// The endpoint of `side`.
    #[must_use]
    pub const fn endpoint(&self, side: Side) -> Endpoint {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }
}

/// `a < b` in sequence space (RFC 1982 serial arithmetic on 32 bits).
pub(super) const fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// What the segments one side sent add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Packets.
    pub packets: u64,
    /// TCP payload bytes.
    pub bytes: u64,
    /// Payload-carrying segments starting before the highest sequence number already seen from
    /// this side (keep-alives excluded).
    pub retransmits: u32,
    /// Payload-carrying segments starting after the next expected sequence number: data seen
    /// before earlier data (lost before this interface, or reordered).
    pub out_of_order: u32,
    /// Segments advertising a zero window, without SYN, FIN or RST.
    pub zero_windows: u32,
    /// Duplicate acknowledgments (see [`Analysis::observe`]).
    pub dup_acks: u32,
    /// Smallest and largest raw window field, over segments without SYN; `None` before one.
    pub window: Option<(u16, u16)>,
}

/// The sequence state of one direction. The numbers a packet may not have set yet are kept
/// beside one byte of flags rather than as `Option`s, which took each twice its size: every
/// packet reads both directions' state, and 32 bytes fewer of it keep a connection's hot bytes
/// within five cache lines.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    sent: Sent,
    /// One past the highest sequence number seen (SYN and FIN count one).
    next_seq: u32,
    /// The acknowledgment number of the last segment with ACK.
    last_ack: u32,
    /// The sequence number one past this side's FIN, once it sent one.
    fin_end: u32,
    /// The raw window of the last segment.
    last_window: u16,
    /// Which of the fields above hold a value ([`Flow::NEXT_SEQ`] …), and [`Flow::FIN_ACKED`].
    has: u8,
}

impl Flow {
    const NEXT_SEQ: u8 = 1;
    const LAST_ACK: u8 = 2;
    const FIN_END: u8 = 4;
    const LAST_WINDOW: u8 = 8;
    /// The other side acknowledged this side's FIN.
    const FIN_ACKED: u8 = 16;

    const fn get<T: Copy>(&self, flag: u8, value: T) -> Option<T> {
        if self.has & flag != 0 {
            Some(value)
        } else {
            None
        }
    }

    const fn next_seq(&self) -> Option<u32> {
        self.get(Self::NEXT_SEQ, self.next_seq)
    }

    const fn last_ack(&self) -> Option<u32> {
        self.get(Self::LAST_ACK, self.last_ack)
    }

    const fn fin_end(&self) -> Option<u32> {
        self.get(Self::FIN_END, self.fin_end)
    }

    const fn last_window(&self) -> Option<u16> {
        self.get(Self::LAST_WINDOW, self.last_window)
    }

    const fn fin_acked(&self) -> bool {
        self.has & Self::FIN_ACKED != 0
    }

    const fn set_next_seq(&mut self, seq: u32) {
        self.next_seq = seq;
        self.has |= Self::NEXT_SEQ;
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both FINs sent and acknowledged.
    Fin,
    /// A RST from this side.
    Rst(Side),
    /// No packet for the idle timeout.
    Timeout,
    /// Pushed out of a full table (the least recently seen).
    Evicted,
    /// Still open when the agent stopped.
    Shutdown,
}

/// The handshake times, in the kernel's monotonic nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The last SYN from the client before the first SYN-ACK.
    pub syn_ns: Option<u64>,
    /// The first SYN-ACK from the server.
    pub synack_ns: Option<u64>,
    /// The first ACK from the client acknowledging the SYN-ACK.
    pub ack_ns: Option<u64>,
    /// The server's initial sequence number, from the SYN-ACK.
    server_isn: u32,
}

/// What one packet changed that the tracker counts across connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The round trip its acknowledgment measured, microseconds.
    pub ack_rtt_us: Option<u32>,
    /// It retransmitted payload.
    pub retransmit: bool,
    /// It was not kept for round trips ([`super::rtt::MAX_UNACKED`] were waiting).
    pub rtt_untracked: bool,
    /// SYN to SYN-ACK, nanoseconds, when it was the SYN-ACK that completed that measure.
    pub handshake_ns: Option<u64>,
}

/// One connection, packet by packet.
///
/// In C order, what most packets read or write first and what few do last: the tracker asks
/// the CPU for the first [`Analysis::HOT_BYTES`] ahead of time, and the rest waits in memory
/// until a packet needs it.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct Analysis {
    /// First and last packet, monotonic nanoseconds.
    pub last_ns: u64,
    /// Set once the connection is over (FIN exchange or RST); packets may still follow.
    pub end: Option<End>,
    /// The side that sent the first SYN seen, if one was seen.
    client: Option<Side>,
    /// The side that sent the first packet seen.
    first_sender: Side,
    /// The SYN-ACK was seen and the client's ACK of it not yet.
    awaiting_ack: bool,
    flows: [Flow; 2],
    /// Each side's segments waiting for an ACK.
    rtt: [AckRtt; 2],
    /// Zeek's states, then its history (rarely written).
    zeek: Zeek,
    /// The round trips each side's ACKs measured.
    rtt_samples: [Samples; 2],
    /// The handshake, as far as it was seen.
    pub handshake: Handshake,
    /// See `last_ns`.
    pub first_ns: u64,
}

impl Analysis {
    /// The bytes at the start that most packets touch: everything before Zeek's history.
    pub const HOT_BYTES: usize = std::mem::offset_of!(Self, zeek) + Zeek::HOT_BYTES;

    /// A connection whose first packet seen came from `side` at `ts_ns`.
    #[must_use]
    pub fn new(side: Side, ts_ns: u64) -> Self {
        Self {
            flows: [Flow::default(); 2],
            client: None,
            first_sender: side,
            awaiting_ack: false,
            first_ns: ts_ns,
            last_ns: ts_ns,
            handshake: Handshake::default(),
            end: None,
            rtt: [AckRtt::default(), AckRtt::default()],
            rtt_samples: [Samples::default(); 2],
            zeek: Zeek::default(),
        }
    }

    /// The client: the sender of the first SYN seen or, when the handshake was not seen, of the
    /// first packet seen. The flag says which.
    #[must_use]
    pub fn client(&self) -> (Side, bool) {
        match self.client {
            Some(side) => (side, true),
            None => (self.first_sender, false),
        }
    }

    /// What `side` sent.
    #[must_use]
    pub const fn sent(&self, side: Side) -> &Sent {
        &self.flows[side.index()].sent
    }

    /// The round trips `side`'s ACKs measured ([`super::rtt`]).
    #[must_use]
    pub const fn ack_rtt(&self, side: Side) -> &Samples {
        &self.rtt_samples[side.index()]
    }

    /// Zeek's `conn_state` and `history`, the client as originator.
    #[must_use]
    pub fn zeek(&self) -> (&'static str, History) {
        let (client, _) = self.client();
        let flipped = client != self.first_sender;
        let sizes = (self.sent(client).bytes, self.sent(client.other()).bytes);
        (
            self.zeek.conn_state(client, flipped, sizes),
            self.zeek.history(client, flipped),
        )
    }

    /// Whether a packet from `side` opens a new connection on this connection's endpoints: a SYN
    /// without ACK after this one ended (the port pair is being reused).
    #[must_use]
    pub fn is_reuse(&self, raw: &PacketRecord) -> bool {
        self.end.is_some() && raw.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }

    /// Adds one packet from `side`; returns what it changed that the tracker counts across
    /// connections.
    ///
    /// A *duplicate ACK* is a segment with no payload, no SYN, FIN or RST, a non-zero window equal
    /// to the previous segment's from the same side, the same acknowledgment number as that
    /// side's last ACK, and a sequence number equal to the next expected one (tshark's rule).
    pub fn observe(&mut self, side: Side, raw: &PacketRecord) -> Observed {
        let PacketRecord {
            ts_ns,
            seq,
            ack,
            payload_len,
            window,
            tcp_flags: flags,
            ..
        } = *raw;
        self.last_ns = self.last_ns.max(ts_ns);
        let syn = flags & tcp_flags::SYN != 0;
        let fin = flags & tcp_flags::FIN != 0;
        let rst = flags & tcp_flags::RST != 0;
        let has_ack = flags & tcp_flags::ACK != 0;
        let mut observed = Observed {
            handshake_ns: self.handshake_step(side, flags, seq, ack, ts_ns),
            ..Observed::default()
        };

        let flow = &mut self.flows[side.index()];
        flow.sent.packets += 1;
        flow.sent.bytes += u64::from(payload_len);
        if !syn {
            flow.sent.window = Some(match flow.sent.window {
                None => (window, window),
                Some((min, max)) => (min.min(window), max.max(window)),
            });
        }
        if window == 0 && !(syn || fin || rst) {
            flow.sent.zero_windows = flow.sent.zero_windows.saturating_add(1);
        }
        let control = syn || fin || rst;
        if payload_len == 0
            && !control
            && window != 0
            && flow.last_window() == Some(window)
            && flow.next_seq() == Some(seq)
            && has_ack
            && flow.last_ack() == Some(ack)
        {
            flow.sent.dup_acks = flow.sent.dup_acks.saturating_add(1);
        }
        // One past this segment: payload, plus one each for SYN and FIN.
        let seg_len = payload_len
            .wrapping_add(u32::from(syn))
            .wrapping_add(u32::from(fin));
        let seg_end = seq.wrapping_add(seg_len);
        // Whether it ends beyond everything this side sent before: then no segment waiting for
        // an ACK ends where it does.
        let extends = flow.next_seq().is_none_or(|next| seq_lt(next, seg_end));
        match flow.next_seq() {
            Some(next) if payload_len > 0 => {
                let keep_alive = payload_len <= 1 && seq == next.wrapping_sub(1);
                if seq_lt(seq, next) && !keep_alive {
                    flow.sent.retransmits = flow.sent.retransmits.saturating_add(1);
                    observed.retransmit = true;
                } else if seq_lt(next, seq) {
                    flow.sent.out_of_order = flow.sent.out_of_order.saturating_add(1);
                }
                if seq_lt(next, seg_end) {
                    flow.set_next_seq(seg_end);
                }
            }
            Some(next) => {
                if seq_lt(next, seg_end) {
                    flow.set_next_seq(seg_end);
                }
            }
            None => flow.set_next_seq(seg_end),
        }
        flow.last_window = window;
        flow.has |= Flow::LAST_WINDOW;
        if has_ack {
            flow.last_ack = ack;
            flow.has |= Flow::LAST_ACK;
        }
        if fin && flow.fin_end().is_none() {
            flow.fin_end = seg_end;
            flow.has |= Flow::FIN_END;
        }
        // An ACK from this side covering the other side's FIN.
        let other = &mut self.flows[side.other().index()];
        if has_ack
            && let Some(fin_end) = other.fin_end()
            && !seq_lt(ack, fin_end)
        {
            other.has |= Flow::FIN_ACKED;
        }
        if self.end.is_none() {
            if rst {
                self.end = Some(End::Rst(side));
            } else if self.flows.iter().all(Flow::fin_acked) {
                self.end = Some(End::Fin);
            }
        }
        let is_orig = self.client().0 == side;
        self.zeek.observe(
            side,
            is_orig,
            &Segment {
                flags,
                seq,
                ack,
                len: payload_len,
                window,
            },
        );
        // tshark's order: the segment joins its side's list, then its acknowledgment number is
        // checked against the other side's (whatever its flags say).
        observed.rtt_untracked = !self.rtt[side.index()].sent(seq, seg_len, ts_ns, !extends);
        observed.ack_rtt_us = self.rtt[side.other().index()].acked(ack, ts_ns);
        if let Some(us) = observed.ack_rtt_us {
            self.rtt_samples[side.index()].add(us);
        }
        observed
    }

    /// Follows the handshake; returns SYN to SYN-ACK (nanoseconds) when this packet is the
    /// SYN-ACK that completes that measure.
    fn handshake_step(
        &mut self,
        side: Side,
        flags: u8,
        seq: u32,
        ack: u32,
        ts_ns: u64,
    ) -> Option<u64> {
        let syn = flags & tcp_flags::SYN != 0;
        let has_ack = flags & tcp_flags::ACK != 0;
        if !(syn || self.awaiting_ack) {
            // Most packets: the handshake (far from the hot bytes) is not read.
            return None;
        }
        let shake = &mut self.handshake;
        match (syn, has_ack) {
            (true, false) if shake.synack_ns.is_none() && self.client.is_none_or(|c| c == side) => {
                self.client = Some(side);
                shake.syn_ns = Some(ts_ns);
            }
            (true, true)
                if self.client.is_none_or(|c| c == side.other()) && shake.synack_ns.is_none() =>
            {
                // A SYN-ACK seen before any SYN still names the client: the side it answers.
                self.client = Some(side.other());
                shake.synack_ns = Some(ts_ns);
                shake.server_isn = seq;
                self.awaiting_ack = true;
                return shake.syn_ns.map(|syn| ts_ns.saturating_sub(syn));
            }
            (false, true)
                if self.client == Some(side) && ack == shake.server_isn.wrapping_add(1) =>
            {
                shake.ack_ns = Some(ts_ns);
                self.awaiting_ack = false;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: u8 = tcp_flags::SYN;
    const ACK: u8 = tcp_flags::ACK;
    const FIN: u8 = tcp_flags::FIN;
    const RST: u8 = tcp_flags::RST;
    const PSH: u8 = tcp_flags::PSH;

    /// A segment from `side` of a client (A) – server (B) connection.
    fn segment(ts_ns: u64, flags: u8, seq: u32, ack: u32, payload_len: u32) -> PacketRecord {
        PacketRecord {
            ts_ns,
            ip_version: 4,
            seq,
            ack,
            payload_len,
            window: 502,
            tcp_flags: flags,
            ..PacketRecord::default()
        }
    }

    /// The client's ISN is 1000, the server's 5000.
    fn handshake(c: &mut Analysis) {
        c.observe(Side::A, &segment(0, SYN, 1000, 0, 0));
        c.observe(Side::B, &segment(40_000, SYN | ACK, 5000, 1001, 0));
        c.observe(Side::A, &segment(45_000, ACK, 1001, 5001, 0));
    }

    #[test]
    fn handshake_times_and_roles() {
        let mut c = Analysis::new(Side::A, 0);
        handshake(&mut c);
        assert_eq!(c.client(), (Side::A, true));
        assert_eq!(c.handshake.syn_ns, Some(0));
        assert_eq!(c.handshake.synack_ns, Some(40_000));
        assert_eq!(c.handshake.ack_ns, Some(45_000));
        // A retransmitted SYN before the SYN-ACK moves the start of the handshake.
        let mut c = Analysis::new(Side::A, 0);
        c.observe(Side::A, &segment(0, SYN, 1000, 0, 0));
        c.observe(Side::A, &segment(1_000_000_000, SYN, 1000, 0, 0));
        c.observe(Side::B, &segment(1_000_040_000, SYN | ACK, 5000, 1001, 0));
        assert_eq!(c.handshake.syn_ns, Some(1_000_000_000));
        assert_eq!(c.sent(Side::A).retransmits, 0, "SYNs carry no payload");
    }

    #[test]
    fn mid_stream_connections_take_the_first_sender_as_client() {
        let mut c = Analysis::new(Side::B, 7);
        c.observe(Side::B, &segment(7, ACK | PSH, 9000, 100, 10));
        assert_eq!(c.client(), (Side::B, false));
        assert_eq!(c.handshake, Handshake::default());
    }

    #[test]
    fn retransmissions_out_of_order_and_keep_alives() {
        let mut c = Analysis::new(Side::A, 0);
        handshake(&mut c);
        let a = |c: &mut Analysis, seq, len| {
            c.observe(Side::A, &segment(50_000, ACK | PSH, seq, 5001, len));
        };
        a(&mut c, 1001, 100); // new
        a(&mut c, 1101, 100); // new
        a(&mut c, 1001, 100); // whole range seen: retransmission
        a(&mut c, 1151, 100); // starts inside seen data: retransmission
        a(&mut c, 1401, 100); // a gap: 1251..1401 not seen yet
        a(&mut c, 1251, 150); // fills the gap: starts before the highest seen
        a(&mut c, 1500, 1); // keep-alive: one byte just below the next expected
        let sent = c.sent(Side::A);
        assert_eq!(sent.retransmits, 3);
        assert_eq!(sent.out_of_order, 1);
        assert_eq!(sent.packets, 9);
        assert_eq!(sent.bytes, 651);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut c = Analysis::new(Side::A, 0);
        let a = |c: &mut Analysis, seq, len| {
            c.observe(Side::A, &segment(0, ACK, seq, 1, len));
        };
        a(&mut c, u32::MAX - 9, 10);
        a(&mut c, 0, 10);
        a(&mut c, u32::MAX - 9, 10);
        assert_eq!(c.sent(Side::A).retransmits, 1);
        assert_eq!(c.sent(Side::A).out_of_order, 0);
    }

    #[test]
    fn duplicate_acks_and_zero_windows() {
        let mut c = Analysis::new(Side::A, 0);
        handshake(&mut c);
        let b = |c: &mut Analysis, flags, seq, ack, len, window| {
            c.observe(
                Side::B,
                &PacketRecord {
                    window,
                    ..segment(60_000, flags, seq, ack, len)
                },
            );
        };
        b(&mut c, ACK, 5001, 1101, 0, 502); // a new acknowledgment number
        b(&mut c, ACK, 5001, 1101, 0, 502); // duplicate
        b(&mut c, ACK, 5001, 1101, 0, 502); // duplicate
        b(&mut c, ACK, 5001, 1201, 0, 502); // new ack
        b(&mut c, ACK, 5001, 1201, 0, 0); // zero window, window changed: not a duplicate
        b(&mut c, ACK, 5001, 1201, 0, 0); // zero window again: never a duplicate ACK
        b(&mut c, ACK | FIN, 5001, 1201, 0, 0); // a FIN is not a zero-window probe/ad
        let sent = c.sent(Side::B);
        assert_eq!(sent.dup_acks, 2);
        assert_eq!(sent.zero_windows, 2);
        assert_eq!(sent.window, Some((0, 502)));
    }

    #[test]
    fn fin_exchange_ends_once_both_fins_are_acknowledged() {
        let mut c = Analysis::new(Side::A, 0);
        handshake(&mut c);
        c.observe(Side::A, &segment(1, FIN | ACK, 1001, 5001, 0));
        c.observe(Side::B, &segment(2, FIN | ACK, 5001, 1002, 0));
        assert_eq!(c.end, None, "the server's FIN is not acknowledged yet");
        c.observe(Side::A, &segment(3, ACK, 1002, 5002, 0));
        assert_eq!(c.end, Some(End::Fin));
        let reuse = segment(4, SYN, 77, 0, 0);
        assert!(c.is_reuse(&reuse));
    }

    #[test]
    fn half_close_then_reset_is_a_reset_by_that_side() {
        let mut c = Analysis::new(Side::A, 0);
        handshake(&mut c);
        c.observe(Side::A, &segment(1, FIN | ACK, 1001, 5001, 0));
        c.observe(Side::B, &segment(2, ACK, 5001, 1002, 0));
        c.observe(Side::B, &segment(3, ACK | PSH, 5001, 1002, 20));
        assert_eq!(c.end, None, "half-closed: the server still sends");
        c.observe(Side::B, &segment(4, RST | ACK, 5021, 1002, 0));
        assert_eq!(c.end, Some(End::Rst(Side::B)));
        // Packets after the end still count.
        c.observe(Side::A, &segment(5, RST, 1002, 0, 0));
        assert_eq!(c.end, Some(End::Rst(Side::B)));
        assert_eq!(c.sent(Side::A).packets, 4);
        assert_eq!(c.last_ns, 45_000);
    }
}
