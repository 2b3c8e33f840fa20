//! Decimal digits of two numbers at once, made in registers before they are written.
//!
//! A packet record holds nine numbers, and making their digits two at a time from a table, each
//! pair after a division, was three quarters of the record's cost (a record without its numbers
//! took 25 ns, with them about 100). Made eight at a time for two numbers in one SSE2 register
//! (part of every x86_64 CPU), the same record takes about 55 ns. Elsewhere the same arithmetic
//! runs in a 64-bit register, one number at a time.

/// A `u32`'s decimal digits, made ahead of being written: the value over 10^8 (0–42) and the
/// last eight digits, zero-padded, as ASCII with the first in the lowest byte (the order in which
/// a little-endian store lays them out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    /// `value / 10^8`.
    pub(crate) high: u32,
    /// The digits of `value % 10^8`, zero-padded to eight.
    pub(crate) low: u64,
}

/// `'0'` in every byte.
const ZEROS: u64 = 0x3030_3030_3030_3030;

impl Decimal {
    /// The digits of `a` and `b`.
    #[inline(always)]
    pub(crate) fn pair(a: u32, b: u32) -> [Self; 2] {
        let [low_a, low_b] = eight_digits_pair(a % 100_000_000, b % 100_000_000);
        [
            Self {
                high: a / 100_000_000,
                low: low_a,
            },
            Self {
                high: b / 100_000_000,
                low: low_b,
            },
        ]
    }

    /// How many of `low`'s first bytes are leading zeros: at most seven, so that a value of 0
    /// keeps its last digit.
    #[inline(always)]
    pub(crate) fn low_leading_zeros(self) -> u32 {
        // Bit 56 (in the last byte) stops the count at seven bytes and makes the value non-zero,
        // so the count compiles to one `bsf`.
        ((self.low ^ ZEROS) | (1 << 56)).trailing_zeros() / 8
    }
}

/// The eight zero-padded digits of `a` and of `b` (each below 10^8), first digit in the lowest
/// byte: two numbers in one SSE2 register, by the same steps as [`eight_digits`] in each half.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn eight_digits_pair(a: u32, b: u32) -> [u64; 2] {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_andnot_si128, _mm_cvtsi128_si64, _mm_mul_epu32, _mm_mulhi_epu16,
        _mm_mullo_epi16, _mm_or_si128, _mm_set_epi64x, _mm_set1_epi8, _mm_set1_epi16,
        _mm_set1_epi32, _mm_slli_epi16, _mm_slli_epi32, _mm_slli_epi64, _mm_srli_epi16,
        _mm_srli_epi64, _mm_sub_epi16, _mm_sub_epi32, _mm_unpackhi_epi64,
    };
    // SAFETY: these intrinsics need SSE2 and touch no memory; the `cfg` above compiles this only
    // where SSE2 is enabled, which it is on every x86_64 target (the ABI requires it).
    unsafe {
        // One number in each 64-bit half.
        let v = _mm_set_epi64x(i64::from(b), i64::from(a));
        // v / 10^4 as v * ceil(2^45 / 10^4) >> 45 (exact below 2^32), and v % 10^4.
        let high = _mm_srli_epi64::<45>(_mm_mul_epu32(v, _mm_set1_epi32(0xD1B7_1759_u32 as i32)));
        let low = _mm_sub_epi32(v, _mm_mul_epu32(high, _mm_set1_epi32(10_000)));
        // Four-digit groups in 16-bit lanes, each twice: [h, h, l, l] per number.
        let groups = _mm_or_si128(high, _mm_slli_epi64::<32>(low));
        let groups = _mm_or_si128(groups, _mm_slli_epi32::<16>(groups));
        // x / 100 as (x * 5243) >> 19, exact below 43,699; then x % 100.
        let hundreds = _mm_srli_epi16::<3>(_mm_mulhi_epu16(groups, _mm_set1_epi16(0x147B)));
        let rest = _mm_sub_epi16(groups, _mm_mullo_epi16(hundreds, _mm_set1_epi16(100)));
        // Two-digit pairs in order: the quotient in the first lane of each group, the rest in the
        // second.
        let first = _mm_set1_epi32(0x0000_FFFF);
        let pairs = _mm_or_si128(
            _mm_and_si128(hundreds, first),
            _mm_andnot_si128(first, rest),
        );
        // y / 10 as (y * 6554) >> 16, exact below 16,384; the ones digit goes in the second byte.
        let tens = _mm_mulhi_epu16(pairs, _mm_set1_epi16(0x199A));
        let ones = _mm_sub_epi16(pairs, _mm_mullo_epi16(tens, _mm_set1_epi16(10)));
        let digits = _mm_or_si128(
            _mm_or_si128(tens, _mm_slli_epi16::<8>(ones)),
            _mm_set1_epi8(b'0' as i8),
        );
        [
            _mm_cvtsi128_si64(digits) as u64,
            _mm_cvtsi128_si64(_mm_unpackhi_epi64(digits, digits)) as u64,
        ]
    }
}

