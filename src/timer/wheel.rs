//! Hierarchical timing wheel: the data structure behind every sipreg timer
//! (binding expiry, GB28181 keep-alive timeout, client-transaction retransmits).
//!
//! Pure: no clock reads, no threads, no I/O. Time enters as `now_ms` (milliseconds on
//! whatever monotonic clock the caller uses; `timer::now_ms` in the server), so tests
//! drive it tick by tick or jump years ahead in one call.
//!
//! # Layout
//!
//! Time inside the wheel is counted in ticks of [`TICK_MS`]. There are six levels of
//! 64 slots; a slot of level `l` spans `64^l` ticks and the whole level `64^(l+1)`
//! ticks, so the wheel covers `64^6 = 2^36` ticks (about 21.8 years). Read a tick
//! number as base-64 digits: an item due at tick `d` while the wheel stands at tick
//! `e` lives at the level of the highest digit in which `d` and `e` differ, in the
//! slot named by `d`'s digit at that level (the XOR/leading-zeros trick from tokio's
//! `runtime/time/wheel`). When time reaches the start of an occupied slot the slot is
//! taken whole and its items are placed again, now at a lower level (a cascade); a
//! level-0 slot is exactly one tick, so taking it fires its items. Each level keeps a
//! `u64` bitmap of occupied slots, so the next slot with work is one
//! `rotate_right` + `trailing_zeros` away, whatever the number of timers.
//!
//! Deadlines beyond the wheel's range are parked in the top level and cascade again
//! every `2^36` ticks until they come in range: correct, and no separate overflow list
//! to scan.
//!
//! # Storage
//!
//! A slot is a linked list of fixed-size chunks (`Vec`s of `CHUNK` = 64 entries) drawn
//! from one pool shared by all slots; a chunk emptied by firing or cascading goes back
//! to the pool with its capacity. So inserting allocates nothing once the pool has
//! grown to the peak number of live timers, entries of a slot sit together in memory
//! (cascading a million of them streams through memory rather than chasing one
//! pointer per timer), and memory stays at the peak number of live timers.
//! One `Vec` per slot, reused by swapping, would not: buffers migrate between
//! slots and each grows to the largest slot it ever visits, so with a million
//! registrations (a level-3 slot of ~1 M entries) every slot of the wheel would end up
//! holding tens of megabytes.
//!
//! # Guarantees
//!
//! * An item inserted with `deadline_ms` later than the wheel's current time fires on
//!   the first [`Wheel::advance`] whose `now_ms` reaches the deadline rounded up to a
//!   tick: never before its deadline, and less than one tick after it.
//! * An item whose deadline is at or before the wheel's current time (the `now_ms` of
//!   the last `advance`, or of `new`) is due now: it fires on the next `advance`.
//! * Within one `advance`, items fire in order of their tick; items of the same tick
//!   (and items that were due on insertion) fire in insertion order.
//! * Insert is O(1). An `advance` costs O(items fired or cascaded + occupied slots
//!   passed), not O(ticks passed): a jump of years is cheap.
//!
//! # Bounded advances
//!
//! [`Wheel::advance_up_to`] fires at most a given number of items and says whether
//! more are due; calling it again (with the same or a later `now_ms`) carries on where
//! it stopped, so a caller can fire a huge backlog in slices and do other work in
//! between. `advance` is `advance_up_to` without a bound: one code path. Slicing
//! changes nothing about which items fire or in what order — the concatenated slices
//! are exactly what one `advance` would have fired, and items inserted between slices
//! do not reorder them. A slot is never left half taken:
//! when the budget runs out inside a slot, the slot is still emptied (cascading items
//! still move down) and its remaining due items wait, in order, in the due queue,
//! which the next slice fires first. Until the backlog is fired the wheel stands at
//! the tick of the last slot it took, behind `now_ms`; an item inserted then with a
//! deadline at or before `now_ms` takes its place by tick among the items not yet
//! fired (so a late insert does not overtake earlier deadlines), or joins the due
//! queue if the wheel has already passed its tick.
//!
//! Cancellation is not supported on purpose: items carry a generation and a stale one
//! is ignored when it fires (see the `timer` module docs), so the wheel never searches.

use std::collections::VecDeque;
use std::mem;

/// Length of one wheel tick in milliseconds.
///
/// 10 ms is fine enough for the shortest SIP timer, T1 = 500 ms (RFC 3261 §17.1.1.1;
/// Timer E starts at T1 for non-INVITE client transactions), to fire within 2 % of its
/// value. It is coarse enough to keep millions of registrations cheap: the timer thread
/// wakes at most 100 times a second however many timers are due, a million expiries
/// spread over an hour batch ~3 to a wake, and six 64-slot levels span 2^36 ticks
/// (~21.8 years) where 1 ms ticks would give ~2.2 years, so every SIP expiry stays off
/// the overflow path.
pub const TICK_MS: u64 = 10;

/// Bits of the tick number consumed per level (64 slots).
const LEVEL_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << LEVEL_BITS;
/// Mask of one level's digit.
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Levels in the wheel; 6 × 6 bits = 2^36 ticks of range.
const NUM_LEVELS: usize = 6;
/// Ticks covered by the whole wheel.
const WHEEL_TICKS: u64 = 1 << (LEVEL_BITS as usize * NUM_LEVELS);

/// Entries per storage chunk: big enough that walking a slot is mostly sequential,
/// small enough that the 384 partly filled tail chunks cost little (384 × 64 entries).
const CHUNK: usize = 64;
/// "No chunk": end of a list, or an empty slot.
const NIL: usize = usize::MAX;

/// One scheduled item and the tick it is due at (kept for cascading).
struct Entry<T> {
    tick: u64,
    item: T,
}

/// A run of up to `CHUNK` entries of one slot, or a free chunk in the pool.
struct Chunk<T> {
    /// Allocated once with capacity `CHUNK`; never pushed past it.
    entries: Vec<Entry<T>>,
    /// Next chunk of the same slot list, or of the free list.
    next: usize,
}

/// A slot: a list of chunks, appended at the tail so items keep insertion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    head: usize,
    tail: usize,
}

impl Slot {
    const EMPTY: Slot = Slot {
        head: NIL,
        tail: NIL,
    };
}

/// 64 slots and the bitmap saying which of them hold items.
struct Level {
    /// Bit `s` set ⇔ `slots[s]` is non-empty.
    occupied: u64,
    slots: [Slot; SLOTS],
}

/// The next slot that needs processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expiration {
    level: usize,
    slot: usize,
    /// The tick at which the slot starts: its items fire (level 0) or cascade then.
    tick: u64,
}

