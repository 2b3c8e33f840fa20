//! The `PORTS` bitmap as the loader writes it: which words hold which ports, and the writes that
//! change one list into another without unmatching a port kept in both.

use alloc::{collections::BTreeMap, vec::Vec};

use crate::port_bit;

/// The non-zero words of the `PORTS` bitmap for `ports`, by word index (see [`port_bit`]).
///
/// # Examples
///
/// ```
/// use sniffer_common::bitmap::port_bitmap;
///
/// let words = port_bitmap(&[80, 81, 8080]);
/// assert_eq!(words.get(&1), Some(&(0b11 << 16)));
/// assert_eq!(words.len(), 2);
/// ```
#[must_use]
pub fn port_bitmap(ports: &[u16]) -> BTreeMap<u32, u64> {
    let mut words = BTreeMap::new();
    for &port in ports {
        let (word, bit) = port_bit(port);
        *words.entry(word).or_insert(0) |= bit;
    }
    words
}

/// The `PORTS` words to write, with their new values, to go from capturing `old` to capturing
/// `new` in place: only the words that differ, each written once with its final value. A port in
/// both lists has its bit set in the old and the new value of its word, so however the kernel
/// reads a word while it is written, that port is never unmatched: its packets are neither lost
/// nor, as each packet yields one record, counted twice.
///
/// # Examples
///
/// ```
/// use sniffer_common::bitmap::bitmap_changes;
///
/// // 80 and 81 share word 1; 8080 is in word 126.
/// assert_eq!(bitmap_changes(&[80, 8080], &[80, 81]), vec![(1, 0b11 << 16), (126, 0)]);
/// assert!(bitmap_changes(&[80], &[80]).is_empty());
/// ```
#[must_use]
pub fn bitmap_changes(old: &[u16], new: &[u16]) -> Vec<(u32, u64)> {
    let (old, new) = (port_bitmap(old), port_bitmap(new));
    let mut changes: Vec<(u32, u64)> = new
        .iter()
        .filter(|&(word, bits)| old.get(word) != Some(bits))
        .map(|(&word, &bits)| (word, bits))
        .collect();
    changes.extend(
        old.keys()
            .filter(|word| !new.contains_key(word))
            .map(|&word| (word, 0)),
    );
    changes.sort_unstable();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_changes_turn_the_old_map_into_the_new() {
        let cases: [(&[u16], &[u16]); 5] = [
            (&[80], &[8080]),
            (&[80, 81, 443], &[81, 443, 444]),
            (&[1, 65535], &[]),
            (&[], &[2, 3]),
            (&[8080, 8443], &[8443, 8080]),
        ];
        for (old, new) in cases {
            let mut map = port_bitmap(old);
            let changes = bitmap_changes(old, new);
            for &(word, bits) in &changes {
                let kept = port_bitmap(old).get(&word).copied().unwrap_or(0)
                    & port_bitmap(new).get(&word).copied().unwrap_or(0);
                assert_eq!(bits & kept, kept, "a kept port's bit is never cleared");
                if bits == 0 {
                    map.remove(&word);
                } else {
                    map.insert(word, bits);
                }
            }
            assert_eq!(map, port_bitmap(new), "{old:?} -> {new:?}");
            let untouched = changes
                .iter()
                .all(|(word, bits)| port_bitmap(old).get(word) != Some(bits) || *bits == 0);
            assert!(untouched, "only words that differ are written");
        }
    }

    /// Every port number, looked up the way the kernel program does, against the list.
    #[test]
    fn bitmap_holds_exactly_the_listed_ports() {
        let listed = [1u16, 63, 64, 80, 443, 8080, 8443, 65_472, 65_535];
        let words = port_bitmap(&listed);
        for port in 0..=u16::MAX {
            let (word, bit) = port_bit(port);
            let found = words.get(&word).is_some_and(|w| w & bit != 0);
            assert_eq!(found, listed.contains(&port), "port {port}");
        }
        assert!(words.keys().all(|&w| w < crate::PORT_BITMAP_WORDS));
    }
}
