//! The dedup window: "have we seen this event id recently?" in O(1), bounded memory, and
//! deterministic — the same sequence of `(id, timestamp)` always yields the same decisions,
//! whatever the machine, hasher seed or timing. Replicas replaying one log therefore agree.
//!
//! # Invariants
//! * `order` holds the ids of the window, oldest first; `set` holds exactly the same ids.
//! * A tagged window (`new_tagged`) keeps one `u64` per id beside it in the set (a cluster
//!   node's stream offset); the tag moves with its id and leaves with it.
//! * At most `window` ids are held; every structure is allocated once, at construction, and the
//!   id set never rehashes (load factor ≤ 1/2, deletion without tombstones).
//! * With `max_age`, the clock is the largest event timestamp seen so far (not the wall clock),
//!   which is what keeps time-based expiry deterministic.

use crate::config::DedupConfig;

/// Open-addressing set of non-zero `u64` ids: seeded Fibonacci hashing, linear probing,
/// backward-shift deletion (no tombstones, so it never needs rehashing), sized once at twice the
/// window or more.
#[derive(Clone)]
struct IdSet {
    slots: Box<[u64]>,
    /// Tags parallel to `slots` (empty for an untagged set).
    tags: Box<[u64]>,
    mask: usize,
    bits: u32,
    /// Random per set, XORed into ids before hashing: ids arrive from the network in a cluster,
    /// and with a known hash a client could pick ids that share a home slot and turn every
    /// check into a scan. Membership — every decision — does not depend on it. XOR keeps runs of
    /// consecutive ids consecutive (within aligned blocks), so they keep the golden ratio's
    /// even spread.
    seed: u64,
}

/// Writes one word per 4 KiB page of a zero-filled table, so every page is mapped now.
///
/// Why: a zeroed allocation this large comes straight from `mmap` and is mapped lazily, and a
/// table that is read before it is written (every probe reads) first maps the shared zero
/// page. The first write to each page then takes a write-protect fault whose TLB flush
/// interrupts every core running the process (`do_wp_page` → `flush_tlb_mm_range`, seen with
/// `perf` in the raft driver applying its first few hundred thousand events: 10–20 ms of
/// faults per driver iteration on a 2-core machine). Writing each page once here costs a
/// plain first-touch fault, without the flush, before any event is on the clock.
fn prefaulted(mut table: Box<[u64]>) -> Box<[u64]> {
    const WORDS_PER_PAGE: usize = 4096 / std::mem::size_of::<u64>();
    // `black_box` hides that the memory came zeroed, so the stores of zero below are not
    // optimised away.
    let words: &mut [u64] = std::hint::black_box(&mut table[..]);
    for i in (0..words.len()).step_by(WORDS_PER_PAGE) {
        words[i] = 0;
    }
    table
}

impl IdSet {
    const EMPTY: u64 = 0;

    fn with_capacity(min_slots: usize, tagged: bool) -> Self {
        let n = min_slots.next_power_of_two().max(16);
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        IdSet {
            slots: prefaulted(vec![Self::EMPTY; n].into_boxed_slice()),
            tags: if tagged {
                prefaulted(vec![0; n].into_boxed_slice())
            } else {
                Box::new([])
            },
            mask: n - 1,
            bits: n.trailing_zeros(),
            seed: random,
        }
    }