/// A hierarchical timing wheel of items `T`; see the module docs.
pub struct Wheel<T> {
    levels: [Level; NUM_LEVELS],
    /// Chunk pool: chunks in slot lists plus the free list starting at `free`.
    chunks: Vec<Chunk<T>>,
    free: usize,
    /// Items due now, fired first by the next advance: those inserted with a deadline
    /// the wheel had already passed, and those left over when a bounded advance ran
    /// out of budget inside a slot. A queue: a slice fires its front. Drained in
    /// place, so its capacity is kept too.
    due: VecDeque<T>,
    /// The tick the wheel stands at: every item in a slot at or before it has fired
    /// or is in `due`. Equal to `now_ms / TICK_MS` except while a bounded advance has
    /// more to do, when it is the tick of the last slot taken.
    elapsed: u64,
    /// `now_ms` of the last `advance` (or of `new`); never decreases.
    now_ms: u64,
    /// Items in the wheel, including `due`.
    len: usize,
}

impl<T> Wheel<T> {
    /// An empty wheel standing at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Wheel {
            levels: std::array::from_fn(|_| Level {
                occupied: 0,
                slots: [Slot::EMPTY; SLOTS],
            }),
            chunks: Vec::new(),
            free: NIL,
            due: VecDeque::new(),
            elapsed: now_ms / TICK_MS,
            now_ms,
            len: 0,
        }
    }

    /// Number of items waiting to fire.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no item is waiting to fire.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` to fire at `deadline_ms`. A deadline at or before the wheel's
    /// current time fires on the next [`advance`](Self::advance) (see the module docs
    /// for its order when a bounded advance has items left to fire).
    pub fn insert(&mut self, deadline_ms: u64, item: T) {
        self.len += 1;
        let tick = if deadline_ms <= self.now_ms {
            // Rounding up may pass now_ms; clamp so the item fires in this advance.
            let tick = tick_ceil(deadline_ms).min(self.now_ms / TICK_MS);
            if tick <= self.elapsed {
                self.due.push_back(item);
                return;
            }
            // Only between slices of a bounded advance: the wheel is behind now_ms,
            // and the item waits for its turn among the due slots.
            tick
        } else {
            tick_ceil(deadline_ms)
        };
        // A future deadline rounds up past now_ms ≥ elapsed·TICK; a clamped one was
        // just checked: either way the tick lies ahead of the wheel.
        debug_assert!(
            tick > self.elapsed,
            "deadline {deadline_ms} ms mapped to past tick {tick} (elapsed {})",
            self.elapsed
        );
        self.place(Entry { tick, item });
    }

    /// Moves the wheel to `now_ms` and calls `fire` for every item now due, in tick
    /// order. A `now_ms` earlier than the wheel's current time is treated as the current
    /// time (the wheel never goes back).
    pub fn advance(&mut self, now_ms: u64, fire: impl FnMut(T)) {
        let more = self.advance_up_to(now_ms, usize::MAX, fire);
        debug_assert!(!more, "an unbounded advance left work behind");
    }

    /// Like [`advance`](Self::advance), but calls `fire` for at most `max_items` items
    /// (a slice) and returns `true` if the wheel has more to do at `now_ms` — due items,
    /// or a due slot to cascade — in which case the next call (typically with the same
    /// or a later `now_ms`) carries on where this one stopped. The slices together fire
    /// exactly the items, in exactly the order, of one unbounded `advance`.
    /// `next_deadline_ms` stays at or before `now_ms` while this returns `true`.
    pub fn advance_up_to(
        &mut self,
        now_ms: u64,
        max_items: usize,
        mut fire: impl FnMut(T),
    ) -> bool {
        let now_ms = now_ms.max(self.now_ms);
        self.now_ms = now_ms;
        let now_tick = now_ms / TICK_MS;
        debug_assert!(now_tick >= self.elapsed, "wheel went back in time");

        // Due items have ticks at or before `elapsed`, earlier than anything still in
        // the levels, so they go first.
        let n = self.due.len().min(max_items);
        self.len -= n;
        for item in self.due.drain(..n) {
            fire(item);
        }
        if !self.due.is_empty() {
            return true;
        }

        let mut budget = max_items - n;
        while let Some(exp) = self.next_expiration() {
            if exp.tick > now_tick {
                break;
            }
            if budget == 0 {
                // Stop before taking the slot: `elapsed` stays at the last slot taken.
                return true;
            }
            budget = self.process(exp, budget, &mut fire);
            if !self.due.is_empty() {
                // Out of budget inside the slot; the rest of it waits in `due`.
                return true;
            }
        }
        // Nothing occupied starts at or before now_tick, so every item keeps its level
        // and slot when the wheel jumps to now.
        self.elapsed = now_tick;
        false
    }

    /// The earliest time at which an [`advance`](Self::advance) could fire something,
    /// or `None` when the wheel is empty. Exact when the next item sits in level 0;
    /// otherwise the start of the slot it will cascade from, which is earlier: never
    /// late, so it is a safe bound for sleeping. May be ≤ the current time when items
    /// are already due, as it always is while a bounded advance has more to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if !self.due.is_empty() {
            return Some(self.now_ms);
        }
        self.next_expiration()
            .map(|exp| exp.tick.saturating_mul(TICK_MS))
    }

    /// Appends an entry to the slot its tick maps to from `elapsed`.
    fn place(&mut self, entry: Entry<T>) {
        debug_assert!(
            entry.tick > self.elapsed,
            "placing tick {} at or before elapsed {}",
            entry.tick,
            self.elapsed
        );
        let level = level_for(self.elapsed, entry.tick);
        let slot = slot_for(entry.tick, level);
        let Slot { head, tail } = self.levels[level].slots[slot];
        let tail = if tail != NIL && self.chunks[tail].entries.len() < CHUNK {
            tail
        } else {
            let fresh = self.alloc_chunk();
            if tail == NIL {
                debug_assert_eq!(head, NIL, "slot with a head but no tail");
                self.levels[level].slots[slot] = Slot {
                    head: fresh,
                    tail: fresh,
                };
                self.levels[level].occupied |= 1 << slot;
            } else {
                self.chunks[tail].next = fresh;
                self.levels[level].slots[slot].tail = fresh;
            }
            fresh
        };
        let entries = &mut self.chunks[tail].entries;
        debug_assert!(entries.len() < entries.capacity(), "chunk would reallocate");
        entries.push(entry);
    }

    /// An empty chunk, from the free list if it has one.
    fn alloc_chunk(&mut self) -> usize {
        if self.free != NIL {
            let c = self.free;
            self.free = self.chunks[c].next;
            self.chunks[c].next = NIL;
            debug_assert!(
                self.chunks[c].entries.is_empty(),
                "free chunk {c} holds items"
            );
            c
        } else {
            // The pool grows to the peak number of live timers, then stops.
            self.chunks.push(Chunk {
                entries: Vec::with_capacity(CHUNK),
                next: NIL,
            });
            self.chunks.len() - 1
        }
    }

    /// The earliest occupied slot. Lower levels always come first: a level only holds
    /// ticks inside the current slot of the level above, which all lie before that
    /// level's next slot; so the first level with anything occupied has the answer.
    fn next_expiration(&self) -> Option<Expiration> {
        let exp = self
            .levels
            .iter()
            .enumerate()
            .find_map(|(level, lvl)| next_expiration(level, lvl.occupied, self.elapsed));
        debug_assert!(
            exp.is_none_or(|e| (0..NUM_LEVELS)
                .filter_map(|l| next_expiration(l, self.levels[l].occupied, self.elapsed))
                .all(|o| o.tick >= e.tick)),
            "a higher level holds an earlier slot than {exp:?}"
        );
        exp
    }

    /// Takes the slot of `exp` and fires or cascades each of its items. Fires at most
    /// `budget` items and returns what is left of it; due items past the budget go to
    /// `due` in slot order, so the slot is always emptied whole.
    fn process(&mut self, exp: Expiration, mut budget: usize, fire: &mut impl FnMut(T)) -> usize {
        debug_assert!(exp.tick >= self.elapsed, "processing a past slot {exp:?}");
        self.elapsed = exp.tick;
        let lvl = &mut self.levels[exp.level];
        lvl.occupied &= !(1 << exp.slot);
        // Take the slot before touching its items: a top-level item beyond the wheel's
        // range goes back into this very slot, which must be a fresh list by then.
        let taken = mem::replace(&mut lvl.slots[exp.slot], Slot::EMPTY);
        debug_assert_ne!(taken.head, NIL, "occupied bit set on empty slot {exp:?}");
        let mut c = taken.head;
        while c != NIL {
            // Take the chunk's entries out (the placeholder `Vec::new()` does not
            // allocate) so placing can borrow the pool; the buffer goes back after.
            let mut entries = mem::take(&mut self.chunks[c].entries);
            let next = self.chunks[c].next;
            for entry in entries.drain(..) {
                if entry.tick <= self.elapsed {
                    debug_assert!(
                        exp.level > 0 || entry.tick == exp.tick,
                        "level-0 slot {exp:?} held tick {}",
                        entry.tick
                    );
                    if budget > 0 {
                        budget -= 1;
                        self.len -= 1;
                        fire(entry.item);
                    } else {
                        // Still counted in `len`: it is in the wheel, just in `due`.
                        self.due.push_back(entry.item);
                    }
                } else {
                    debug_assert!(exp.level > 0, "level-0 slot {exp:?} held a later tick");
                    self.place(entry);
                }
            }
            // Back to the pool with its capacity, ready for the next cascade step.
            self.chunks[c] = Chunk {
                entries,
                next: self.free,
            };
            self.free = c;
            c = next;
        }
        budget
    }
}

