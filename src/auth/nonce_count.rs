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
//! # Bounded size
//!
//! The table holds at most [`MAX_TRACKED_NONCES`] entries, split evenly over
//! [`SHARDS`] mutex-protected shards. Expired entries are pruned lazily (at
//! most once per [`PRUNE_INTERVAL_SECS`] per shard, and on a full shard) or by
//! [`NonceCounts::prune`]. When a shard is full of live entries a *new* nonce
//! is refused (`check_and_update` returns `false`; the caller challenges
//! again) while nonces already tracked keep working. Evicting a live entry
//! instead would forget its count and let that nonce's earlier requests be
//! replayed, so refusing is the only choice that keeps the guarantee.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::nonce::{self, NONCE_RAW_LEN};

/// Hard cap on tracked nonces across all shards (≈ 32 MiB when full).
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
}

impl std::fmt::Debug for NonceCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceCounts")
            .field("ttl_secs", &self.ttl_secs)
            .field("capacity", &self.capacity())
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
        }
    }

    /// Most entries this table will hold.
    pub fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
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
    #[must_use]
    pub fn check_and_update(&self, nonce: &[u8], nc: u32, now_secs: u64) -> bool {
        let Some((key, issued)) = nonce::decode(nonce) else {
            return false;
        };
        if nc == 0 || expired(issued, now_secs, self.ttl_secs) {
            return false;
        }
        let shard_idx = usize::from(key[NONCE_RAW_LEN - 1]) % SHARDS;
        let mut shard = self.shards[shard_idx].lock();
        if now_secs >= shard.next_prune {
            self.prune_shard(&mut shard, now_secs);
        }
        if let Some(seen) = shard.counts.get_mut(&key) {
            if nc <= *seen {
                return false;
            }
            *seen = nc;
            return true;
        }
        if shard.counts.len() >= self.shard_cap && shard.last_sweep != now_secs {
            // The periodic sweep may be up to PRUNE_INTERVAL_SECS behind, so
            // sweep now; but at most once per second, so a shard full of live
            // entries cannot make every request pay for a scan.
            self.prune_shard(&mut shard, now_secs);
        }
        if shard.counts.len() >= self.shard_cap {
            return false;
        }
        shard.counts.insert(key, nc);
        debug_assert!(shard.counts.len() <= self.shard_cap, "shard over its cap");
        true
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
            if !counts.check_and_update(s.issue(NOW).as_bytes(), 1, NOW) {
                refused += 1;
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