    #[inline(always)]
    fn home(&self, id: u64) -> usize {
        // Fibonacci hashing: the top bits of the product are well mixed, and consecutive ids
        // land evenly spread (three-distance theorem).
        ((id ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    /// Asks the CPU to start loading `id`'s home slot; no effect on the set's content.
    #[inline(always)]
    fn prefetch(&self, id: u64) {
        let home = self.home(id);
        prefetch_slot(&self.slots[home]);
        if let Some(tag) = self.tags.get(home) {
            prefetch_slot(tag);
        }
    }

    /// Inserts `id` (non-zero); false if it was already present.
    #[inline(always)]
    fn insert(&mut self, id: u64) -> bool {
        let mut i = self.home(id);
        loop {
            let cur = self.slots[i];
            if cur == id {
                return false;
            }
            if cur == Self::EMPTY {
                self.slots[i] = id;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The slot holding `id` (non-zero), if present.
    #[inline(always)]
    fn find(&self, id: u64) -> Option<usize> {
        let mut i = self.home(id);
        loop {
            let cur = self.slots[i];
            if cur == id {
                return Some(i);
            }
            if cur == Self::EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes `id` if present, shifting later members of its probe run back into the gap.
    #[inline(always)]
    fn remove(&mut self, id: u64) {
        let mut i = self.home(id);
        loop {
            let cur = self.slots[i];
            if cur == Self::EMPTY {
                return;
            }
            if cur == id {
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward-shift deletion: move each following entry whose home is not in (hole, j]
        // into the hole, until an empty slot ends the run.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let cur = self.slots[j];
            if cur == Self::EMPTY {
                break;
            }
            let home = self.home(cur);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = cur;
                if !self.tags.is_empty() {
                    self.tags[hole] = self.tags[j];
                }
                hole = j;
            }
        }
        self.slots[hole] = Self::EMPTY;
    }
}

/// A hint to the CPU to bring the line holding `slot` into L1; a no-op where we have no
/// prefetch instruction.
#[inline(always)]
fn prefetch_slot(slot: &u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint — it never faults and changes no memory or program
        // state — and SSE (which provides it) is part of the x86_64 baseline. The pointer comes
        // from a live reference in any case.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((slot as *const u64).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// How many items ahead [`DedupWindow::check_batch`] prefetches: far enough that a line
/// arrives from L2/L3 before its item is checked (a check is a few ns), near enough that the
/// prefetched lines (two per item) fit the core's outstanding-miss buffers.
const PREFETCH_AHEAD: usize = 8;

/// A bounded window of recently seen event ids.
#[derive(Clone)]
pub struct DedupWindow {
    window: usize,
    max_age_ns: Option<u64>,
    /// Ids of the window in arrival order: a ring of `window` entries, `len` of them live,
    /// the oldest at `head`.
    order: Box<[u64]>,
    /// Timestamps parallel to `order` (only with `max_age`).
    stamps: Box<[u64]>,
    head: usize,
    len: usize,
    set: IdSet,
    /// Id 0 cannot live in `set` (it marks empty slots); it is tracked here instead.
    has_zero: bool,
    /// Id 0's tag (tagged windows).
    zero_tag: u64,
    newest_ts: u64,
}

impl std::fmt::Debug for DedupWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupWindow")
            .field("window", &self.window)
            .field("max_age_ns", &self.max_age_ns)
            .field("len", &self.len)
            .finish()
    }
}

/// What a tagged window decided about one event (see [`DedupWindow::check_tagged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tagged {
    /// First sighting within the window: its tag is now the one given.
    Fresh,
    /// Seen within the window: the tag given when it was fresh.
    Duplicate(u64),
}

/// What the window decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// First sighting within the window: dispatch it.
    Fresh,
    /// Seen within the window: count it and drop it.
    Duplicate,
}

impl DedupWindow {
    /// A window per `config`; `window == 0` makes every event fresh.
    pub fn new(config: DedupConfig) -> Self {
        Self::build(config, false)
    }

    /// A window that also keeps a `u64` tag per id, for [`check_tagged`](Self::check_tagged):
    /// a cluster node tags each fresh id with its stream offset, so a retried publish is
    /// acknowledged with the offset its event really has, without a second map.
    pub fn new_tagged(config: DedupConfig) -> Self {
        Self::build(config, true)
    }

    fn build(config: DedupConfig, tagged: bool) -> Self {
        let window = config.window;
        DedupWindow {
            window,
            max_age_ns: config.max_age.map(|d| d.as_nanos() as u64),
            order: prefaulted(vec![0; window].into_boxed_slice()),
            stamps: if config.max_age.is_some() {
                prefaulted(vec![0; window].into_boxed_slice())
            } else {
                Box::new([])
            },
            head: 0,
            len: 0,
            // Load factor at most 1/2: short probe runs, no tombstones, never resized.
            set: IdSet::with_capacity(if window == 0 { 0 } else { window * 2 }, tagged),
            has_zero: false,
            zero_tag: 0,
            newest_ts: 0,
        }
    }

    #[inline(always)]
    fn set_insert(&mut self, id: u64) -> bool {
        if id == 0 {
            !std::mem::replace(&mut self.has_zero, true)
        } else {
            self.set.insert(id)
        }
    }

    #[inline(always)]
    fn set_remove(&mut self, id: u64) {
        if id == 0 {
            self.has_zero = false;
        } else {
            self.set.remove(id);
        }
    }

    #[inline(always)]
    fn pop_oldest(&mut self) {
        let old = self.order[self.head];
        self.set_remove(old);
        self.head += 1;
        if self.head == self.window {
            self.head = 0;
        }
        self.len -= 1;
    }

    /// Records `id` seen at `ts_ns` and says whether it is fresh or a duplicate. A duplicate is
    /// not re-inserted, so it does not extend its own lifetime in the window.
    #[inline]
    pub fn check(&mut self, id: u64, ts_ns: u64) -> Decision {
        if self.window == 0 {
            return Decision::Fresh;
        }
        self.expire(ts_ns);
        if !self.set_insert(id) {
            return Decision::Duplicate;
        }
        if self.len == self.window {
            self.pop_oldest();
        }
        let mut tail = self.head + self.len;
        if tail >= self.window {
            tail -= self.window;
        }
        self.order[tail] = id;
        if self.max_age_ns.is_some() {
            self.stamps[tail] = ts_ns;
        }
        self.len += 1;
        Decision::Fresh
    }

    /// Like [`check`](Self::check) — the same decisions for the same sequence — and a fresh id
    /// is tagged with `tag`, which a later duplicate of it returns.
    ///
    /// # Panics
    /// On a window not built with [`new_tagged`](Self::new_tagged) (a programming error).
    #[inline]
    pub fn check_tagged(&mut self, id: u64, ts_ns: u64, tag: u64) -> Tagged {
        assert!(
            self.window == 0 || !self.set.tags.is_empty(),
            "check_tagged on an untagged window"
        );
        // Age expiry first, as `check` does (repeating it there is a no-op), so an id that just
        // expired is not reported as a duplicate.
        self.expire(ts_ns);
        if let Some(t) = self.tag_of(id) {
            return Tagged::Duplicate(t);
        }
        if self.check(id, ts_ns) == Decision::Fresh {
            self.set_tag(id, tag);
        }
        Tagged::Fresh
    }

    /// The tag of `id` if it is in a tagged window.
    pub fn tag_of(&self, id: u64) -> Option<u64> {
        if self.window == 0 || self.set.tags.is_empty() {
            return None;
        }
        if id == 0 {
            return self.has_zero.then_some(self.zero_tag);
        }
        self.set.find(id).map(|i| self.set.tags[i])
    }

    /// Re-tags `id` if it is in a tagged window (restoring a snapshot).
    pub fn set_tag(&mut self, id: u64, tag: u64) {
        if self.window == 0 || self.set.tags.is_empty() {
            return;
        }
        if id == 0 {
            if self.has_zero {
                self.zero_tag = tag;
            }
        } else if let Some(i) = self.set.find(id) {
            self.set.tags[i] = tag;
        }
    }

    /// `(id, tag)` of every id in a tagged window, oldest first (empty if untagged).
    pub fn tags(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries()
            .filter_map(|(id, _)| self.tag_of(id).map(|t| (id, t)))
    }

    #[inline(always)]
    fn expire(&mut self, ts_ns: u64) {
        if let Some(max_age) = self.max_age_ns {
            self.newest_ts = self.newest_ts.max(ts_ns);
            let horizon = self.newest_ts.saturating_sub(max_age);
            while self.len > 0 && self.stamps[self.head] < horizon {
                self.pop_oldest();
            }
        }
    }

    /// [`check`](Self::check) for every item of a batch, in order: `out` is cleared and gets
    /// one decision per item, exactly the decisions successive `check` calls would give.
    ///
    /// What it adds is memory-level parallelism: while item `i` is checked, the home line of
    /// item `i + PREFETCH_AHEAD` and the line of the id that insert will evict are already
    /// being loaded, so the cache misses of a batch overlap instead of being paid one after
    /// another. Prefetches are hints only; they change no state.
    ///
    /// Measured: in isolation (`cargo bench -p eventstream-bench --bench dedup`, group
    /// `dedup_batch_64`) the table stays hot in L2 and a plain `check` loop is as fast or
    /// faster; in the closed-loop pipeline, where ring slots compete for the worker's cache,
    /// the [`Applier`](crate::Applier) using it ran faster (docs/benchmarks.md, core engine).
    #[inline]
    pub fn check_batch<T>(
        &mut self,
        items: &[T],
        key: impl Fn(&T) -> (u64, u64),
        out: &mut Vec<Decision>,
    ) {
        out.clear();
        if self.window == 0 {
            out.resize(items.len(), Decision::Fresh);
            return;
        }
        out.reserve(items.len());
        for (ahead, item) in items.iter().take(PREFETCH_AHEAD).enumerate() {
            self.prefetch(key(item).0, ahead);
        }
        for (i, item) in items.iter().enumerate() {
            if let Some(next) = items.get(i + PREFETCH_AHEAD) {
                self.prefetch(key(next).0, PREFETCH_AHEAD);
            }
            let (id, ts) = key(item);
            out.push(self.check(id, ts));
        }
    }

    /// A hint for callers that check ids one by one in a loop of their own (a cluster node's
    /// apply, which assigns offsets as it goes): start loading what checking `id` will touch
    /// after `ahead` more fresh inserts, as [`check_batch`](Self::check_batch) does. Changes
    /// nothing; a wrong guess costs a wasted load.
    #[inline]
    pub fn prefetch_ahead(&self, id: u64, ahead: usize) {
        if self.window > 0 {
            self.prefetch(id, ahead);
        }
    }

    /// Prefetches what checking `id` will touch if it is checked after `ahead` more fresh
    /// inserts: its home line, and (window full) the line of the id that insert will evict.
    /// A guess that turns out wrong (duplicates or age-expiry in between) costs one wasted load.
    #[inline(always)]
    fn prefetch(&self, id: u64, ahead: usize) {
        if id != 0 {
            self.set.prefetch(id);
        }
        if self.len == self.window {
            let mut k = self.head + ahead;
            if k >= self.window {
                k %= self.window;
            }
            let leaving = self.order[k];
            if leaving != 0 {
                self.set.prefetch(leaving);
            }
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum ids remembered.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The window's content, oldest first, as `(id, timestamp)` — what a snapshot carries
    /// (timestamps are 0 unless `max_age` is set).
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.len).map(move |k| {
            let i = (self.head + k) % self.window.max(1);
            let ts = if self.stamps.is_empty() {
                0
            } else {
                self.stamps[i]
            };
            (self.order[i], ts)
        })
    }

    /// Rebuilds a window from [`entries`](Self::entries) (oldest first): exactly those ids, in
    /// that order. They are inserted without age expiry — replaying them through `check` would
    /// expire an id that the original kept behind a younger head — and the age clock restarts
    /// at their largest timestamp. (The original's clock may be ahead of that, when its newest
    /// event was a duplicate or has left the window; the snapshot format does not carry it.)
    pub fn restore(config: DedupConfig, entries: impl IntoIterator<Item = (u64, u64)>) -> Self {
        Self::restore_into(DedupWindow::new(config), entries)
    }

    fn restore_into(mut w: DedupWindow, entries: impl IntoIterator<Item = (u64, u64)>) -> Self {
        if w.window == 0 {
            return w;
        }
        for (id, ts) in entries {
            if !w.set_insert(id) {
                continue;
            }
            if w.len == w.window {
                w.pop_oldest();
            }
            let tail = (w.head + w.len) % w.window;
            w.order[tail] = id;
            if w.max_age_ns.is_some() {
                w.stamps[tail] = ts;
                w.newest_ts = w.newest_ts.max(ts);
            }
            w.len += 1;
        }
        w
    }

    /// [`restore`](Self::restore) into a tagged window, then tags its ids from `tags` (what
    /// [`tags`](Self::tags) exported; pairs for ids not in the window are skipped). An id
    /// `tags` does not mention gets `missing`.
    pub fn restore_tagged(
        config: DedupConfig,
        entries: impl IntoIterator<Item = (u64, u64)>,
        tags: impl IntoIterator<Item = (u64, u64)>,
        missing: u64,
    ) -> Self {
        let mut w = Self::restore_into(DedupWindow::new_tagged(config), entries);
        if w.window > 0 {
            w.set.tags.fill(missing);
            w.zero_tag = missing;
        }
        for (id, tag) in tags {
            w.set_tag(id, tag);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashSet, VecDeque};
    use std::time::Duration;

    fn cfg(window: usize) -> DedupConfig {
        DedupConfig {
            window,
            max_age: None,
        }
    }

    #[test]
    fn duplicates_within_the_window_are_caught_and_old_ids_expire() {
        let mut w = DedupWindow::new(cfg(3));
        assert_eq!(w.check(1, 0), Decision::Fresh);
        assert_eq!(w.check(1, 0), Decision::Duplicate);
        assert_eq!(w.check(2, 0), Decision::Fresh);
        assert_eq!(w.check(3, 0), Decision::Fresh);
        assert_eq!(w.check(4, 0), Decision::Fresh); // evicts 1
        assert_eq!(w.check(1, 0), Decision::Fresh);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn time_window_uses_event_timestamps() {
        let mut w = DedupWindow::new(DedupConfig {
            window: 100,
            max_age: Some(Duration::from_nanos(1000)),
        });
        assert_eq!(w.check(1, 10), Decision::Fresh);
        assert_eq!(w.check(1, 900), Decision::Duplicate);
        assert_eq!(w.check(2, 2000), Decision::Fresh); // 1 is now older than 1000 ns
        assert_eq!(w.check(1, 2001), Decision::Fresh);
    }

    #[test]
    fn disabled_window_passes_everything() {
        let mut w = DedupWindow::new(cfg(0));
        assert_eq!(w.check(7, 0), Decision::Fresh);
        assert_eq!(w.check(7, 0), Decision::Fresh);
    }

    #[test]
    fn restore_reproduces_decisions() {
        let mut a = DedupWindow::new(cfg(4));
        for id in [1, 2, 3, 2, 5, 6, 1] {
            a.check(id, 0);
        }
        let mut b = DedupWindow::restore(cfg(4), a.entries().collect::<Vec<_>>());
        for id in [1, 2, 3, 5, 6, 7, 8, 1] {
            assert_eq!(a.check(id, 0), b.check(id, 0), "id {id}");
        }
    }

    proptest! {
        /// Against the obvious model: a VecDeque of the last `window` fresh ids, searched linearly.
        #[test]
        fn matches_a_naive_window(window in 1usize..16, ids in proptest::collection::vec(prop_oneof![0u64..24, any::<u64>(), (0u64..4).prop_map(|k| k << 40)], 0..300)) {
            let mut w = DedupWindow::new(cfg(window));
            let mut model: VecDeque<u64> = VecDeque::new();
            for id in ids {
                let expect = if model.contains(&id) {
                    Decision::Duplicate
                } else {
                    if model.len() == window { model.pop_front(); }
                    model.push_back(id);
                    Decision::Fresh
                };
                prop_assert_eq!(w.check(id, 0), expect);
                prop_assert_eq!(w.len(), model.len());
            }
        }

        /// The id set against std's HashSet, on a tiny table with keys built to collide (same
        /// home slot, wrapping probe runs), exercising backward-shift deletion.
        #[test]
        fn id_set_matches_hashset(ops in proptest::collection::vec((any::<bool>(), 1u64..40), 0..400)) {
            let mut set = IdSet::with_capacity(16, false);
            let mut model = HashSet::new();
            for (insert, k) in ops {
                // Spread keys over few home groups: low bits vary, high bits from a small set.
                let id = ((k % 5) << 50) | (k % 8) | ((k / 8) << 3);
                if insert {
                    if model.len() < 12 || model.contains(&id) {
                        prop_assert_eq!(set.insert(id), model.insert(id));
                    }
                } else {
                    set.remove(id);
                    model.remove(&id);
                }
                for &m in &model {
                    prop_assert!(!set.insert(m), "lost {}", m);
                }
                let live = set.slots.iter().filter(|&&v| v != IdSet::EMPTY).count();
                prop_assert_eq!(live, model.len());
            }
        }

        /// `check_batch` decides exactly as successive `check` calls, for any split of the
        /// stream into batches, with and without an age limit (ids repeat, wrap the window,
        /// include 0, and timestamps go backwards as well as forwards).
        #[test]
        fn check_batch_matches_sequential_check(
            window in 0usize..40,
            aged in any::<bool>(),
            items in proptest::collection::vec(
                (prop_oneof![0u64..60, any::<u64>(), (0u64..4).prop_map(|k| k << 40)], 0u64..5_000),
                0..400,
            ),
            cuts in proptest::collection::vec(1usize..40, 1..20),
        ) {
            let c = DedupConfig {
                window,
                max_age: aged.then(|| Duration::from_nanos(700)),
            };
            let mut seq = DedupWindow::new(c);
            let mut bat = DedupWindow::new(c);
            let mut out = Vec::new();
            let mut rest = &items[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at((*cut).min(rest.len()));
                rest = tail;
                bat.check_batch(batch, |&(id, ts)| (id, ts), &mut out);
                prop_assert_eq!(out.len(), batch.len());
                for (&(id, ts), &d) in batch.iter().zip(&out) {
                    prop_assert_eq!(d, seq.check(id, ts), "id {}", id);
                }
                prop_assert_eq!(bat.len(), seq.len());
            }
            prop_assert!(bat.entries().eq(seq.entries()));
        }

        /// A tagged window against a model of `(id, tag)` pairs: the same decisions as `check`
        /// (also with an age limit), a duplicate returns the tag its id got when fresh (tags
        /// follow their ids through backward-shift deletion: the ids collide on purpose), and a
        /// restore from `entries` + `tags` continues identically.
        #[test]
        fn tagged_window_returns_the_tag_given_when_fresh(
            window in 1usize..16,
            aged in any::<bool>(),
            items in proptest::collection::vec(
                (prop_oneof![0u64..24, any::<u64>(), (0u64..4).prop_map(|k| k << 40)], 0u64..3_000),
                0..300,
            ),
            split in 0usize..300,
        ) {
            let c = DedupConfig { window, max_age: aged.then(|| Duration::from_nanos(700)) };
            let mut tagged = DedupWindow::new_tagged(c);
            let mut plain = DedupWindow::new(c);
            let mut tags: std::collections::HashMap<u64, u64> = Default::default();
            let split = split.min(items.len());
            for (n, &(id, ts)) in items[..split].iter().enumerate() {
                let d = tagged.check_tagged(id, ts, n as u64);
                match (plain.check(id, ts), d) {
                    (Decision::Fresh, Tagged::Fresh) => { tags.insert(id, n as u64); }
                    (Decision::Duplicate, Tagged::Duplicate(t)) => prop_assert_eq!(Some(&t), tags.get(&id)),
                    (p, t) => prop_assert!(false, "check said {:?}, check_tagged {:?}", p, t),
                }
            }
            let mut restored = DedupWindow::restore_tagged(c, tagged.entries().collect::<Vec<_>>(), tagged.tags().collect::<Vec<_>>(), u64::MAX);
            prop_assert!(restored.entries().eq(tagged.entries()));
            prop_assert!(restored.tags().eq(tagged.tags()));
            if aged {
                // The age clock is not carried (see `restore`): decisions may differ.
                return Ok(());
            }
            for (n, &(id, ts)) in items[split..].iter().enumerate() {
                let tag = (split + n) as u64;
                prop_assert_eq!(restored.check_tagged(id, ts, tag), tagged.check_tagged(id, ts, tag));
            }
        }

        /// Two windows fed the same sequence decide the same (replicas agree).
        #[test]
        fn deterministic(ids in proptest::collection::vec((0u64..50, 0u64..10_000), 0..300)) {
            let c = DedupConfig { window: 8, max_age: Some(Duration::from_nanos(500)) };
            let mut a = DedupWindow::new(c);
            let mut b = DedupWindow::new(c);
            for (id, ts) in ids {
                prop_assert_eq!(a.check(id, ts), b.check(id, ts));
            }
        }
    }
}
