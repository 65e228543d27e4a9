//! Replay protection for `qop=auth`: the highest nonce-count seen per nonce.
//!
//! RFC 7616 §3.4 (RFC 2617 §3.2.2): with qop the client numbers every request
//! it makes with a nonce (`nc`), and "the server can detect request replays by
//! maintaining its own copy of this count — if the same nc-value is seen
//! twice, then the request is a replay". Nonces themselves are stateless
//! ([`super::NonceSecret`]); this table is the one piece of per-nonce state,
//! and it only ever holds nonces whose digest already verified.
//!
//! Without qop (many SIP devices, e.g. the Hikvision capture) there is no nc,
//! and a nonce may be reused until its ttl runs out: that is the protection
//! RFC 2617 offers for that mode.
//!
//! # One-time nonces
//!
//! [`NonceCounts::with_one_time`] (`--one-time-nonces`) makes every nonce
//! answer exactly one request, with or without qop: the first use is recorded
//! here and any later use, whatever its nc, is [`NonceUse::Repeated`]; the
//! authenticator then challenges again with `stale=true` (RFC 7616 §3.3: the
//! digest was right, the nonce is no longer usable). This is replay
//! protection for devices that never send qop (RFC 7616 §5.4–5.5:
//! limited-use nonces against replays), at the price of a challenge round
//! trip per request. The same table and bound serve both modes: a nonce is
//! tracked until its ttl.
//!
//! # Bounded size
//!
//! The table holds at most [`MAX_TRACKED_NONCES`] entries, split evenly over
//! [`SHARDS`] mutex-protected shards. Expired entries are pruned lazily (at
//! most once per [`PRUNE_INTERVAL_SECS`] per shard, and on a full shard) or by
//! [`NonceCounts::prune`]. When a shard is full of live entries a *new* nonce
//! is not tracked ([`NonceUse::Full`]: the caller answers `stale=true`, so the
//! device retries and no failure is counted against it) while nonces already
//! tracked keep working. Evicting a live entry
//! instead would forget its count and let that nonce's earlier requests be
//! replayed, so refusing is the only choice that keeps the guarantee. Each
//! such refusal is counted ([`NonceCounts::full_total`], in `/metrics` as
//! `sipreg_nonce_table_full_total`).
//!
//! The cap is only a cap: the shards' maps start empty and grow on demand,
//! so a large cap costs nothing until nonces fill it (a 28-byte entry in
//! power-of-two maps at most 7/8 full: 32 to 64 bytes per tracked nonce).
//! [`NonceCounts::for_devices`] (`--expected-devices N`) raises the cap to
//! 2 × N so that a whole fleet re-registering within one nonce lifetime
//! (a restart storm) is not re-challenged: each device may hold the nonce of
//! its refresh cycle plus one from a re-challenge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::nonce::{self, NONCE_RAW_LEN};

/// Default cap on tracked nonces across all shards (≈ 58 MiB when full: a
/// 28-byte entry, and 16 384 per shard need 32 768 slots at the maps' 7/8
/// load).
pub const MAX_TRACKED_NONCES: usize = 1 << 20;
/// Number of independently locked shards; workers rarely contend.
pub const SHARDS: usize = 64;
/// Minimum spacing of the lazy expiry sweep of one shard.
pub const PRUNE_INTERVAL_SECS: u64 = 10;

/// Key: the nonce in binary. Its first 8 bytes are the issue time, and its
/// last bytes are MAC output, uniformly distributed, which picks the shard.
type Key = [u8; NONCE_RAW_LEN];

struct Shard {
    counts: HashMap<Key, u32>,
    /// When the lazy expiry sweep is next due.
    next_prune: u64,
    /// When the last sweep ran (`u64::MAX`: never).
    last_sweep: u64,
}

/// Highest `nc` seen per nonce, shared by all workers (`Sync`).
pub struct NonceCounts {
    shards: Box<[Mutex<Shard>]>,
    ttl_secs: u64,
    shard_cap: usize,
    /// Every nonce answers one request only.
    one_time: bool,
    /// [`NonceUse::Full`] answers given (for metrics).
    full: AtomicU64,
}

/// What [`NonceCounts::record_use`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum NonceUse {
    /// A first use, a higher nc, or (multi-use mode, no qop) nothing to
    /// track: accept.
    Accepted,
    /// Used before: an nc not above the recorded one (a replay, RFC 7616
    /// §3.4), or any second use in one-time mode.
    Repeated,
    /// Cannot be tracked: `nc == 0`, or a nonce not of our format or past
    /// its ttl.
    Refused,
    /// A right digest with a new nonce while the table is full: not the
    /// client's fault (a mass re-registration can fill it), so the caller
    /// answers `stale=true` rather than count a failure.
    Full,
}

