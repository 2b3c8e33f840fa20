//! The tracker's table: connections by [`Key`], built so that a packet waits for memory at
//! most once, and so that the wait for one packet's connection can overlap the work on others.
//!
//! Open addressing with linear probing over 8-byte slots (the low 32 bits of the key's hash, and
//! the index of the entry), entries in a dense vector. Tens of thousands of connections need
//! only a few hundred KiB of slots, which stay in the CPU caches, where a `HashMap` of whole
//! entries (312 bytes a bucket) made every packet wait twice on memory. [`Table::prefetch`] asks
//! for a connection's entry before it is needed: the tracker calls it a few packets ahead. Once
//! the entries pass 4 MiB, their room grows at once to the owner's limit, in memory
//! the kernel is asked to back with huge pages, so that a packet does not wait for an address
//! translation as well.

use std::hash::BuildHasher as _;

use super::analysis::Key;

/// An empty slot.
const EMPTY: u64 = 0;

/// Entries' memory from which on the table grows in one step to its limit (at most
/// [`RESERVE_MAX_BYTES`] more), in memory backed by huge pages as it fills: tens of thousands of
/// connections over 4 KiB pages need more address translations than the CPU keeps, and a packet
/// then waits for a page-table walk as well as for its entry (under the flood's 40,001
/// connections, huge pages forced on for the whole process took `RECORDS=both` from 482 to
/// 425 ns a packet, three rounds each; the table's own, alone, did not stand out of the flood's
/// noise in one three-round run: 489, 466, 414).
const LARGE_BYTES: usize = 4 << 20;

/// How much of a large table's emptied room is given back to the kernel at a time.
const RELEASE_STEP: usize = 2 << 20;

/// The most entries' memory reserved in one step: address space, not memory used (pages are
/// given as entries first fill them), but a reservation beyond the machine's memory may be
/// refused.
const RESERVE_MAX_BYTES: usize = 256 << 20;

/// One stored value and what finds it again (in C order: the key first, then the value's
/// start, which [`Table::prefetch`] fetches together). Each starts a cache line, so that the
/// bytes most packets read span as few lines as they can: the tracker's items are 512 bytes,
/// whose first five lines hold the key and the value's hot bytes (items that started
/// anywhere spanned one line more than those bytes need five times in eight).
#[derive(Debug)]
#[repr(C, align(64))]
struct Item<V> {
    key: Key,
    hash: u64,
    value: V,
}

/// A map from [`Key`] to `V`; see the module documentation.
#[derive(Debug)]
pub struct Table<V> {
    /// `(hash as u32) << 32 | (index + 1)`, or [`EMPTY`]; a power of two long, at most half full.
    slots: Vec<u64>,
    items: Vec<Item<V>>,
    /// The most entries the owner stores at once: how far a large table grows in one step.
    limit: usize,
    hasher: foldhash::fast::RandomState,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self::with_limit(usize::MAX)
    }
}

const fn pack(hash: u64, index: usize) -> u64 {
    ((hash & 0xffff_ffff) << 32) | (index as u64 + 1)
}

const fn index_of(slot: u64) -> usize {
    (slot & 0xffff_ffff) as usize - 1
}

const fn tag_of(slot: u64) -> u64 {
    slot >> 32
}

