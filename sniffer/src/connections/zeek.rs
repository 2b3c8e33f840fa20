//! Zeek's verdict on a connection: `conn_state` (S0, SF, REJ, RSTO …) and `history` (the
//! letters `ShADadFf` …), as Zeek's TCP analyzer and its `conn` script define them. Pure: fed
//! one packet at a time.
//!
//! Followed from Zeek's `TCPSessionAdapter` (per-endpoint states and their transitions,
//! `update_history`, `update_last_seq`, `update_window`, the reassembler's content gaps) and
//! `base/protocols/conn/main.zeek` (`conn_state`), with these differences, all because one
//! interface carries less than Zeek reads:
//!
//! - No checksum is checked (the kernel record carries none): no `c`. No analysis limits: no `x`.
//! - A content gap (`g`) is an ACK beyond the highest sequence number seen from the other side:
//!   without reassembly, a hole below data already seen is not noticed.
//! - The originator is the sender of the first SYN seen (the other side when a SYN-ACK comes
//!   first, which Zeek marks with `^`), or of the first packet seen; Zeek's port-based guesses
//!   for connections seen mid-stream are not made.
//! - An endpoint's size (for `REJ`) is the payload it was seen to send.
//! - `history` keeps at most [`HISTORY_MAX`] letters.

use super::analysis::{Side, seq_lt};

/// The most `history` letters kept.
pub const HISTORY_MAX: usize = 24;

/// An endpoint's TCP state, as Zeek's analyzer tracks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// Nothing seen from it yet.
    #[default]
    Inactive,
    /// It sent a SYN.
    SynSent,
    /// It sent a SYN-ACK first (as the originator).
    SynAckSent,
    /// Seen mid-stream: data or ACKs without a handshake.
    Partial,
    /// The handshake completed, or a SYN-ACK answered it.
    Established,
    /// It sent a FIN.
    Closed,
    /// It sent a RST.
    Reset,
}

/// Zeek's `TOO_LARGE_SEQ_DELTA`: a SYN or RST this far from the last sequence number is not
/// believed.
const TOO_LARGE_SEQ_DELTA: i32 = 1_048_576;

/// One endpoint as Zeek's analyzer follows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Endpoint {
    state: State,
    prev_state: State,
    /// The sequence number before its first byte (its ISN, or one before its first seen).
    start_seq: u32,
    /// One past the highest sequence number it was seen to send.
    last_seq: u32,
    /// One past its FIN, relative, once it sent one ([`Endpoint::fin_sent`]).
    fin_seq: u32,
    fin_sent: bool,
    /// Up to where the peer's ACKs were checked for content gaps, once they were.
    gap_checked: u32,
    gap_seen: bool,
    /// Retransmissions, zero windows and content gaps, for the letters every power of ten.
    retransmits: u32,
    zero_windows: u32,
    gaps: u32,
}

/// The relative sequence numbers of an endpoint's last SYN, FIN (end) and RST, for repeated
/// letters: read by those packets only, so kept apart from what every packet reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Marks {
    last_syn: u32,
    last_fin: u32,
    last_rst: u32,
}

impl Endpoint {
    fn set_state(&mut self, state: State) {
        if state != self.state {
            self.prev_state = self.state;
            self.state = state;
        }
    }

    /// Zeek's `init_endpoint`.
    fn init(&mut self, syn: bool, seq: u32, one_past: u32) {
        let restart = |e: &mut Self| {
            e.start_seq = seq;
            e.last_seq = one_past;
        };
        match self.state {
            State::Inactive => {
                if syn {
                    restart(self);
                } else {
                    // As if a SYN was seen, so that its first packet is not a repeat.
                    self.start_seq = seq.wrapping_sub(1);
                    self.last_seq = seq;
                }
            }
            State::SynSent | State::SynAckSent => {
                if syn && seq != self.start_seq {
                    restart(self);
                }
            }
            State::Established | State::Partial => {
                if syn {
                    restart(self);
                }
            }
            State::Reset => {
                if syn && self.prev_state == State::Inactive {
                    restart(self);
                }
            }
            State::Closed => {}
        }
    }

    fn clean(&self) -> bool {
        self.state == State::Established
            || (self.state == State::Closed && self.prev_state == State::Established)
    }
}