/// [`eight_digits`] of each, where SSE2 is not there.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn eight_digits_pair(a: u32, b: u32) -> [u64; 2] {
    [eight_digits(a), eight_digits(b)]
}

/// The eight zero-padded digits of `value` (below 10^8), first digit in the lowest byte, made in
/// one 64-bit register: two four-digit groups, four two-digit pairs, eight digits, each step a
/// multiplication for every lane at once.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline(always)]
fn eight_digits(value: u32) -> u64 {
    let value = u64::from(value);
    // Lanes of 32 bits: [value / 10^4, value % 10^4].
    let groups = (value / 10_000) | ((value % 10_000) << 32);
    // Per lane, x / 100 as (x * 10486) >> 20 (exact below 10^4); lanes of 16 bits after.
    let hundreds = ((groups * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let pairs = hundreds | ((groups - hundreds * 100) << 16);
    // Per 16-bit lane, y / 10 as (y * 103) >> 10 (exact below 100); bytes after.
    let tens = ((pairs * 103) >> 10) & 0x000F_000F_000F_000F;
    tens | ((pairs - tens * 10) << 8) | ZEROS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a [`Decimal`] should hold, from `std`'s formatting.
    fn expected(value: u32) -> Decimal {
        let low = format!("{:08}", value % 100_000_000);
        Decimal {
            high: value / 100_000_000,
            low: u64::from_le_bytes(low.as_bytes().try_into().unwrap()),
        }
    }

    /// Numbers of every length, the edges of each, and random ones.
    fn values() -> Vec<u32> {
        let mut values = vec![0, 1, 9, 10, 99, 100, u32::MAX, u32::MAX - 1];
        for power in 1..10 {
            let edge = 10u32.pow(power);
            values.extend([edge - 1, edge, edge + 1]);
        }
        values.extend([99_999_999, 100_000_000, 4_199_999_999, 4_200_000_000]);
        let mut rng = fastrand::Rng::with_seed(11);
        values.extend((0..200_000).map(|_| rng.u32(..) >> rng.u32(0..32)));
        values
    }

    #[test]
    fn pairs_match_std_at_every_length() {
        let values = values();
        for (i, &a) in values.iter().enumerate() {
            let b = values[(i * 7 + 3) % values.len()];
            assert_eq!(Decimal::pair(a, b), [expected(a), expected(b)], "{a}, {b}");
        }
    }

    #[test]
    fn the_one_register_digits_match_std() {
        for value in values() {
            assert_eq!(
                eight_digits(value % 100_000_000),
                expected(value).low,
                "{value}"
            );
        }
    }

    #[test]
    fn leading_zeros_stop_at_the_last_digit() {
        let zeros = |value| Decimal::pair(value, 0)[0].low_leading_zeros();
        assert_eq!(zeros(0), 7);
        assert_eq!(zeros(7), 7);
        assert_eq!(zeros(10), 6);
        assert_eq!(zeros(12_345_678), 0);
        assert_eq!(zeros(100_000_000), 7, "the high part is apart");
        assert_eq!(zeros(4_294_967_295), 0);
    }
}