impl<V> Table<V> {
    /// An empty table whose owner stores at most `limit` entries at once (more may be stored;
    /// the limit only shapes how the entries' memory grows).
    #[must_use]
    pub fn with_limit(limit: usize) -> Self {
        Self {
            slots: vec![EMPTY; 16],
            items: Vec::new(),
            limit,
            // foldhash, seeded at random per process: crafted addresses cannot aim at a slot.
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The hash of `key`, which every other call takes with it.
    #[must_use]
    pub fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Entries stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    const fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: &Key, hash: u64) -> Result<usize, usize> {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return Err(at);
            }
            if tag_of(slot) == hash & 0xffff_ffff && self.items[index_of(slot)].key == *key {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The value of `key`.
    pub fn get_mut(&mut self, key: &Key, hash: u64) -> Option<&mut V> {
        let at = self.find(key, hash).ok()?;
        Some(&mut self.items[index_of(self.slots[at])].value)
    }

    /// Stores `value` under `key`, which must not be stored yet.
    pub fn insert(&mut self, key: Key, hash: u64, value: V) {
        if (self.items.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let Err(at) = self.find(&key, hash) else {
            unreachable!("insert of a key already stored");
        };
        self.slots[at] = pack(hash, self.items.len());
        if self.items.len() == self.items.capacity() {
            self.grow_items();
        }
        self.items.push(Item { key, hash, value });
    }

    /// Makes room for more entries: a quarter more (at most a quarter of the entries' memory
    /// stands empty; the block is copied as it grows, to a few MiB), or, once the entries
    /// are large ([`LARGE_BYTES`]), room up to the limit in huge pages.
    fn grow_items(&mut self) {
        let len = self.items.len();
        let more = (len / 4).max(16);
        let item = size_of::<Item<V>>().max(1);
        if (len + more) * item < LARGE_BYTES {
            self.items.reserve_exact(more);
            return;
        }
        let room = self
            .limit
            .saturating_sub(len)
            .min(RESERVE_MAX_BYTES / item)
            .max(more);
        self.items.reserve_exact(room);
        // Huge pages as they are first touched (transparent huge pages in `madvise` mode, most
        // distributions' default).
        // SAFETY: the vector's whole block; MADV_HUGEPAGE never changes contents.
        unsafe {
            advise_pages(
                self.items.as_ptr().cast(),
                self.items.capacity() * item,
                libc::MADV_HUGEPAGE,
            );
        }
    }

    fn grow(&mut self) {
        self.slots = vec![EMPTY; self.slots.len() * 2];
        let mask = self.mask();
        for (index, item) in self.items.iter().enumerate() {
            let mut at = item.hash as usize & mask;
            while self.slots[at] != EMPTY {
                at = (at + 1) & mask;
            }
            self.slots[at] = pack(item.hash, index);
        }
    }

    /// The slot of the first entry with this `hash` whose value `matches`.
    fn find_by(&self, hash: u64, mut matches: impl FnMut(&V) -> bool) -> Option<usize> {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return None;
            }
            if tag_of(slot) == hash & 0xffff_ffff && matches(&self.items[index_of(slot)].value) {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The key and value of the entry with this `hash` whose value `matches`: a lookup for
    /// callers that keep a hash and something that tells the value apart, not the whole key.
    #[must_use]
    pub fn get_by(&self, hash: u64, matches: impl FnMut(&V) -> bool) -> Option<(&Key, &V)> {
        let item = &self.items[index_of(self.slots[self.find_by(hash, matches)?])];
        Some((&item.key, &item.value))
    }

    /// Removes the entry [`Table::get_by`] finds, returning its key and value.
    pub fn remove_by(&mut self, hash: u64, matches: impl FnMut(&V) -> bool) -> Option<(Key, V)> {
        let at = self.find_by(hash, matches)?;
        let item = self.remove_at(at);
        Some((item.key, item.value))
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &Key, hash: u64) -> Option<V> {
        let at = self.find(key, hash).ok()?;
        Some(self.remove_at(at).value)
    }

    /// Removes the entry of slot `at`.
    fn remove_at(&mut self, at: usize) -> Item<V> {
        let index = index_of(self.slots[at]);
        self.vacate(at);
        let last = self.items.len() - 1;
        if index != last {
            // The last item moves into the hole: its slot must follow it.
            let mask = self.mask();
            let mut slot = self.items[last].hash as usize & mask;
            while index_of(self.slots[slot]) != last {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = pack(self.items[last].hash, index);
        }
        self.items.swap_remove(index)
    }

    /// Empties slot `at`, shifting back the slots after it that probing would no longer reach
    /// (deletion without tombstones). A slot's home is the low bits of its tag.
    fn vacate(&mut self, mut at: usize) {
        let mask = self.mask();
        let mut next = (at + 1) & mask;
        loop {
            let slot = self.slots[next];
            if slot == EMPTY {
                break;
            }
            let home = tag_of(slot) as usize & mask;
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(at) & mask) {
                self.slots[at] = slot;
                at = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[at] = EMPTY;
    }

    /// Asks the CPU to bring the first slot `hash` probes into its caches, ahead of
    /// [`Table::prefetch`]: a hint, without effect on the table.
    pub fn prefetch_slot(&self, hash: u64) {
        let slot: *const u64 = &raw const self.slots[hash as usize & self.mask()];
        prefetch_lines(slot.cast(), 1);
    }

    /// Asks the CPU to bring the entry of `key` (by its `hash`) into its caches, with the
    /// first `value_bytes` of its value, if the first slot probed holds it: a hint, without
    /// effect on the table. The slot is read, so it should have been asked for with
    /// [`Table::prefetch_slot`] some time before.
    pub fn prefetch(&self, hash: u64, value_bytes: usize) {
        let slot = self.slots[hash as usize & self.mask()];
        if slot != EMPTY && tag_of(slot) == hash & 0xffff_ffff {
            let item: *const Item<V> = &raw const self.items[index_of(slot)];
            let bytes =
                (std::mem::offset_of!(Item<V>, value) + value_bytes).min(size_of::<Item<V>>());
            prefetch_lines(item.cast(), bytes);
        }
    }

    /// Every key and value, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Key, &mut V)> {
        self.items
            .iter_mut()
            .map(|item| (&item.key, &mut item.value))
    }

    /// Removes and returns one entry (the last stored), giving a large table's memory back as
    /// it empties: a table drained this way never needs room for its entries twice.
    pub fn pop(&mut self) -> Option<(Key, V)> {
        let last = self.items.last()?;
        let mask = self.mask();
        let mut at = last.hash as usize & mask;
        while index_of(self.slots[at]) != self.items.len() - 1 {
            at = (at + 1) & mask;
        }
        let item = self.remove_at(at);
        self.release_below_a_step();
        Some((item.key, item.value))
    }

    /// As a large table empties, gives the pages of each [`RELEASE_STEP`] of room it leaves
    /// back to the kernel (the room itself stays: a smaller block would be a copy of the entries,
    /// as blocks aligned to cache lines are not remapped, and would need room for them twice).
    fn release_below_a_step(&mut self) {
        let item = size_of::<Item<V>>();
        let (used, room) = (self.items.len() * item, self.items.capacity() * item);
        // The step boundary the last pop went below, if it went below one.
        let boundary = (used / RELEASE_STEP + 1) * RELEASE_STEP;
        if room < LARGE_BYTES || boundary > used + item {
            return;
        }
        let base = self.items.as_ptr().cast::<u8>();
        // SAFETY: spare room of the vector's block, past every entry (zeros read as nothing:
        // the vector writes an entry before it reads it).
        unsafe {
            advise_pages(
                base.wrapping_add(used),
                (boundary + RELEASE_STEP).min(room) - used,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// An item's size and where its value starts, for tests of the layout the tracker relies on.
#[cfg(test)]
pub(crate) const fn item_layout<V>() -> (usize, usize) {
    (size_of::<Item<V>>(), std::mem::offset_of!(Item<V>, value))
}

/// Prefetches the cache lines that hold the `len` bytes at `at` (an item need not start a
/// line: its last bytes may be on one line more than `len / 64` counts).
#[cfg(target_arch = "x86_64")]
fn prefetch_lines(at: *const u8, len: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let first = at.addr() & !63;
    let lines = (at.addr() + len - first).div_ceil(64);
    for line in (0..lines).map(|i| first + 64 * i) {
        // SAFETY: a prefetch never faults and has no effect on memory; the lines are those of
        // an item of the table's vector.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.with_addr(line).cast()) };
    }
}

/// Gives the kernel `advice` (`madvise`) about the whole pages within the `len` bytes at `at`;
/// advice it refuses (a kernel without transparent huge pages, larger base pages) is only not
/// taken.
///
/// # Safety
///
/// The bytes lie within one allocation this process owns, and the advice keeps what the rest of
/// the program reads there: `MADV_HUGEPAGE` changes only how pages are backed; `MADV_DONTNEED`
/// turns their contents into zeros, so the bytes must be spare room nothing reads before it
/// writes it again.
unsafe fn advise_pages(at: *const u8, len: usize, advice: libc::c_int) {
    const PAGE: usize = 4096;
    let start = at.addr().next_multiple_of(PAGE);
    let end = (at.addr() + len) & !(PAGE - 1);
    if end > start {
        // SAFETY: whole pages within the caller's range, which the caller vouches for.
        let _ =
            unsafe { libc::madvise(at.with_addr(start).cast_mut().cast(), end - start, advice) };
    }
}

/// Prefetching is an x86-64 hint here; other targets go without.
#[cfg(not(target_arch = "x86_64"))]
fn prefetch_lines(_at: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::connections::analysis::Endpoint;

    #[test]
    fn a_large_table_emptied_by_pop_gives_pages_back_and_keeps_what_it_holds() {
        // 20,000 items of 512 bytes: past LARGE_BYTES, so pops release room step by step.
        let mut table: Table<[u64; 56]> = Table::with_limit(20_000);
        for n in 0..20_000u32 {
            table.insert(key(n), table.hash(&key(n)), [u64::from(n); 56]);
        }
        while table.len() > 1_000 {
            let (k, v) = table.pop().expect("not empty");
            assert!(v.iter().all(|&x| x == v[0]), "{k:?}");
        }
        let check = |table: &mut Table<[u64; 56]>, n: u32| {
            let value = table.get_mut(&key(n), table.hash(&key(n))).expect("kept");
            assert_eq!(*value, [u64::from(n); 56]);
        };
        for n in 0..1_000 {
            check(&mut table, n);
        }
        // The released room takes entries again.
        for n in 20_000..30_000u32 {
            table.insert(key(n), table.hash(&key(n)), [u64::from(n); 56]);
        }
        for n in (0..1_000).chain(20_000..30_000) {
            check(&mut table, n);
        }
    }

    fn key(n: u32) -> Key {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&n.to_be_bytes());
        Key {
            ip_version: 4,
            a: Endpoint { addr, port: 1 },
            b: Endpoint {
                addr: [0; 16],
                port: u16::try_from(n % 60_000).unwrap(),
            },
        }
    }

    #[test]
    fn behaves_as_a_map_under_random_inserts_and_removes() {
        let mut table = Table::default();
        let mut model = HashMap::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for step in 0..200_000u32 {
            let n = rng.u32(0..5_000);
            let k = key(n);
            let h = table.hash(&k);
            if rng.bool() {
                if let Some(value) = model.get_mut(&n) {
                    *table.get_mut(&k, h).unwrap() += 1;
                    *value += 1;
                } else {
                    table.insert(k, h, step);
                    model.insert(n, step);
                }
            } else {
                assert_eq!(table.remove(&k, h), model.remove(&n), "step {step}");
            }
            assert_eq!(table.len(), model.len());
        }
        for (n, value) in &model {
            let k = key(*n);
            assert_eq!(table.get_mut(&k, table.hash(&k)).copied(), Some(*value));
            table.prefetch_slot(table.hash(&k));
            table.prefetch(table.hash(&k), 4);
        }
        let mut all: Vec<u32> = std::iter::from_fn(|| table.pop()).map(|(_, v)| v).collect();
        let mut expected: Vec<u32> = model.into_values().collect();
        all.sort_unstable();
        expected.sort_unstable();
        assert_eq!(all, expected);
        assert!(table.is_empty());
        assert_eq!(table.get_mut(&key(1), table.hash(&key(1))), None);
    }

    #[test]
    fn entries_are_found_and_removed_by_hash_and_value() {
        let mut table = Table::default();
        // Same first slot for all: the value tells them apart.
        for n in 0..10u32 {
            table.insert(key(n), 9, n * 100);
        }
        assert_eq!(table.get_by(9, |v| *v == 300), Some((&key(3), &300)));
        assert_eq!(table.get_by(8, |v| *v == 300), None, "another hash");
        assert_eq!(table.remove_by(9, |v| *v == 300), Some((key(3), 300)));
        assert_eq!(table.get_by(9, |v| *v == 300), None);
        assert_eq!(table.get_mut(&key(4), 9).copied(), Some(400));
        assert_eq!(table.len(), 9);
    }

    #[test]
    fn colliding_keys_are_told_apart_and_removed_in_any_order() {
        // A table whose every key lands on the same first slot: the worst probe runs.
        let mut table = Table::default();
        let keys: Vec<Key> = (0..40).map(key).collect();
        for (i, k) in keys.iter().enumerate() {
            table.insert(*k, 5, i);
        }
        for (i, k) in keys.iter().enumerate().step_by(3) {
            assert_eq!(table.remove(k, 5), Some(i));
        }
        for (i, k) in keys.iter().enumerate() {
            let expected = (i % 3 != 0).then_some(i);
            assert_eq!(table.get_mut(k, 5).copied(), expected, "key {i}");
        }
    }

    #[test]
    fn a_large_table_grows_once_to_its_limit_and_stays_a_map() {
        // 200-byte values: the entries pass LARGE_BYTES at about 16,800.
        let limit = 40_001;
        let mut table = Table::with_limit(limit);
        let mut capacities = Vec::new();
        for n in 0..limit as u32 {
            let k = key(n);
            table.insert(k, table.hash(&k), [n; 50]);
            if capacities.last() != Some(&table.items.capacity()) {
                capacities.push(table.items.capacity());
            }
        }
        let large = capacities
            .iter()
            .position(|&c| c * size_of::<Item<[u32; 50]>>() >= LARGE_BYTES)
            .expect("the entries grew large");
        assert_eq!(
            capacities[large..],
            [limit],
            "one step, to the limit: {capacities:?}"
        );
        for n in (0..limit as u32).step_by(7) {
            let k = key(n);
            assert_eq!(table.get_mut(&k, table.hash(&k)).map(|v| v[49]), Some(n));
        }
        // Past the limit it still takes entries, a quarter more at a time.
        let k = key(limit as u32);
        table.insert(k, table.hash(&k), [0; 50]);
        assert_eq!(table.len(), limit + 1);
        assert_eq!(table.items.capacity(), limit + limit / 4);
    }
}