/// The kinds of letters recorded once per side (or again when their sequence number differs).
#[derive(Clone, Copy)]
enum Once {
    /// A SYN or a SYN-ACK (one kind in Zeek).
    Syn = 0,
    Ack,
    Data,
    Fin,
    Rst,
    FinRst,
    MultiFlag,
}

/// What Zeek's analyzer holds of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Zeek {
    ends: [Endpoint; 2],
    /// Letter kinds seen, 8 bits per side.
    seen: u16,
    len: u8,
    /// Letters in order, lower case, the high bit set for side B (rarely written).
    history: [u8; HISTORY_MAX],
    marks: [Marks; 2],
}

/// A packet's fields, as the analyzer reads them.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    /// TCP flags.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Payload bytes.
    pub len: u32,
    /// Raw window field.
    pub window: u16,
}

/// Zeek's `history` text, held without an allocation: a connection record is made for every
/// connection. ASCII letters and `^` only, none of which JSON escapes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct History {
    len: u8,
    text: [u8; HISTORY_MAX + 1],
}

impl History {
    fn push(&mut self, byte: u8) {
        self.text[usize::from(self.len)] = byte;
        self.len += 1;
    }

    /// The letters, in room for the most there can be, and how many there are.
    #[must_use]
    pub const fn padded(&self) -> (&[u8; HISTORY_MAX + 1], usize) {
        (&self.text, self.len as usize)
    }

