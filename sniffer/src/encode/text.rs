//! Writing a record's text fast: into room reserved at the end of the body, without zeroing it
//! first, numbers from digits made ahead ([`Decimal`]) or two digits at a time, IPv4 octets from
//! a table.
//!
//! One record is written per captured packet; in the sniffer's own profile under a flood, the
//! encoder was a third of its CPU, and zeroing the room and formatting digits one at a time were
//! most of that.

use std::{
    fmt,
    mem::MaybeUninit,
    net::{IpAddr, Ipv6Addr},
};

use cli_support::time::{DATE_LEN, DIGIT_PAIRS, Rfc3339Writer, Timestamp};

use super::digits::Decimal;

/// Writes through `write` in place at the end of `out`, into `room` bytes reserved for the
/// longest text it can write (not zeroed: [`Line`] only ever advances over bytes it wrote), then
/// keeps exactly what was written.
#[inline(always)]
pub(crate) fn in_place(out: &mut Vec<u8>, room: usize, write: impl FnOnce(&mut Line<'_>)) {
    out.reserve(room);
    let start = out.len();
    prefetch_ahead(out.as_ptr().wrapping_add(start));
    let mut line = Line {
        bytes: &mut out.spare_capacity_mut()[..room],
        len: 0,
    };
    write(&mut line);
    let written = line.len;
    // SAFETY: `Line` initialised its first `written` bytes (every method writes before it
    // advances `len`, and indexing keeps it within the reserved room).
    unsafe { out.set_len(start + written) };
}

/// How far ahead of the end of a body its lines are asked for: about four records.
const AHEAD_BYTES: usize = 1024;

/// Asks the CPU for the lines [`AHEAD_BYTES`] past `end` (a record's worth), so that a body's
/// stores do not wait for each new line. (perf put three quarters of `write_json`'s samples on
/// its stores; with this, the flood's HTTP delivery took 10 to 58 ns less process CPU a packet in
/// six rounds, median 25, and the encoder bench's `batch` body 99 ns a record against 108.)
#[inline(always)]
fn prefetch_ahead(end: *const u8) {
    for line in 0..4 {
        prefetch(end.wrapping_add(AHEAD_BYTES + 64 * line));
    }
}

/// Asks the CPU for the cache line of `at`: a hint, without effect on memory.
#[inline(always)]
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults and has no effect on memory, wherever it points.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Room for text written in place (see [`in_place`]); writing past it is a bug and panics.
pub(crate) struct Line<'a> {
    bytes: &'a mut [MaybeUninit<u8>],
    len: usize,
}

/// The text of each IPv4 octet followed by a dot, and the number of digits.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut octets = [([0u8; 4], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let (text, len) = &mut octets[i];
        let mut n = 0;
        if i >= 100 {
            text[n] = b'0' + (i / 100) as u8;
            n += 1;
        }
        if i >= 10 {
            text[n] = b'0' + (i / 10 % 10) as u8;
            n += 1;
        }
        text[n] = b'0' + (i % 10) as u8;
        text[n + 1] = b'.';
        *len = n as u8 + 1;
        i += 1;
    }
    octets
};

/// Lowercase hexadecimal digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// `10^i` for every `i` a `u64`'s digit count reaches.
const POWERS_OF_TEN: [u64; 20] = {
    let mut powers = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        powers[i] = powers[i - 1] * 10;
        i += 1;
    }
    powers
};

/// How many decimal digits `value` has (one for 0): from its bit length, a multiplication and
/// one comparison, without a division.
#[inline(always)]
const fn decimal_len(value: u64) -> usize {
    let value = value | 1;
    // floor(log10(2^bits)), which is the digit count or one less.
    let guess = (((64 - value.leading_zeros()) * 1233) >> 12) as usize;
    guess + (value >= POWERS_OF_TEN[guess]) as usize
}