impl std::fmt::Debug for NonceCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceCounts")
            .field("ttl_secs", &self.ttl_secs)
            .field("capacity", &self.capacity())
            .field("one_time", &self.one_time)
            .field("full_total", &self.full_total())
            .finish_non_exhaustive()
    }
}

fn issued_at(key: &Key) -> u64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&key[..8]);
    u64::from_be_bytes(t)
}

fn expired(issued: u64, now_secs: u64, ttl_secs: u64) -> bool {
    now_secs.saturating_sub(issued) > ttl_secs
}

impl NonceCounts {
    /// A table for nonces valid `ttl_secs` (use the same ttl as
    /// [`super::NonceSecret::check`]), capped at [`MAX_TRACKED_NONCES`].
    pub fn new(ttl_secs: u64) -> Self {
        Self::with_limit(ttl_secs, MAX_TRACKED_NONCES)
    }

    /// As [`new`](Self::new), with room for `expected_devices` devices that
    /// each authenticate two fresh nonces within one ttl (a refresh and a
    /// re-challenge): the cap is the larger of [`MAX_TRACKED_NONCES`] and
    /// 2 × `expected_devices`, rounded as [`with_limit`](Self::with_limit)
    /// does. Nothing is allocated up front (see the module docs).
    pub fn for_devices(ttl_secs: u64, expected_devices: usize) -> Self {
        Self::with_limit(
            ttl_secs,
            MAX_TRACKED_NONCES.max(expected_devices.saturating_mul(2)),
        )
    }

    /// As [`new`](Self::new) with another cap; it is rounded down to a
    /// multiple of [`SHARDS`], and at least one entry per shard is kept.
    pub fn with_limit(ttl_secs: u64, max_entries: usize) -> Self {
        let shard_cap = (max_entries / SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    counts: HashMap::new(),
                    next_prune: 0,
                    last_sweep: u64::MAX,
                })
            })
            .collect();
        NonceCounts {
            shards,
            ttl_secs,
            shard_cap,
            one_time: false,
            full: AtomicU64::new(0),
        }
    }

    /// Turns one-time mode on or off (see the module docs).
    pub fn with_one_time(mut self, one_time: bool) -> Self {
        self.one_time = one_time;
        self
    }

    /// Whether every nonce answers one request only.
    pub fn one_time(&self) -> bool {
        self.one_time
    }

    /// Most entries this table will hold.
    pub fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// New nonces refused so far because their shard was full of live
    /// entries ([`NonceUse::Full`]).
    pub fn full_total(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// Entries currently held (locks each shard in turn; for metrics/tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().counts.len()).sum()
    }

    /// Whether no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `nc` for `nonce` if it is higher than any count seen with it.
    ///
    /// Call only after the nonce checked [`Fresh`](super::NonceStatus::Fresh)
    /// and the digest verified: this table does not check the MAC, and must
    /// not be filled by unauthenticated requests.
    ///
    /// `false` means reject: a replay (`nc` not above the recorded one,
    /// RFC 7616 §3.4), `nc == 0` (counts start at 1, RFC 2617 §3.2.2), a
    /// nonce not of our format or past its ttl, or a new nonce while the
    /// table is full (see the module docs).
    ///
    /// In one-time mode only a nonce's first use is accepted.
    #[must_use]
    pub fn check_and_update(&self, nonce: &[u8], nc: u32, now_secs: u64) -> bool {
        self.record_use(nonce, Some(nc), now_secs) == NonceUse::Accepted
    }

    /// Records one use of `nonce` — with `nc` for a `qop=auth` request,
    /// `None` without qop — and says whether to accept it.
    ///
    /// Multi-use mode: without qop nothing is tracked (accepted); with qop
    /// as [`check_and_update`](Self::check_and_update). One-time mode: the
    /// first use is accepted and recorded, any later one is
    /// [`NonceUse::Repeated`].
    ///
    /// Call only after the nonce checked [`Fresh`](super::NonceStatus::Fresh)
    /// and the digest verified (see `check_and_update`).
    pub fn record_use(&self, nonce: &[u8], nc: Option<u32>, now_secs: u64) -> NonceUse {
        if nc.is_none() && !self.one_time {
            return NonceUse::Accepted;
        }
        let Some((key, issued)) = nonce::decode(nonce) else {
            return NonceUse::Refused;
        };
        // RFC 2617 §3.2.2: counts start at 1.
        if nc == Some(0) || expired(issued, now_secs, self.ttl_secs) {
            return NonceUse::Refused;
        }
        // Without qop a one-time nonce is recorded with count 0.
        let nc = nc.unwrap_or(0);
        let shard_idx = usize::from(key[NONCE_RAW_LEN - 1]) % SHARDS;
        let mut shard = self.shards[shard_idx].lock();
        if now_secs >= shard.next_prune {
            self.prune_shard(&mut shard, now_secs);
        }
        if let Some(seen) = shard.counts.get_mut(&key) {
            if self.one_time || nc <= *seen {
                return NonceUse::Repeated;
            }
            *seen = nc;
            return NonceUse::Accepted;
        }
        if shard.counts.len() >= self.shard_cap && shard.last_sweep != now_secs {
            // The periodic sweep may be up to PRUNE_INTERVAL_SECS behind, so
            // sweep now; but at most once per second, so a shard full of live
            // entries cannot make every request pay for a scan.
            self.prune_shard(&mut shard, now_secs);
        }
        if shard.counts.len() >= self.shard_cap {
            drop(shard);
            self.full.fetch_add(1, Ordering::Relaxed);
            return NonceUse::Full;
        }
        shard.counts.insert(key, nc);
        debug_assert!(shard.counts.len() <= self.shard_cap, "shard over its cap");
        NonceUse::Accepted
    }

    /// Drops every entry whose nonce is older than the ttl. Workers do this
    /// lazily; a timer may also call it to return memory sooner.
    pub fn prune(&self, now_secs: u64) {
        for shard in self.shards.iter() {
            self.prune_shard(&mut shard.lock(), now_secs);
        }
    }

    fn prune_shard(&self, shard: &mut Shard, now_secs: u64) {
        let ttl = self.ttl_secs;
        shard
            .counts
            .retain(|key, _| !expired(issued_at(key), now_secs, ttl));
        shard.next_prune = now_secs.saturating_add(PRUNE_INTERVAL_SECS);
        shard.last_sweep = now_secs;
    }
}