impl<T> std::fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("len", &self.len)
            .field("now_ms", &self.now_ms)
            .field("elapsed_tick", &self.elapsed)
            .field("chunks", &self.chunks.len())
            .field("next_deadline_ms", &self.next_deadline_ms())
            .finish_non_exhaustive()
    }
}

/// `ms` rounded up to a whole tick, without overflowing at `u64::MAX`.
fn tick_ceil(ms: u64) -> u64 {
    ms / TICK_MS + u64::from(ms % TICK_MS != 0)
}

/// The level for an item due at `tick` when the wheel stands at `elapsed`: the index of
/// the highest base-64 digit in which they differ, capped at the top level for ticks
/// beyond the wheel's range.
fn level_for(elapsed: u64, tick: u64) -> usize {
    // OR-ing in the level-0 digit makes "differ only in digit 0" (or not at all) land
    // on level 0 instead of leading_zeros = 64.
    let mut masked = (elapsed ^ tick) | SLOT_MASK;
    if masked >= WHEEL_TICKS {
        masked = WHEEL_TICKS - 1;
    }
    let significant = 63 - masked.leading_zeros();
    (significant / LEVEL_BITS) as usize
}

/// The slot of `tick` at `level`: its base-64 digit there.
fn slot_for(tick: u64, level: usize) -> usize {
    ((tick >> (level as u32 * LEVEL_BITS)) & SLOT_MASK) as usize
}

/// Ticks spanned by one slot of `level`.
fn slot_range(level: usize) -> u64 {
    1 << (level as u32 * LEVEL_BITS)
}

/// Ticks spanned by the whole of `level`.
fn level_range(level: usize) -> u64 {
    1 << ((level as u32 + 1) * LEVEL_BITS)
}