impl Line<'_> {
    /// Appends `text`.
    #[inline(always)]
    pub(crate) fn put(&mut self, text: &[u8]) {
        let room = &mut self.bytes[self.len..self.len + text.len()];
        // SAFETY: `room` and `text` have the same length; `MaybeUninit<u8>` has `u8`'s layout;
        // a fresh `&mut` borrow cannot overlap `text`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                text.as_ptr(),
                room.as_mut_ptr().cast::<u8>(),
                text.len(),
            );
        }
        self.len += text.len();
    }

    /// Appends the first `len` bytes of `chunk` (at most `N`), copying all `N` of them: a copy of
    /// a size known when compiling is a few moves, where a short copy of a size known only at run
    /// time is a call to `memcpy`. What lies past `len` is overwritten by the text that follows, or
    /// cut off by [`in_place`] — so `N` bytes of room must remain.
    #[inline(always)]
    pub(crate) fn put_prefix<const N: usize>(&mut self, chunk: &[u8; N], len: usize) {
        let room = &mut self.bytes[self.len..self.len + N];
        // SAFETY: `room` holds `N` bytes, like `chunk`; `MaybeUninit<u8>` has `u8`'s layout; a
        // fresh `&mut` borrow cannot overlap `chunk`.
        unsafe {
            std::ptr::copy_nonoverlapping(chunk.as_ptr(), room.as_mut_ptr().cast::<u8>(), N);
        }
        self.len += len.min(N);
    }

    /// Asks the CPU for the line [`AHEAD_BYTES`] past where the next byte goes: for a text
    /// longer than the few lines [`in_place`] asks for up front, called every few dozen bytes.
    #[inline(always)]
    pub(crate) fn prefetch_ahead(&self) {
        let end: *const u8 = self.bytes.as_ptr().cast::<u8>().wrapping_add(self.len);
        prefetch(end.wrapping_add(AHEAD_BYTES));
    }

    /// One byte.
    #[inline(always)]
    pub(crate) fn byte(&mut self, byte: u8) {
        self.bytes[self.len].write(byte);
        self.len += 1;
    }

    /// A protocol-buffers varint.
    #[inline(always)]
    pub(crate) fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    /// Decimal digits of `value`.
    #[inline(always)]
    pub(crate) fn number(&mut self, value: u32) {
        self.number64(u64::from(value));
    }

    /// Decimal digits of `value`, two at a time from the last, each where it belongs: digits
    /// made on the stack and copied out were read back before their own stores had landed,
    /// and waited for them (a failed store-to-load forward, the most of a record's cost).
    #[inline(always)]
    pub(crate) fn number64(&mut self, mut value: u64) {
        let len = decimal_len(value);
        let room = &mut self.bytes[self.len..self.len + len];
        let mut end = len;
        while value >= 100 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            end -= 2;
            room[end].write(DIGIT_PAIRS[pair]);
            room[end + 1].write(DIGIT_PAIRS[pair + 1]);
        }
        if value >= 10 {
            let pair = value as usize * 2;
            room[0].write(DIGIT_PAIRS[pair]);
            room[1].write(DIGIT_PAIRS[pair + 1]);
        } else {
            room[0].write(b'0' + value as u8);
        }
        self.len += len;
    }

    /// A number whose digits were made ahead (see [`Decimal`]), without leading zeros. Ten
    /// bytes are stored whatever its length, so room for ten digits must remain; the text that
    /// follows overwrites what lies past the number, or [`in_place`] cuts it off.
    #[inline(always)]
    pub(crate) fn decimal(&mut self, value: Decimal) {
        let Decimal { high, low } = value;
        // `high` is at most 42: two digits, one, or none.
        let pair = high as usize * 2;
        let one_digit = usize::from(high < 10);
        self.put_prefix(
            &[DIGIT_PAIRS[pair + one_digit], DIGIT_PAIRS[pair + 1]],
            if high == 0 { 0 } else { 2 - one_digit },
        );
        let zeros = if high == 0 {
            value.low_leading_zeros()
        } else {
            0
        };
        self.put_prefix(&(low >> (8 * zeros)).to_le_bytes(), 8 - zeros as usize);
    }

    /// A number below 256, e.g. an IP version.
    #[inline(always)]
    pub(crate) fn small(&mut self, value: u8) {
        let (text, digits) = &OCTETS[usize::from(value)];
        self.put_prefix(text, usize::from(*digits));
    }

    /// `ts` as RFC 3339 text with nine fraction digits, without quotes.
    #[inline(always)]
    pub(crate) fn time(&mut self, times: &mut Rfc3339Writer, ts: Timestamp) {
        let (date, nanos) = times.split(ts);
        let [fraction, _] = Decimal::pair(nanos, 0);
        self.time_parts(date, fraction);
    }

    /// RFC 3339 text with nine fraction digits, without quotes, from its parts: the text of the
    /// second (from [`Rfc3339Writer::split`]) and the digits of its nanoseconds.
    #[inline(always)]
    pub(crate) fn time_parts(&mut self, date: &[u8; DATE_LEN], nanos: Decimal) {
        let Decimal { high, low } = nanos;
        self.put(date);
        // Nanoseconds are below 10^9: `high` is their first digit.
        self.put_prefix(&[b'.', b'0' + high as u8], 2);
        self.put_prefix(&low.to_le_bytes(), 8);
        self.byte(b'Z');
    }

    /// An address without quotes, in the text `std` gives it (for IPv6, RFC 5952's: lowercase,
    /// the longest run of two or more zero groups as `::`, IPv4-mapped addresses with their IPv4
    /// tail); neither form contains a character JSON must escape. It needs room for one byte more
    /// than the longest address (15 and 45 bytes), which the text after it overwrites.
    #[inline(always)]
    pub(crate) fn ip(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.ipv4(v4.octets()),
            IpAddr::V6(v6) => self.ipv6(v6),
        }
    }

    #[inline(always)]
    fn ipv4(&mut self, [a, b, c, d]: [u8; 4]) {
        for octet in [a, b, c] {
            let (text, digits) = &OCTETS[usize::from(octet)];
            self.put_prefix(text, usize::from(*digits) + 1);
        }
        self.small(d);
    }

    /// Written here rather than through `core::fmt`, which took five times as long.
    fn ipv6(&mut self, v6: &Ipv6Addr) {
        let groups = v6.segments();
        if let Some(v4) = v6.to_ipv4_mapped() {
            self.put(b"::ffff:");
            self.ipv4(v4.octets());
            return;
        }
        // The first longest run of zero groups, if it is longer than one group.
        let (mut zeros, mut run_start, mut run_len) = ((0, 0), 0, 0);
        for (i, &group) in groups.iter().enumerate() {
            if group == 0 {
                if run_len == 0 {
                    run_start = i;
                }
                run_len += 1;
                if run_len > zeros.1 {
                    zeros = (run_start, run_len);
                }
            } else {
                run_len = 0;
            }
        }
        let mut i = 0;
        while i < 8 {
            if zeros.1 > 1 && i == zeros.0 {
                self.put(b"::");
                i += zeros.1;
                continue;
            }
            if i > 0 && !(zeros.1 > 1 && i == zeros.0 + zeros.1) {
                self.byte(b':');
            }
            self.hex(groups[i]);
            i += 1;
        }
    }

    /// `value` in lowercase hexadecimal, without leading zeros.
    #[inline(always)]
    fn hex(&mut self, value: u16) {
        let nibbles = (16 - value.leading_zeros() as usize).div_ceil(4).max(1);
        for shift in (0..nibbles).rev() {
            self.byte(HEX[usize::from(value >> (shift * 4)) & 15]);
        }
    }
}