/// Parses a nonce-count: exactly 8 hex digits (RFC 2617 §3.2.2
/// `nc-value = 8LHEX`; uppercase tolerated).
pub fn parse_nc(s: &[u8]) -> Option<u32> {
    let mut raw = [0u8; 4];
    if !super::bytes::hex_decode_into(s, &mut raw) {
        return None;
    }
    Some(u32::from_be_bytes(raw))
}

/// Formats a nonce-count as the 8 lowercase hex digits a client sends.
pub fn format_nc(nc: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    super::bytes::hex_encode_into(&nc.to_be_bytes(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::NonceSecret;
    use super::*;

    const TTL: u64 = 300;
    const NOW: u64 = 1_700_000_000;

    fn secret() -> NonceSecret {
        NonceSecret::from_bytes([7; 16])
    }

    #[test]
    fn parse_nc_takes_exactly_eight_hex_digits() {
        assert_eq!(parse_nc(b"00000001"), Some(1));
        assert_eq!(parse_nc(b"0000000a"), Some(10));
        assert_eq!(parse_nc(b"0000000A"), Some(10));
        assert_eq!(parse_nc(b"ffffffff"), Some(u32::MAX));
        assert_eq!(parse_nc(b"1"), None);
        assert_eq!(parse_nc(b"0000001"), None);
        assert_eq!(parse_nc(b"000000001"), None);
        assert_eq!(parse_nc(b"0000000g"), None);
        assert_eq!(parse_nc(b"+0000001"), None);
        assert_eq!(parse_nc(b""), None);
    }

    #[test]
    fn format_nc_round_trips() {
        for nc in [0, 1, 10, 0xdead_beef, u32::MAX] {
            assert_eq!(parse_nc(&format_nc(nc)), Some(nc));
        }
        assert_eq!(&format_nc(1), b"00000001");
    }

    #[test]
    fn increasing_counts_accepted() {
        let counts = NonceCounts::new(TTL);
        let n = secret().issue(NOW);
        assert!(counts.check_and_update(n.as_bytes(), 1, NOW));
        assert!(counts.check_and_update(n.as_bytes(), 2, NOW));
        // Gaps are fine: the client may have sent requests we never saw.
        assert!(counts.check_and_update(n.as_bytes(), 7, NOW + 1));
        assert_eq!(counts.len(), 1);
    }

    #[test]
    fn repeated_or_lower_counts_rejected() {
        let counts = NonceCounts::new(TTL);
        let n = secret().issue(NOW);
        assert!(!counts.check_and_update(n.as_bytes(), 0, NOW));
        assert!(counts.check_and_update(n.as_bytes(), 5, NOW));
        assert!(!counts.check_and_update(n.as_bytes(), 5, NOW));
        assert!(!counts.check_and_update(n.as_bytes(), 4, NOW));
        assert!(!counts.check_and_update(n.as_bytes(), 1, NOW));
        assert!(counts.check_and_update(n.as_bytes(), 6, NOW));
    }

    #[test]
    fn counts_are_per_nonce() {
        let counts = NonceCounts::new(TTL);
        let s = secret();
        let (a, b) = (s.issue(NOW), s.issue(NOW));
        assert!(counts.check_and_update(a.as_bytes(), 1, NOW));
        assert!(counts.check_and_update(b.as_bytes(), 1, NOW));
        assert!(!counts.check_and_update(a.as_bytes(), 1, NOW));
    }

    #[test]
    fn foreign_or_expired_nonces_rejected() {
        let counts = NonceCounts::new(TTL);
        assert!(!counts.check_and_update(b"a8afe6fcbee6331d89d3eb0d3d19ce39", 1, NOW));
        let n = secret().issue(NOW);
        assert!(!counts.check_and_update(n.as_bytes(), 1, NOW + TTL + 1));
        assert!(counts.is_empty());
    }

    #[test]
    fn expired_entries_are_pruned() {
        let counts = NonceCounts::new(TTL);
        let s = secret();
        for _ in 0..100 {
            assert!(counts.check_and_update(s.issue(NOW).as_bytes(), 1, NOW));
        }
        let young = s.issue(NOW + TTL);
        assert!(counts.check_and_update(young.as_bytes(), 1, NOW + TTL));
        assert_eq!(counts.len(), 101);
        counts.prune(NOW + TTL + 1);
        assert_eq!(counts.len(), 1);
        // The survivor still remembers its count.
        assert!(!counts.check_and_update(young.as_bytes(), 1, NOW + TTL + 1));
    }

    #[test]
    fn cap_is_honoured_and_tracked_nonces_keep_working() {
        let counts = NonceCounts::with_limit(TTL, 2 * SHARDS);
        assert_eq!(counts.capacity(), 2 * SHARDS);
        let s = secret();
        let first = s.issue(NOW);
        assert!(counts.check_and_update(first.as_bytes(), 1, NOW));
        let mut refused = 0;
        for _ in 0..10 * SHARDS {
            match counts.record_use(s.issue(NOW).as_bytes(), Some(1), NOW) {
                NonceUse::Accepted => {}
                NonceUse::Full => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        // Every shard filled up (deterministic with a fixed secret), and
        // everything past the cap was refused.
        assert_eq!(counts.len(), counts.capacity());
        assert_eq!(refused, 10 * SHARDS + 1 - counts.capacity());
        // A nonce tracked before the table filled up is still served, and
        // its replay protection still holds.
        assert!(counts.check_and_update(first.as_bytes(), 2, NOW));
        assert!(!counts.check_and_update(first.as_bytes(), 2, NOW));
        // Once the entries expire, room is made again.
        let later = NOW + TTL + 1;
        assert!(counts.check_and_update(s.issue(later).as_bytes(), 1, later));
        // Lazily, only the shard touched was swept; a full sweep does the rest.
        counts.prune(later);
        assert_eq!(counts.len(), 1);
    }

    #[test]
    fn full_answers_are_counted() {
        let counts = NonceCounts::with_limit(TTL, SHARDS);
        let s = secret();
        let full = (0..10 * SHARDS)
            .filter(|_| counts.record_use(s.issue(NOW).as_bytes(), Some(1), NOW) == NonceUse::Full)
            .count();
        assert!(full > 0, "the table never filled up");
        assert_eq!(counts.full_total(), full as u64);
        // Other refusals are not capacity refusals.
        let before = counts.full_total();
        assert_eq!(
            counts.record_use(s.issue(NOW).as_bytes(), Some(0), NOW),
            NonceUse::Refused
        );
        assert_eq!(counts.full_total(), before);
    }

    #[test]
    fn for_devices_raises_the_cap_but_allocates_lazily() {
        assert_eq!(
            NonceCounts::for_devices(TTL, 0).capacity(),
            MAX_TRACKED_NONCES
        );
        assert_eq!(
            NonceCounts::for_devices(TTL, 1000).capacity(),
            MAX_TRACKED_NONCES
        );
        // 2 × 3 000 001 rounded down to a multiple of SHARDS.
        let counts = NonceCounts::for_devices(TTL, 3_000_001);
        assert_eq!(counts.capacity(), 6_000_002 / SHARDS * SHARDS);
        assert!(counts.capacity() >= 2 * 3_000_001 - SHARDS);
        assert!(counts
            .shards
            .iter()
            .all(|s| s.lock().counts.capacity() == 0));
        assert!(counts.check_and_update(secret().issue(NOW).as_bytes(), 1, NOW));
        assert_eq!(counts.full_total(), 0);
    }

    #[test]
    fn one_time_mode_accepts_each_nonce_once() {
        let counts = NonceCounts::new(TTL).with_one_time(true);
        assert!(counts.one_time());
        let s = secret();
        let (a, b) = (s.issue(NOW), s.issue(NOW));
        // Without qop: first use only.
        assert_eq!(
            counts.record_use(a.as_bytes(), None, NOW),
            NonceUse::Accepted
        );
        assert_eq!(
            counts.record_use(a.as_bytes(), None, NOW),
            NonceUse::Repeated
        );
        // Whatever the nc, a used nonce stays used.
        assert_eq!(
            counts.record_use(a.as_bytes(), Some(2), NOW),
            NonceUse::Repeated
        );
        // With qop: first use only, even with a higher nc later.
        assert_eq!(
            counts.record_use(b.as_bytes(), Some(1), NOW),
            NonceUse::Accepted
        );
        assert_eq!(
            counts.record_use(b.as_bytes(), Some(2), NOW),
            NonceUse::Repeated
        );
        assert_eq!(
            counts.record_use(b.as_bytes(), None, NOW),
            NonceUse::Repeated
        );
        assert!(!counts.check_and_update(b.as_bytes(), 3, NOW));
        assert_eq!(counts.len(), 2);
        // Expired and foreign nonces are refused, and bounded like the rest.
        let c = s.issue(NOW);
        assert_eq!(
            counts.record_use(c.as_bytes(), None, NOW + TTL + 1),
            NonceUse::Refused
        );
        assert_eq!(counts.record_use(b"nothex", None, NOW), NonceUse::Refused);
        counts.prune(NOW + TTL + 1);
        assert!(counts.is_empty());
    }

    #[test]
    fn multi_use_mode_tracks_only_qop() {
        let counts = NonceCounts::new(TTL);
        let n = secret().issue(NOW);
        for _ in 0..3 {
            assert_eq!(
                counts.record_use(n.as_bytes(), None, NOW),
                NonceUse::Accepted
            );
        }
        assert!(counts.is_empty(), "RFC 2069 answers are not tracked");
        assert_eq!(
            counts.record_use(n.as_bytes(), Some(1), NOW),
            NonceUse::Accepted
        );
        assert_eq!(
            counts.record_use(n.as_bytes(), Some(1), NOW),
            NonceUse::Repeated
        );
        assert_eq!(
            counts.record_use(n.as_bytes(), Some(0), NOW),
            NonceUse::Refused
        );
    }

    #[test]
    fn one_time_table_is_bounded() {
        let counts = NonceCounts::with_limit(TTL, SHARDS).with_one_time(true);
        let s = secret();
        let accepted = (0..10 * SHARDS)
            .filter(|_| counts.record_use(s.issue(NOW).as_bytes(), None, NOW) == NonceUse::Accepted)
            .count();
        assert_eq!(accepted, counts.capacity());
        assert_eq!(counts.len(), counts.capacity());
    }

    #[test]
    fn shared_across_threads() {
        let counts = std::sync::Arc::new(NonceCounts::new(TTL));
        let n = secret().issue(NOW);
        let accepted: usize = (0..4)
            .map(|_| {
                let counts = std::sync::Arc::clone(&counts);
                std::thread::spawn(move || {
                    (1..=1000u32)
                        .filter(|&nc| counts.check_and_update(n.as_bytes(), nc, NOW))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .sum();
        // Each nc value can be accepted at most once across all threads, and
        // nc=1000 ends up recorded.
        assert!((1..=1000).contains(&accepted), "{accepted}");
        assert!(!counts.check_and_update(n.as_bytes(), 1000, NOW));
    }
}