/// The first occupied slot of `level` at or after `elapsed`'s own slot, going round,
/// and the tick at which it starts.
fn next_expiration(level: usize, occupied: u64, elapsed: u64) -> Option<Expiration> {
    if occupied == 0 {
        return None;
    }
    // Rotate so bit 0 is the slot after the current one; trailing zeros count slots
    // until the next occupied one, wrapping past 63. The current slot comes last: only
    // the top level can hold items there (parked beyond the range, due a whole trip
    // round later), and an occupied later slot of this trip must win over them.
    let now_slot = slot_for(elapsed, level) as u32;
    debug_assert!(
        level == NUM_LEVELS - 1 || occupied & (1 << now_slot) == 0,
        "level {level} holds items in its current slot {now_slot}"
    );
    let from = (now_slot + 1) % SLOTS as u32;
    let slot = ((occupied.rotate_right(from).trailing_zeros() + from) as usize) % SLOTS;
    let range = level_range(level);
    let level_start = elapsed & !(range - 1);
    let mut tick = level_start + slot as u64 * slot_range(level);
    if tick <= elapsed {
        // Only the top level wraps round: it parks ticks beyond the wheel's range,
        // whose slot may be the current one or behind it.
        debug_assert_eq!(
            level,
            NUM_LEVELS - 1,
            "level {level} slot {slot} behind {elapsed}"
        );
        tick += range;
    }
    Some(Expiration { level, slot, tick })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: u64 = 1000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;

    impl<T> Wheel<T> {
        /// Checks every structural invariant; called after each step of the tests.
        fn check_invariants(&self) {
            let mut count = self.due.len();
            let mut chunks_seen = vec![false; self.chunks.len()];
            let mut mark = |c: usize| {
                assert!(!chunks_seen[c], "chunk {c} linked twice");
                chunks_seen[c] = true;
            };
            for (level, lvl) in self.levels.iter().enumerate() {
                for (slot, list) in lvl.slots.iter().enumerate() {
                    assert_eq!(
                        lvl.occupied & (1 << slot) != 0,
                        list.head != NIL,
                        "bitmap out of sync at level {level} slot {slot}"
                    );
                    assert_eq!(list.head == NIL, list.tail == NIL);
                    let mut c = list.head;
                    while c != NIL {
                        mark(c);
                        let chunk = &self.chunks[c];
                        // Only the tail may be partly filled; none is empty.
                        assert!(!chunk.entries.is_empty(), "empty chunk in a slot");
                        assert!(c == list.tail || chunk.entries.len() == CHUNK);
                        assert_eq!(chunk.entries.capacity(), CHUNK, "chunk reallocated");
                        assert!(c != list.tail || chunk.next == NIL);
                        for e in &chunk.entries {
                            assert!(e.tick > self.elapsed, "stale tick {} in wheel", e.tick);
                            assert_eq!(level_for(self.elapsed, e.tick), level, "tick {}", e.tick);
                            assert_eq!(slot_for(e.tick, level), slot, "tick {}", e.tick);
                        }
                        count += chunk.entries.len();
                        c = chunk.next;
                    }
                }
            }
            let mut c = self.free;
            while c != NIL {
                mark(c);
                assert!(self.chunks[c].entries.is_empty(), "free chunk holds items");
                assert_eq!(self.chunks[c].entries.capacity(), CHUNK);
                c = self.chunks[c].next;
            }
            assert!(
                chunks_seen.iter().all(|&s| s),
                "a chunk leaked from the pool"
            );
            assert_eq!(count, self.len);
            let now_tick = self.now_ms / TICK_MS;
            assert!(
                self.elapsed <= now_tick,
                "elapsed {} past now",
                self.elapsed
            );
            if self.elapsed < now_tick {
                // Only part-way through a bounded advance, which must have more to do.
                assert!(
                    !self.due.is_empty()
                        || self.next_expiration().is_some_and(|e| e.tick <= now_tick),
                    "wheel stands behind now ({} < {now_tick}) with nothing due",
                    self.elapsed
                );
            }
        }

        /// Buffers held by the wheel; only changes when something allocates.
        fn footprint(&self) -> (usize, usize) {
            (self.chunks.len(), self.due.capacity())
        }
    }

    fn fired(w: &mut Wheel<u64>, now_ms: u64) -> Vec<u64> {
        let mut out = Vec::new();
        w.advance(now_ms, |x| out.push(x));
        w.check_invariants();
        out
    }

    /// One bounded slice, checked: `len` drops by what fired, a slice that reports
    /// more to do is full, and while work remains the wheel says it is due now.
    fn slice(w: &mut Wheel<u64>, now_ms: u64, budget: usize) -> (Vec<u64>, bool) {
        let before = w.len();
        let mut out = Vec::new();
        let more = w.advance_up_to(now_ms, budget, |x| out.push(x));
        w.check_invariants();
        assert!(out.len() <= budget, "slice of {budget} fired {}", out.len());
        assert_eq!(w.len(), before - out.len(), "len after a slice");
        if more {
            assert_eq!(out.len(), budget, "a slice stopped early");
            assert!(
                w.next_deadline_ms().is_some_and(|d| d <= now_ms),
                "work left but next deadline {:?} after now {now_ms}",
                w.next_deadline_ms()
            );
        }
        (out, more)
    }

    /// Advances to `now_ms` in slices of the sizes `budgets` yields, to the end.
    fn fired_in_slices(
        w: &mut Wheel<u64>,
        now_ms: u64,
        mut budgets: impl FnMut() -> usize,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        loop {
            let (got, more) = slice(w, now_ms, budgets());
            out.extend(got);
            if !more {
                return out;
            }
        }
    }

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    // ---- slot and level math ----

    #[test]
    fn tick_ceil_rounds_up_without_overflow() {
        assert_eq!(tick_ceil(0), 0);
        assert_eq!(tick_ceil(1), 1);
        assert_eq!(tick_ceil(9), 1);
        assert_eq!(tick_ceil(10), 1);
        assert_eq!(tick_ceil(11), 2);
        assert_eq!(tick_ceil(500), 50);
        assert_eq!(tick_ceil(u64::MAX), u64::MAX / TICK_MS + 1);
    }

    #[test]
    fn level_for_every_bit_boundary() {
        let elapsed_values = [
            0,
            1,
            63,
            64,
            4095,
            0x5555_5555_5555,
            WHEEL_TICKS - 1,
            WHEEL_TICKS,
            (1 << 60) - 1,
        ];
        for &e in &elapsed_values {
            for bit in 0..64u32 {
                let expected = ((bit / LEVEL_BITS) as usize).min(NUM_LEVELS - 1);
                // The highest differing bit decides, whatever the lower bits do.
                let flipped = e ^ (1 << bit);
                let low = (1u64 << bit) - 1;
                for tick in [flipped, flipped | low, flipped & !low] {
                    assert_eq!(
                        level_for(e, tick),
                        expected,
                        "elapsed {e:#x} tick {tick:#x} (bit {bit})"
                    );
                    assert_eq!(level_for(tick, e), expected, "level_for is symmetric");
                }
            }
            assert_eq!(level_for(e, e), 0, "same tick is level 0");
        }
    }

    #[test]
    fn level_for_boundaries_from_zero() {
        for level in 0..NUM_LEVELS {
            let first = if level == 0 { 1 } else { slot_range(level) };
            let last = level_range(level) - 1;
            assert_eq!(level_for(0, first), level, "first tick of level {level}");
            assert_eq!(level_for(0, last), level, "last tick of level {level}");
            if level + 1 < NUM_LEVELS {
                assert_eq!(level_for(0, last + 1), level + 1, "past level {level}");
            }
        }
        // Beyond the wheel: capped at the top level.
        assert_eq!(level_for(0, WHEEL_TICKS), NUM_LEVELS - 1);
        assert_eq!(level_for(0, u64::MAX), NUM_LEVELS - 1);
        // Crossing a digit boundary one tick ahead goes up a level: 63 → 64 differs in
        // digit 1 and must cascade at 64.
        assert_eq!(level_for(63, 64), 1);
        assert_eq!(level_for(4095, 4096), 2);
        assert_eq!(level_for(64, 127), 0);
    }

    #[test]
    fn slot_for_every_digit() {
        for level in 0..NUM_LEVELS {
            for digit in 0..SLOTS as u64 {
                let shift = level as u32 * LEVEL_BITS;
                let base = digit << shift;
                let noise_below = (1u64 << shift) - 1;
                let noise_above = 0x2A << (shift + LEVEL_BITS);
                for tick in [base, base | noise_below, base | noise_above] {
                    assert_eq!(slot_for(tick, level), digit as usize, "tick {tick:#x}");
                }
            }
            assert_eq!(slot_range(level) * SLOTS as u64, level_range(level));
        }
        assert_eq!(level_range(NUM_LEVELS - 1), WHEEL_TICKS);
    }

    #[test]
    fn next_expiration_every_slot_pair() {
        // Elapsed has digit `now` at `level` and arbitrary digits elsewhere; every
        // single occupied slot, and every pair, must give the nearest slot start.
        for level in 0..NUM_LEVELS {
            let shift = level as u32 * LEVEL_BITS;
            let above = 0b1011 << (shift + LEVEL_BITS);
            let below = (1u64 << shift) / 3;
            for now in 0..SLOTS as u64 {
                let elapsed = above | (now << shift) | below;
                let level_start = elapsed & !(level_range(level) - 1);
                // The start tick of `slot`, or None where no item can be: lower levels
                // never hold slots at or behind the current one; the top level wraps.
                let start_of = |slot: u64| {
                    let start = level_start + slot * slot_range(level);
                    if start > elapsed {
                        Some(start)
                    } else if level == NUM_LEVELS - 1 {
                        Some(start + level_range(level))
                    } else {
                        None
                    }
                };
                for a in 0..SLOTS as u64 {
                    let Some(start_a) = start_of(a) else { continue };
                    let got = next_expiration(level, 1 << a, elapsed).expect("occupied");
                    assert_eq!(
                        got,
                        Expiration {
                            level,
                            slot: a as usize,
                            tick: start_a
                        },
                        "level {level} now {now} slot {a}"
                    );
                    for b in 0..SLOTS as u64 {
                        let Some(start_b) = start_of(b) else { continue };
                        let (slot, tick) = if start_a <= start_b {
                            (a, start_a)
                        } else {
                            (b, start_b)
                        };
                        let two =
                            next_expiration(level, (1 << a) | (1 << b), elapsed).expect("occupied");
                        assert_eq!((two.slot, two.tick), (slot as usize, tick), "slots {a},{b}");
                    }
                }
            }
            assert_eq!(next_expiration(level, 0, 12345), None);
        }
    }

    // ---- firing time and order ----

    #[test]
    fn every_millisecond_deadline_fires_within_one_tick() {
        // Every deadline from 1 ms to 45 s (crossing the level-0/1/2 boundaries at
        // 640 ms and 40.96 s) inserted at once, then time walks 1 ms at a time.
        for start in [0, 7, 639, 640, 40_959] {
            let span = 45 * SECOND;
            let mut w = Wheel::new(start);
            for d in start + 1..=start + span {
                w.insert(d, d);
            }
            w.check_invariants();
            let mut expect_next = start + 1;
            for now in start + 1..=start + span + TICK_MS {
                let mut fired_now = 0;
                w.advance(now, |d| {
                    assert!(d <= now, "deadline {d} fired early at {now}");
                    assert!(now < d + TICK_MS, "deadline {d} fired late at {now}");
                    assert_eq!(d, expect_next, "out of order at {now}");
                    expect_next += 1;
                    fired_now += 1;
                });
                // Firing happens exactly on tick boundaries.
                assert!(
                    fired_now == 0 || now % TICK_MS == 0,
                    "fired off-tick at {now}"
                );
                if now % 997 == 0 {
                    w.check_invariants();
                }
            }
            assert!(w.is_empty(), "start {start}: {} left", w.len());
            assert_eq!(expect_next, start + span + 1);
        }
    }

    #[test]
    fn fires_in_tick_order_then_insertion_order() {
        let mut w = Wheel::new(0);
        // Deadlines out of order; 105 and 101 share tick 11, 200 and 191 tick 20.
        let deadlines = [5000, 105, 30, 200, 101, 64 * 10, 191, 1, 10, 90_000];
        for (i, &d) in deadlines.iter().enumerate() {
            w.insert(d, i as u64);
        }
        let order = fired(&mut w, 100_000);
        let ticks: Vec<u64> = order
            .iter()
            .map(|&i| tick_ceil(deadlines[i as usize]))
            .collect();
        assert!(ticks.windows(2).all(|p| p[0] <= p[1]), "{ticks:?}");
        // 1 and 10 share tick 1; 105/101 tick 11; 200/191 tick 20.
        assert_eq!(order, vec![7, 8, 2, 1, 4, 3, 6, 5, 0, 9]);
        assert!(w.is_empty());
    }

    #[test]
    fn ten_thousand_timers_in_one_slot() {
        for deadline in [55, 12 * HOUR + 5] {
            let mut w = Wheel::new(0);
            for i in 0..10_000 {
                w.insert(deadline, i);
            }
            assert_eq!(w.len(), 10_000);
            assert!(fired(&mut w, deadline - 1).is_empty());
            let out = fired(&mut w, tick_ceil(deadline) * TICK_MS);
            assert_eq!(out, (0..10_000).collect::<Vec<_>>(), "insertion order");
            assert!(w.is_empty());
            assert_eq!(w.next_deadline_ms(), None);
        }
    }

    #[test]
    fn far_deadlines_cross_every_level() {
        let far = [
            MINUTE,
            HOUR,
            5 * HOUR,
            DAY,
            13 * DAY,
            400 * DAY,
            YEAR,
            10 * YEAR,
            21 * YEAR,
            // Beyond the wheel's 2^36-tick range: parked at the top and re-cascaded.
            WHEEL_TICKS * TICK_MS,
            30 * YEAR,
            100 * YEAR,
        ];
        for start in [0, 123_456_789] {
            for &delay in &far {
                let d = start + delay;
                let mut w = Wheel::new(start);
                w.insert(d, d);
                w.check_invariants();
                // Walk as the timer thread would: sleep until next_deadline_ms, advance.
                let mut now = start;
                let mut wakes = 0;
                let mut out = Vec::new();
                while let Some(next) = w.next_deadline_ms() {
                    assert!(next <= tick_ceil(d) * TICK_MS, "late bound {next} for {d}");
                    assert!(next > now, "no progress at {now}");
                    now = next;
                    w.advance(now, |x| out.push(x));
                    w.check_invariants();
                    wakes += 1;
                    assert!(wakes < 100, "too many wakes for {delay}");
                }
                assert_eq!(out, vec![d]);
                assert!(now >= d && now < d + TICK_MS, "fired at {now} for {d}");
                // One wake per level passed, plus one per trip round the top level.
                let trips = (tick_ceil(delay) / WHEEL_TICKS) as usize;
                assert!(wakes <= NUM_LEVELS + 2 + trips, "{wakes} wakes for {delay}");
            }
        }
    }

    #[test]
    fn far_deadline_does_not_fire_early_in_one_jump() {
        for &delay in &[HOUR, DAY, YEAR, 21 * YEAR, 30 * YEAR] {
            let mut w = Wheel::new(0);
            w.insert(delay, 1);
            assert!(fired(&mut w, delay - 1).is_empty(), "{delay} fired early");
            assert_eq!(fired(&mut w, delay), vec![1]);
        }
    }

    #[test]
    fn past_and_present_deadlines_fire_on_next_advance() {
        let mut w = Wheel::new(1005);
        w.insert(0, 1);
        w.insert(1005, 2); // exactly now, not tick-aligned
        w.insert(500, 3);
        w.insert(1006, 4); // future: tick 101, fires at 1010
        assert_eq!(w.len(), 4);
        assert_eq!(w.next_deadline_ms(), Some(1005));
        // Same now: the due ones fire in insertion order, the future one waits.
        assert_eq!(fired(&mut w, 1005), vec![1, 2, 3]);
        assert_eq!(w.next_deadline_ms(), Some(1010));
        assert!(fired(&mut w, 1009).is_empty());
        assert_eq!(fired(&mut w, 1010), vec![4]);
        assert!(w.is_empty());
    }

    #[test]
    fn due_items_fire_before_wheel_items() {
        let mut w = Wheel::new(0);
        w.insert(50, 1);
        w.advance(40, |_| panic!("nothing due at 40"));
        w.insert(30, 2); // already passed
        assert_eq!(fired(&mut w, 50), vec![2, 1]);
    }

    #[test]
    fn insert_after_partial_advance_at_every_offset() {
        // The wheel stands at odd places (mid-slot, just before and after level
        // boundaries); new items must still fire on time relative to it.
        for now in [
            1, 9, 10, 11, 629, 630, 639, 640, 641, 40_950, 40_960, 40_961,
        ] {
            let mut w = Wheel::new(0);
            w.insert(1_000_000, 0); // something far to cascade through meanwhile
            assert!(fired(&mut w, now).is_empty());
            for delta in 1..=700 {
                w.insert(now + delta, now + delta);
            }
            w.check_invariants();
            let mut expected = now + 1;
            for t in now + 1..=now + 700 + TICK_MS {
                w.advance(t, |d| {
                    assert_eq!(d, expected);
                    assert!(d <= t && t < d + TICK_MS, "{d} fired at {t}");
                    expected += 1;
                });
            }
            assert_eq!(expected, now + 701);
            assert_eq!(w.len(), 1);
            assert_eq!(fired(&mut w, 1_000_000), vec![0]);
        }
    }

    #[test]
    fn insert_between_advances_keeps_fifo_in_a_cascaded_slot() {
        let mut w = Wheel::new(0);
        // 1 goes to level 1 now; 2 (same tick) is inserted after the level-1 slot has
        // cascaded, straight into level 0. 1 must still fire first.
        w.insert(700, 1);
        assert!(fired(&mut w, 645).is_empty());
        w.insert(700, 2);
        w.insert(685, 3);
        assert_eq!(fired(&mut w, 700), vec![3, 1, 2]);
    }

    #[test]
    fn rearming_from_fired_items_keeps_order() {
        // The retransmit pattern: each firing schedules the next one (doubling, as
        // RFC 3261 Timer E does, capped at T2 = 4 s).
        let mut w = Wheel::new(0);
        let mut interval = 500;
        w.insert(interval, interval);
        let mut now = 0;
        let mut fires = Vec::new();
        while fires.len() < 10 {
            now += TICK_MS;
            let mut got = Vec::new();
            w.advance(now, |x| got.push(x));
            for _ in got {
                fires.push(now);
                interval = (interval * 2).min(4000);
                w.insert(now + interval, interval);
            }
        }
        let gaps: Vec<u64> = fires.windows(2).map(|p| p[1] - p[0]).collect();
        assert_eq!(fires[0], 500);
        assert_eq!(
            gaps,
            vec![1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000]
        );
    }

    // ---- bounded advance ----

    #[test]
    fn sliced_advance_fires_the_same_sequence() {
        // Many items over every level: random deadlines up to three years, big slots
        // at level 0 and level 2, and items exactly at the start of a higher-level
        // slot, which fire straight out of the cascade. One wheel advances unbounded,
        // the other in random slices (often cut inside a slot); they must agree.
        let start = 42;
        let mut a = Wheel::new(start);
        let mut b = Wheel::new(start);
        let mut x: u64 = 0x0123_4567_89AB_CDEF;
        let mut deadlines = Vec::new();
        for _ in 0..20_000 {
            deadlines.push(start + xorshift(&mut x) % (3 * YEAR));
        }
        deadlines.extend(std::iter::repeat_n(start + 55, 5_000)); // one level-0 tick
        deadlines.extend(std::iter::repeat_n(12 * HOUR + 5, 5_000)); // level 3, cascades
        for level in 1..NUM_LEVELS {
            // Tick multiples of 64^level: the slot's own start tick.
            for k in 1..40 {
                deadlines.push(k * slot_range(level) * TICK_MS);
            }
        }
        for (i, &d) in deadlines.iter().enumerate() {
            a.insert(d, i as u64);
            b.insert(d, i as u64);
        }
        let mut budget = || match xorshift(&mut x) % 4 {
            0 => 1,
            1 => 1 + (x >> 8) as usize % 64,
            _ => 1 + (x >> 8) as usize % 3000,
        };
        let (mut total, mut rearmed) = (0, 0);
        for now in [
            start,
            start + 55,
            start + 700,
            start + 50_000,
            HOUR,
            13 * HOUR,
            DAY,
            YEAR,
            start + 3 * YEAR + TICK_MS,
        ] {
            let want = fired(&mut a, now);
            let got = fired_in_slices(&mut b, now, &mut budget);
            assert_eq!(got, want, "at {now}");
            assert_eq!(b.len(), a.len());
            assert_eq!(b.next_deadline_ms(), a.next_deadline_ms());
            total += got.len();
            // Re-arm a few of what fired, identically in both, between advances.
            for &i in got.iter().step_by(97) {
                a.insert(now + i % DAY, i);
                b.insert(now + i % DAY, i);
                rearmed += 1;
            }
        }
        assert_eq!(total, deadlines.len() + rearmed - a.len());
        let end = start + 30 * YEAR; // past the level-5 slot starts (~13 years)
        assert_eq!(
            fired_in_slices(&mut b, end, &mut budget),
            fired(&mut a, end)
        );
        assert!(b.is_empty());
    }

    #[test]
    fn slot_cut_by_the_budget_finishes_before_late_inserts() {
        let mut w = Wheel::new(0);
        for i in 0..5 {
            w.insert(50, i);
        }
        assert_eq!(slice(&mut w, 50, 2), (vec![0, 1], true));
        assert_eq!(w.len(), 3, "the rest of the slot waits in due");
        w.insert(0, 9); // already passed: queued behind the rest of the slot
        assert_eq!(slice(&mut w, 50, 2), (vec![2, 3], true));
        assert_eq!(slice(&mut w, 50, 2), (vec![4, 9], false));
        assert!(w.is_empty());
        assert_eq!(w.next_deadline_ms(), None);
    }

    #[test]
    fn items_inserted_between_slices_fire_in_tick_order() {
        // Ten items on ticks 1..=10, the wheel jumps to 100 ms: all due, fired in
        // slices. Items inserted between slices with passed deadlines fire in this
        // advance, by tick among the items not yet fired; later ones wait.
        let mut w = Wheel::new(0);
        for i in 0..10 {
            w.insert(10 + i * 10, i);
        }
        assert_eq!(slice(&mut w, 100, 3), (vec![0, 1, 2], true));
        w.insert(5, 100); // tick 1: already passed, due first
        w.insert(65, 101); // tick 7: after item 6, inserted earlier on the same tick
        w.insert(100, 102); // tick 10 = now: last
        w.insert(97, 103); // tick 10 too, after 102
        w.insert(101, 104); // after now: the next advance
        assert_eq!(w.len(), 12);
        assert_eq!(
            fired_in_slices(&mut w, 100, || 2),
            vec![100, 3, 4, 5, 6, 101, 7, 8, 9, 102, 103]
        );
        assert_eq!(w.next_deadline_ms(), Some(110));
        assert_eq!(fired(&mut w, 110), vec![104]);
    }

    #[test]
    fn zero_budget_fires_nothing_but_reports_due_work() {
        let mut w = Wheel::new(0);
        assert_eq!(slice(&mut w, 0, 0), (vec![], false), "empty wheel");
        w.insert(30, 1);
        w.insert(HOUR, 2);
        assert_eq!(slice(&mut w, 20, 0), (vec![], false), "nothing due yet");
        assert_eq!(slice(&mut w, 40, 0), (vec![], true));
        assert_eq!(slice(&mut w, 40, 1), (vec![1], false));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn large_jump_fires_everything_in_order() {
        let mut w = Wheel::new(42);
        let mut deadlines = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = 42 + x % (3 * YEAR) + i % 3;
            deadlines.push(d);
            w.insert(d, d);
        }
        let out = fired(&mut w, 42 + 3 * YEAR + 10);
        assert_eq!(out.len(), deadlines.len());
        let ticks: Vec<u64> = out.iter().map(|&d| tick_ceil(d)).collect();
        assert!(
            ticks.windows(2).all(|p| p[0] <= p[1]),
            "order across levels"
        );
        deadlines.sort_unstable();
        let mut sorted_out = out.clone();
        sorted_out.sort_unstable();
        assert_eq!(sorted_out, deadlines);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline_ms(), None);
    }

    #[test]
    fn time_going_back_is_ignored() {
        let mut w = Wheel::new(1000);
        w.insert(1500, 1);
        assert!(fired(&mut w, 1200).is_empty());
        assert!(fired(&mut w, 100).is_empty(), "earlier now is clamped");
        w.insert(1100, 2); // before the wheel's time: due now
        assert_eq!(fired(&mut w, 900), vec![2]);
        assert_eq!(fired(&mut w, 1500), vec![1]);
    }

    #[test]
    fn len_and_next_deadline_track_contents() {
        let mut w: Wheel<u64> = Wheel::new(0);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline_ms(), None);
        w.insert(25, 1);
        w.insert(HOUR, 2);
        assert_eq!(w.len(), 2);
        assert_eq!(w.next_deadline_ms(), Some(30), "level-0 bound is exact");
        assert_eq!(fired(&mut w, 30), vec![1]);
        assert_eq!(w.len(), 1);
        let bound = w.next_deadline_ms().expect("one left");
        assert!(bound > 30 && bound <= HOUR, "cascade bound {bound}");
        assert_eq!(fired(&mut w, HOUR), vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn parked_item_in_current_top_slot_does_not_hide_a_nearer_one() {
        // Regression (found by the property test): an item exactly one wheel range
        // ahead is parked in the top level's current slot; the scan used to start at
        // that slot and report it (a full trip later) before a nearer top-level slot.
        let mut w = Wheel::new(0);
        let near = 15 * (WHEEL_TICKS / 64) * TICK_MS - 9; // top-level slot 15
        let parked = WHEEL_TICKS * TICK_MS - 9; // tick 2^36: slot 0, beyond range
        w.insert(near, 1);
        w.insert(parked, 2);
        w.check_invariants();
        assert_eq!(
            w.next_deadline_ms(),
            Some(15 * (WHEEL_TICKS / 64) * TICK_MS)
        );
        assert_eq!(fired(&mut w, near + 9), vec![1]);
        assert_eq!(fired(&mut w, parked + 9), vec![2]);
    }

    #[test]
    fn maximal_deadline_is_parked_not_lost() {
        let mut w = Wheel::new(0);
        w.insert(u64::MAX, 1);
        w.insert(5, 2);
        assert_eq!(fired(&mut w, 100 * YEAR), vec![2]);
        assert_eq!(w.len(), 1);
        assert!(w.next_deadline_ms().is_some_and(|d| d > 100 * YEAR));
    }

    #[test]
    fn steady_state_allocates_nothing() {
        // 60 000 registrations refreshing every 60 s, 10 per tick. After a warm-up the
        // chunk pool has reached the working-set size; from then on no chunk is added
        // and none reallocates (check_invariants checks every chunk's capacity), so
        // insert, cascade and fire allocate nothing.
        let period = 60 * SECOND;
        let per_tick = 10;
        let mut w = Wheel::new(0);
        let mut id = 0u64;
        for tick in 0..period / TICK_MS {
            for _ in 0..per_tick {
                w.insert(tick * TICK_MS + period, id);
                id += 1;
            }
        }
        let live = id as usize;
        let mut rearm = Vec::with_capacity(1024);
        let mut run = |w: &mut Wheel<u64>, from: u64, to: u64| {
            let mut now = from;
            while now < to {
                now += TICK_MS;
                w.advance(now, |x| rearm.push(x));
                for x in rearm.drain(..) {
                    w.insert(now + period, x);
                }
            }
        };
        run(&mut w, 0, 3 * period);
        let warm = w.footprint();
        run(&mut w, 3 * period, 10 * period);
        assert_eq!(w.footprint(), warm, "the wheel allocated in steady state");
        assert_eq!(w.len(), live);
        w.check_invariants();
        // Memory tracks live timers: full chunks plus at most one partial per slot.
        assert!(
            warm.0 <= live / CHUNK + NUM_LEVELS * SLOTS + 64,
            "{} chunks",
            warm.0
        );
    }

    // ---- property test against a naive oracle ----

    /// The obvious implementation: a list of everything pending, sorted on demand.
    struct Oracle {
        now_ms: u64,
        /// (tick used for ordering, insertion seq, deadline, due at insertion)
        pending: Vec<(u64, u64, u64, bool)>,
    }

    impl Oracle {
        fn insert(&mut self, deadline: u64, seq: u64) {
            let due = deadline <= self.now_ms;
            let tick = if due {
                self.now_ms / TICK_MS
            } else {
                tick_ceil(deadline)
            };
            self.pending.push((tick, seq, deadline, due));
        }

        fn advance(&mut self, now_ms: u64) -> Vec<u64> {
            self.now_ms = self.now_ms.max(now_ms);
            let now = self.now_ms;
            let (mut fire, keep): (Vec<_>, Vec<_>) = self
                .pending
                .iter()
                .partition(|&&(tick, _, _, due)| due || tick * TICK_MS <= now);
            self.pending = keep;
            fire.sort_unstable_by_key(|&(tick, seq, _, _)| (tick, seq));
            fire.into_iter().map(|(_, seq, _, _)| seq).collect()
        }

        fn earliest_fire_ms(&self) -> Option<u64> {
            self.pending
                .iter()
                .map(|&(tick, _, _, due)| if due { self.now_ms } else { tick * TICK_MS })
                .min()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Deadline relative to the current time; may be in the past.
        Insert(i64),
        /// Insert this many items with the same deadline.
        Burst(u16, u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let delay = prop_oneof![
            4 => 0i64..100,
            4 => 0i64..20_000,
            2 => 0i64..(DAY as i64),
            1 => 0i64..(40 * YEAR as i64),
            1 => -5000i64..=0,
        ];
        let step = prop_oneof![
            4 => 0u64..25,
            3 => 0u64..2_000,
            2 => 0u64..(HOUR * 3),
            1 => 0u64..(30 * YEAR),
        ];
        prop_oneof![
            5 => delay.prop_map(Op::Insert),
            1 => (1u16..300, 0u64..5000).prop_map(|(n, d)| Op::Burst(n, d)),
            3 => step.prop_map(Op::Advance),
        ]
    }

    /// Applies an insert or a burst at `now` to the wheel and the oracle alike
    /// (each item numbered by its index in `deadlines`); an advance is left to
    /// the test, which gets its step.
    fn apply_inserts(
        op: Op,
        now: u64,
        w: &mut Wheel<u64>,
        oracle: &mut Oracle,
        deadlines: &mut Vec<u64>,
    ) -> Option<u64> {
        let (count, d) = match op {
            Op::Insert(rel) => (1, now.saturating_add_signed(rel)),
            Op::Burst(n, rel) => (n, now + rel),
            Op::Advance(step) => return Some(step),
        };
        for _ in 0..count {
            oracle.insert(d, deadlines.len() as u64);
            w.insert(d, deadlines.len() as u64);
            deadlines.push(d);
        }
        None
    }

    /// After every operation: the wheel holds what the oracle holds, its
    /// invariants hold, and its next deadline is never later than the
    /// oracle's first firing.
    fn agrees_with(w: &Wheel<u64>, oracle: &Oracle) -> Result<(), TestCaseError> {
        prop_assert_eq!(w.len(), oracle.pending.len());
        w.check_invariants();
        let bound = w.next_deadline_ms();
        match oracle.earliest_fire_ms() {
            None => prop_assert_eq!(bound, None),
            Some(real) => {
                let bound = bound.expect("non-empty wheel has a deadline");
                prop_assert!(bound <= real, "bound {} later than {}", bound, real);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_naive_oracle(start in 0u64..10_000_000, ops in prop::collection::vec(op(), 1..120)) {
            let mut w = Wheel::new(start);
            let mut oracle = Oracle { now_ms: start, pending: Vec::new() };
            let mut deadlines = Vec::new();
            let mut now = start;
            for op in ops {
                if let Some(step) = apply_inserts(op, now, &mut w, &mut oracle, &mut deadlines) {
                    now += step;
                    let want = oracle.advance(now);
                    let got = fired(&mut w, now);
                    for &seq in &got {
                        prop_assert!(deadlines[seq as usize] <= now, "fired early");
                    }
                    prop_assert_eq!(got, want, "at now {}", now);
                }
                agrees_with(&w, &oracle)?;
            }
            // Drain everything left and compare once more.
            let end = now + 50 * YEAR;
            prop_assert_eq!(fired(&mut w, end), oracle.advance(end));
            prop_assert!(w.is_empty());
        }

        /// The same, advancing in slices of `budgets` (cycled) and inserting one of
        /// `late` (relative deadlines, cycled) between every two slices. Items that were
        /// in the wheel before an advance fire exactly in the oracle's (= unbounded)
        /// order; late ones fire in that advance if their deadline has passed, else not.
        #[test]
        fn sliced_advance_matches_naive_oracle(
            start in 0u64..10_000_000,
            ops in prop::collection::vec(op(), 1..120),
            budgets in prop::collection::vec(prop_oneof![1usize..4, 1usize..400], 1..8),
            late in prop::collection::vec(-30_000i64..30_000, 0..6),
        ) {
            let mut w = Wheel::new(start);
            let mut oracle = Oracle { now_ms: start, pending: Vec::new() };
            let mut deadlines = Vec::new();
            let mut now = start;
            let mut k = 0usize;
            for op in ops {
                if let Some(step) = apply_inserts(op, now, &mut w, &mut oracle, &mut deadlines) {
                    now += step;
                    let want_old = oracle.advance(now);
                    let first_late = deadlines.len() as u64;
                    let mut got = Vec::new();
                    for n in 0.. {
                        let (out, more) = slice(&mut w, now, budgets[k % budgets.len()]);
                        got.extend(out);
                        if !more {
                            break;
                        }
                        // Bounded: slices of 1 that each add a due item never end.
                        if !late.is_empty() && n < 20 {
                            let d = now.saturating_add_signed(late[k % late.len()]);
                            oracle.insert(d, deadlines.len() as u64);
                            w.insert(d, deadlines.len() as u64);
                            deadlines.push(d);
                        }
                        k += 1;
                    }
                    let mut want_late = oracle.advance(now);
                    for &seq in &got {
                        prop_assert!(deadlines[seq as usize] <= now, "fired early");
                    }
                    let (old, mut got_late): (Vec<u64>, Vec<u64>) =
                        got.into_iter().partition(|&s| s < first_late);
                    prop_assert_eq!(old, want_old, "at now {}", now);
                    got_late.sort_unstable();
                    want_late.sort_unstable();
                    prop_assert_eq!(got_late, want_late, "late inserts at now {}", now);
                }
                agrees_with(&w, &oracle)?;
            }
            let end = now + 50 * YEAR;
            prop_assert_eq!(fired_in_slices(&mut w, end, || 7), oracle.advance(end));
            prop_assert!(w.is_empty());
        }
    }
}