impl fmt::Write for Line<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.len + text.len() > self.bytes.len() {
            return Err(fmt::Error);
        }
        self.put(text.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn text(room: usize, write: impl FnOnce(&mut Line<'_>)) -> String {
        let mut out = b"x".to_vec();
        in_place(&mut out, room, write);
        String::from_utf8(out[1..].to_vec()).unwrap()
    }

    #[test]
    fn numbers_match_std_at_every_length() {
        let mut values = vec![
            0u64,
            9,
            10,
            99,
            100,
            101,
            999,
            1_000,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        let mut rng = fastrand::Rng::with_seed(3);
        values.extend((0..10_000).map(|_| rng.u64(..) >> rng.u32(0..64)));
        for value in values {
            assert_eq!(text(20, |l| l.number64(value)), value.to_string());
        }
    }

    #[test]
    fn decimals_match_std_at_every_length() {
        let mut values = vec![0u32, 9, 10, 99_999_999, 100_000_000, 999_999_999, u32::MAX];
        let mut rng = fastrand::Rng::with_seed(13);
        values.extend((0..10_000).map(|_| rng.u32(..) >> rng.u32(0..32)));
        for pair in values.chunks(2) {
            let (a, b) = (pair[0], pair[pair.len() - 1]);
            let [da, db] = Decimal::pair(a, b);
            // Followed by text, as in a record, and last, as cut off by `in_place`.
            let text = text(30, |l| {
                l.decimal(da);
                l.put(b",");
                l.decimal(db);
            });
            assert_eq!(text, format!("{a},{b}"));
        }
    }

    #[test]
    fn times_match_the_writer_s_text() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut times = Rfc3339Writer::default();
        for _ in 0..10_000 {
            let ts = Timestamp::from_unix_nanos(rng.i64(0..4_102_444_800_000_000_000));
            let expected = String::from_utf8(ts.rfc3339().to_vec()).unwrap();
            assert_eq!(text(30, |l| l.time(&mut times, ts)), expected);
        }
    }

    #[test]
    fn addresses_match_std() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..10_000 {
            let v4 = IpAddr::V4(Ipv4Addr::from(rng.u32(..)));
            assert_eq!(text(16, |l| l.ip(&v4)), v4.to_string());
        }
        for v6 in [
            "::",
            "::1",
            "1::",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "::10.0.0.1",
            "64:ff9b::10.0.0.1",
            "1:0:1:0:1:0:1:0",
            "1:0:0:1:0:0:1:1",
            "1:0:0:1:1:0:0:0",
            "2001:db8:85a3::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let v6: IpAddr = v6.parse::<Ipv6Addr>().unwrap().into();
            assert_eq!(text(46, |l| l.ip(&v6)), v6.to_string());
        }
        // Groups that are zero half the time, so that runs of every length and place occur.
        for _ in 0..100_000 {
            let groups: [u16; 8] = std::array::from_fn(|_| {
                if rng.bool() {
                    0
                } else {
                    rng.u16(..) >> rng.u32(0..16)
                }
            });
            let v6 = IpAddr::V6(Ipv6Addr::from(groups));
            assert_eq!(text(46, |l| l.ip(&v6)), v6.to_string());
        }
    }

    #[test]
    #[should_panic]
    fn writing_past_the_room_panics() {
        text(3, |l| l.put(b"four"));
    }
}