    /// The letters.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.len)]).expect("ASCII letters")
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for History {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

const fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn power_of_ten(mut n: u32) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

impl Zeek {
    /// The bytes at the start that most packets touch: the endpoints, not the history.
    pub const HOT_BYTES: usize = std::mem::offset_of!(Self, history);

    fn add(&mut self, side: Side, letter: u8) {
        let len = usize::from(self.len);
        if len < HISTORY_MAX {
            self.history[len] = letter | if side == Side::B { 0x80 } else { 0 };
            self.len += 1;
        }
    }

    /// Zeek's `CheckHistory`: adds the letter the first time its kind is seen from `side`;
    /// returns whether it had been seen before.
    fn check(&mut self, side: Side, kind: Once, letter: u8) -> bool {
        let bit = 1u16 << (kind as u16 + 8 * index(side) as u16);
        if self.seen & bit == 0 {
            self.seen |= bit;
            self.add(side, letter);
            false
        } else {
            true
        }
    }

    /// Zeek's `ScaledHistoryEntry`: the letter at the 1st, 10th, 100th … time.
    fn scaled(&mut self, side: Side, letter: u8, count: fn(&mut Endpoint) -> &mut u32) {
        let counter = count(&mut self.ends[index(side)]);
        *counter = counter.saturating_add(1);
        if power_of_ten(*counter) {
            self.add(side, letter);
        }
    }

    /// Zeek's `update_history`.
    fn update_history(&mut self, side: Side, segment: &Segment, rel_seq: u32) {
        let Segment { flags, len, .. } = *segment;
        let (syn, fin, rst, ack) = flags_of(flags);
        let bits = u8::from(syn) + u8::from(fin) + u8::from(rst);
        if bits > 1 {
            if fin && rst {
                self.check(side, Once::FinRst, b'i');
            } else {
                self.check(side, Once::MultiFlag, b'q');
            }
        } else if syn {
            let letter = if ack { b'h' } else { b's' };
            if self.check(side, Once::Syn, letter) && rel_seq != self.marks[index(side)].last_syn {
                self.add(side, letter);
            }
            self.marks[index(side)].last_syn = rel_seq;
        } else if fin {
            // A FIN's number comes after its data.
            let fin_end = rel_seq.wrapping_add(len);
            if self.check(side, Once::Fin, b'f') && fin_end != self.marks[index(side)].last_fin {
                self.add(side, b'f');
            }
            self.marks[index(side)].last_fin = fin_end;
        } else if rst {
            if self.check(side, Once::Rst, b'r') && rel_seq != self.marks[index(side)].last_rst {
                self.add(side, b'r');
            }
            self.marks[index(side)].last_rst = rel_seq;
        } else if len > 0 {
            self.check(side, Once::Data, b'd');
        } else if ack {
            self.check(side, Once::Ack, b'a');
        }
    }

    /// One packet from `side`, the originator or not (`is_orig`), in the order of Zeek's
    /// `TCPSessionAdapter::Process`.
    pub fn observe(&mut self, side: Side, is_orig: bool, segment: &Segment) {
        let Segment {
            flags,
            seq,
            ack,
            len,
            window,
        } = *segment;
        let (syn, fin, rst, has_ack) = flags_of(flags);
        let (me, peer) = (index(side), index(side.other()));
        if !(syn || fin || rst) && self.ends[me].state != State::Inactive {
            self.observe_plain(side, segment);
            return;
        }
        // RST payload is not part of the stream.
        let seg_len = if rst { 0 } else { len } + u32::from(syn) + u32::from(fin);
        let one_past = seq.wrapping_add(seg_len);
        self.ends[me].init(syn, seq, one_past);
        let rel_seq = seq.wrapping_sub(self.ends[me].start_seq);
        self.update_history(side, segment, rel_seq);

        // update_window: zero windows are boring with or after a RST, or after the peer's FIN.
        if window == 0
            && !rst
            && self.ends[peer].state != State::Closed
            && self.ends[me].state != State::Reset
        {
            self.scaled(side, b'w', |e| &mut e.zero_windows);
        }
        if fin {
            self.ends[me].fin_seq = rel_seq.wrapping_add(seg_len);
            self.ends[me].fin_sent = true;
        }
        if has_ack && self.ends[peer].state == State::Inactive {
            // Zeek's init_peer: number the peer as though its SYN was seen.
            let before = ack.wrapping_sub(1);
            self.ends[peer].start_seq = before;
            self.ends[peer].last_seq = before;
        }

        // update_last_seq: a segment with payload that does not advance is a retransmission.
        let end = &mut self.ends[me];
        let delta = one_past.wrapping_sub(end.last_seq) as i32;
        if (syn || rst) && !(-TOO_LARGE_SEQ_DELTA..=TOO_LARGE_SEQ_DELTA).contains(&delta) {
        } else if fin && end.last_seq == end.start_seq.wrapping_add(1) {
            end.last_seq = one_past;
        } else if end.state == State::Reset {
        } else if delta > 0 {
            end.last_seq = one_past;
        } else if len > 0 {
            self.scaled(side, b't', |e| &mut e.retransmits);
        }

        self.update_state(side, is_orig, segment);

        if has_ack {
            self.ack_received(side, ack);
        }
    }

    /// [`Zeek::observe`] for most packets: no SYN, FIN or RST, from an endpoint seen before. Its
    /// sequence numbers need no (re)start, no letter depends on them, and no state changes.
    fn observe_plain(&mut self, side: Side, segment: &Segment) {
        let Segment {
            flags,
            seq,
            ack,
            len,
            window,
        } = *segment;
        let has_ack = flags & sniffer_common::tcp_flags::ACK != 0;
        let (me, peer) = (index(side), index(side.other()));
        if len > 0 {
            self.check(side, Once::Data, b'd');
        } else if has_ack {
            self.check(side, Once::Ack, b'a');
        }
        if window == 0
            && self.ends[peer].state != State::Closed
            && self.ends[me].state != State::Reset
        {
            self.scaled(side, b'w', |e| &mut e.zero_windows);
        }
        if has_ack && self.ends[peer].state == State::Inactive {
            let before = ack.wrapping_sub(1);
            self.ends[peer].start_seq = before;
            self.ends[peer].last_seq = before;
        }
        let end = &mut self.ends[me];
        let one_past = seq.wrapping_add(len);
        if end.state != State::Reset {
            if (one_past.wrapping_sub(end.last_seq) as i32) > 0 {
                end.last_seq = one_past;
            } else if len > 0 {
                self.scaled(side, b't', |e| &mut e.retransmits);
            }
        }
        if has_ack {
            self.ack_received(side, ack);
        }
    }

    /// Zeek's `UpdateStateMachine`, states only (no events).
    fn update_state(&mut self, side: Side, is_orig: bool, segment: &Segment) {
        let (syn, fin, rst, ack) = flags_of(segment.flags);
        let (me, peer) = (index(side), index(side.other()));
        match self.ends[me].state {
            State::Inactive => {
                if syn {
                    if is_orig {
                        self.ends[me].set_state(if ack {
                            State::SynAckSent
                        } else {
                            State::SynSent
                        });
                    } else {
                        if !ack
                            && self.ends[peer].state == State::SynAckSent
                            && segment.seq == self.ends[me].start_seq
                        {
                            // A SYN answering a SYN-ACK: Zeek flips the roles.
                            self.ends[peer].set_state(State::Established);
                        }
                        if self.ends[peer].state == State::SynSent {
                            self.ends[peer].set_state(State::Established);
                        }
                        self.ends[me].set_state(State::Established);
                    }
                }
                if fin {
                    self.ends[me].set_state(State::Closed);
                }
                if rst {
                    self.ends[me].set_state(State::Reset);
                }
                if self.ends[me].state == State::Inactive {
                    let orig_state = if is_orig {
                        self.ends[me].state
                    } else {
                        self.ends[peer].state
                    };
                    if !is_orig && segment.len == 0 && orig_state == State::SynSent {
                        // An ACK of the SYN before the SYN-ACK: not a partial connection.
                    } else if ack && self.ends[peer].state == State::Established {
                        self.ends[me].set_state(State::Established);
                    } else {
                        self.ends[me].set_state(State::Partial);
                    }
                }
            }
            State::SynSent | State::SynAckSent => {
                if fin {
                    self.ends[me].set_state(State::Closed);
                }
                if rst {
                    self.ends[me].set_state(State::Reset);
                }
            }
            State::Established | State::Partial => {
                if syn
                    && self.ends[me].state == State::Partial
                    && self.ends[peer].state == State::Inactive
                    && !ack
                {
                    self.ends[me].set_state(State::SynSent);
                }
                if fin && !rst {
                    self.ends[me].set_state(State::Closed);
                    let other = &mut self.ends[peer];
                    if other.state == State::Reset && other.prev_state == State::Closed {
                        // A FIN then a RST from the peer: a normal close after all.
                        other.set_state(State::Closed);
                    }
                }
                if rst {
                    self.ends[me].set_state(State::Reset);
                }
            }
            State::Closed => {
                if rst && self.ends[peer].state != State::Closed {
                    self.ends[me].set_state(State::Reset);
                }
            }
            State::Reset => {}
        }
    }

    /// The peer's data acknowledged up to `ack` by `side`: acknowledged data never seen is a
    /// content gap in the peer's stream, counted while both sides are established or closing
    /// cleanly (Zeek's reassembler; gaps around a RST are not believed).
    fn ack_received(&mut self, side: Side, ack: u32) {
        let (me, peer) = (index(side), index(side.other()));
        if !(self.ends[me].clean() && self.ends[peer].clean()) {
            return;
        }
        let end = &self.ends[peer];
        let mut upto = ack.wrapping_sub(end.start_seq);
        if end.fin_sent && !seq_lt(upto, end.fin_seq) {
            upto = end.fin_seq.wrapping_sub(1);
        }
        let seen = end.last_seq.wrapping_sub(end.start_seq);
        let checked = if end.gap_seen { end.gap_checked } else { seen };
        if seq_lt(seen, upto) && seq_lt(checked, upto) {
            let end = &mut self.ends[peer];
            end.gap_checked = upto;
            end.gap_seen = true;
            self.scaled(side.other(), b'g', |e| &mut e.gaps);
        }
    }

    /// `history`, the originator's letters in upper case; `flipped` when the originator is not
    /// the side whose packet came first (Zeek's `^`).
    #[must_use]
    pub fn history(&self, originator: Side, flipped: bool) -> History {
        let mut history = History {
            len: 0,
            text: [0; HISTORY_MAX + 1],
        };
        if flipped {
            history.push(b'^');
        }
        for &byte in &self.history[..usize::from(self.len)] {
            let side = if byte & 0x80 == 0 { Side::A } else { Side::B };
            let letter = byte & 0x7f;
            history.push(if side == originator {
                letter.to_ascii_uppercase()
            } else {
                letter
            });
        }
        history
    }

    /// Zeek's `conn_state()` for this originator; `sizes` are the payload bytes each side sent
    /// (originator's first).
    #[must_use]
    pub fn conn_state(&self, originator: Side, flipped: bool, sizes: (u64, u64)) -> &'static str {
        let os = self.ends[index(originator)].state;
        let rs = self.ends[index(originator.other())].state;
        let inactive = |s: State| matches!(s, State::Inactive | State::Partial);
        match (os, rs) {
            (_, State::Reset) => {
                if matches!(os, State::SynSent | State::SynAckSent)
                    || (os == State::Reset && sizes == (0, 0))
                {
                    "REJ"
                } else if inactive(os) {
                    "RSTRH"
                } else {
                    "RSTR"
                }
            }
            (State::Reset, _) => {
                if inactive(rs) {
                    if rstos0(self.history(originator, flipped).as_str()) {
                        "RSTOS0"
                    } else {
                        "OTH"
                    }
                } else {
                    "RSTO"
                }
            }
            (State::Closed, State::Closed) => "SF",
            (State::Closed, _) => {
                if inactive(rs) {
                    "SH"
                } else {
                    "S2"
                }
            }
            (_, State::Closed) => {
                if inactive(os) {
                    "SHR"
                } else {
                    "S3"
                }
            }
            (State::SynSent, State::Inactive) => "S0",
            (State::Established, State::Established) => "S1",
            _ => "OTH",
        }
    }
}

/// Zeek's `/\^?S[^HAFGIQ]*R.*/`, matched against the whole history.
fn rstos0(history: &str) -> bool {
    let rest = history.strip_prefix('^').unwrap_or(history);
    let Some(rest) = rest.strip_prefix('S') else {
        return false;
    };
    for c in rest.chars() {
        match c {
            'R' => return true,
            'H' | 'A' | 'F' | 'G' | 'I' | 'Q' => return false,
            _ => {}
        }
    }
    false
}

fn flags_of(flags: u8) -> (bool, bool, bool, bool) {
    use sniffer_common::tcp_flags::{ACK, FIN, RST, SYN};
    (
        flags & SYN != 0,
        flags & FIN != 0,
        flags & RST != 0,
        flags & ACK != 0,
    )
}

#[cfg(test)]
mod tests {
    use sniffer_common::tcp_flags::{ACK, FIN, PSH, RST, SYN};

    use super::*;

    /// Feeds packets of a client (side A, the originator) and a server (B).
    struct Conn(Zeek);

    impl Conn {
        fn new() -> Self {
            Self(Zeek::default())
        }

        fn c(&mut self, flags: u8, seq: u32, ack: u32, len: u32) -> &mut Self {
            self.packet(Side::A, flags, seq, ack, len, 502)
        }

        fn s(&mut self, flags: u8, seq: u32, ack: u32, len: u32) -> &mut Self {
            self.packet(Side::B, flags, seq, ack, len, 502)
        }

        fn packet(
            &mut self,
            side: Side,
            flags: u8,
            seq: u32,
            ack: u32,
            len: u32,
            window: u16,
        ) -> &mut Self {
            self.0.observe(
                side,
                side == Side::A,
                &Segment {
                    flags,
                    seq,
                    ack,
                    len,
                    window,
                },
            );
            self
        }

        fn verdict(&self, sizes: (u64, u64)) -> (&'static str, String) {
            (
                self.0.conn_state(Side::A, false, sizes),
                self.0.history(Side::A, false).as_str().to_owned(),
            )
        }

        /// Client ISN 100, server ISN 500.
        fn handshake(&mut self) -> &mut Self {
            self.c(SYN, 100, 0, 0)
                .s(SYN | ACK, 500, 101, 0)
                .c(ACK, 101, 501, 0)
        }
    }

    #[test]
    fn a_normal_connection_is_sf() {
        let mut conn = Conn::new();
        conn.handshake()
            .c(ACK | PSH, 101, 501, 20)
            .s(ACK, 501, 121, 0)
            .s(ACK | PSH, 501, 121, 40)
            .c(ACK, 121, 541, 0)
            .c(FIN | ACK, 121, 541, 0)
            .s(FIN | ACK, 541, 122, 0)
            .c(ACK, 122, 542, 0);
        assert_eq!(conn.verdict((20, 40)), ("SF", "ShADadFf".to_owned()));
    }

    #[test]
    fn attempts_rejections_and_resets() {
        let mut conn = Conn::new();
        conn.c(SYN, 100, 0, 0).c(SYN, 100, 0, 0);
        assert_eq!(conn.verdict((0, 0)), ("S0", "S".to_owned()));
        conn.s(RST | ACK, 0, 101, 0);
        assert_eq!(conn.verdict((0, 0)), ("REJ", "Sr".to_owned()));

        let mut rsto = Conn::new();
        rsto.handshake()
            .c(ACK | PSH, 101, 501, 5)
            .c(RST | ACK, 106, 501, 0);
        assert_eq!(rsto.verdict((5, 0)), ("RSTO", "ShADR".to_owned()));

        let mut rstr = Conn::new();
        rstr.handshake()
            .c(ACK | PSH, 101, 501, 5)
            .s(RST | ACK, 501, 106, 0);
        assert_eq!(rstr.verdict((5, 0)), ("RSTR", "ShADr".to_owned()));

        let mut rstos0 = Conn::new();
        rstos0.c(SYN, 100, 0, 0).c(RST, 101, 0, 0);
        assert_eq!(rstos0.verdict((0, 0)), ("RSTOS0", "SR".to_owned()));
    }

    #[test]
    fn half_closes_and_established_states() {
        let mut s1 = Conn::new();
        s1.handshake().c(ACK | PSH, 101, 501, 10);
        assert_eq!(s1.verdict((10, 0)), ("S1", "ShAD".to_owned()));
        s1.c(FIN | ACK, 111, 501, 0);
        assert_eq!(s1.verdict((10, 0)).0, "S2");
        let mut s3 = Conn::new();
        s3.handshake().s(FIN | ACK, 501, 101, 0);
        assert_eq!(s3.verdict((0, 0)).0, "S3");
    }

    #[test]
    fn mid_stream_connections() {
        // Seen mid-stream: OTH while open, SF once both send FIN, SH when the originator alone does.
        let mut both = Conn::new();
        both.c(ACK | PSH, 1000, 9000, 10).s(ACK, 9000, 1010, 0);
        assert_eq!(both.verdict((10, 0)), ("OTH", "Da".to_owned()));
        both.c(FIN | ACK, 1010, 9000, 0).s(FIN | ACK, 9000, 1011, 0);
        assert_eq!(both.verdict((10, 0)).0, "SF");
        let mut one = Conn::new();
        one.c(ACK | PSH, 1000, 9000, 10).c(FIN | ACK, 1010, 9000, 0);
        assert_eq!(one.verdict((10, 0)).0, "SH");
    }

    #[test]
    fn retransmissions_zero_windows_and_gaps_on_a_log_scale() {
        let mut conn = Conn::new();
        conn.handshake();
        for _ in 0..12 {
            conn.c(ACK | PSH, 101, 501, 100);
        }
        // The first was new data; 11 repeats: 't' at the 1st and the 10th.
        assert_eq!(conn.0.history(Side::A, false), "ShADTT");
        for _ in 0..3 {
            conn.packet(Side::B, ACK, 501, 201, 0, 0);
        }
        assert_eq!(conn.0.history(Side::A, false), "ShADTTaw");
        // The server acknowledges data the client was never seen to send.
        conn.packet(Side::B, ACK, 501, 501, 0, 502);
        conn.packet(Side::B, ACK, 501, 501, 0, 502);
        assert_eq!(conn.0.history(Side::A, false), "ShADTTawG");
    }

    #[test]
    fn repeated_letters_need_another_sequence_number() {
        let mut conn = Conn::new();
        conn.handshake()
            .c(RST, 101, 0, 0)
            .c(RST, 101, 0, 0)
            .c(RST, 5000, 0, 0);
        assert_eq!(conn.0.history(Side::A, false), "ShARR");
    }

    #[test]
    fn a_syn_ack_first_is_flipped() {
        let mut conn = Conn::new();
        // The server's SYN-ACK is seen first; the originator is still the client.
        conn.s(SYN | ACK, 500, 101, 0).c(ACK, 101, 501, 0);
        assert_eq!(conn.0.history(Side::A, true), "^hA");
    }

    #[test]
    fn rstos0_pattern() {
        for (history, matches) in [
            ("SR", true),
            ("^SR", true),
            ("SrR", true),
            ("SaR", true),
            ("SAR", false),
            ("ShR", true),
            ("R", false),
            ("S", false),
        ] {
            assert_eq!(rstos0(history), matches, "{history}");
        }
    }

    #[test]
    fn history_is_bounded() {
        let mut conn = Conn::new();
        conn.handshake();
        for i in 0..100 {
            conn.c(RST, 200 + i, 0, 0);
        }
        assert_eq!(conn.0.history(Side::A, false).as_str().len(), HISTORY_MAX);
    }
}
