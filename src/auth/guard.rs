//! Brute-force guard: after too many failed digest answers from one source
//! address, or for one user name, refuse that source or user for a while.
//!
//! A password guesser has to send answers that fail; a device with the right
//! password sends none (its nonce from before a restart of ours is answered
//! stale, not refused). So [`AuthGuard`] counts
//! failed answers — a response present but wrong, see
//! [`AuthError::is_failed_guess`](super::AuthError::is_failed_guess); never a
//! request without credentials, nor a stale nonce — in a fixed window per
//! source and per user. When either count reaches the limit within the window
//! that key is locked out: the registrar answers every request from the
//! source, or authenticating as the user, with 403 until the lockout ends —
//! even one with the right password, or guessing would simply go on until it
//! hit. Per user as well as per source, because a botnet spreads its guesses
//! for one account over many addresses.
//!
//! IPv6 sources are counted per /64: one host usually owns a whole /64 and
//! could otherwise rotate through it.
//!
//! # Bounded, shared, flood-resistant
//!
//! Each of the two tables is a fixed array of [`WAYS`]-way buckets split over
//! [`SHARDS`] `parking_lot` mutexes, allocated once at start ([`SLOTS`]
//! entries each): nothing grows, and the request path never allocates. Keys
//! (source prefixes, user names) are chosen by the peer, so they are hashed
//! with a per-process random SipHash key (std's `RandomState`): an attacker
//! cannot aim many keys at one bucket. A slot holds the 64-bit hash only,
//! not the key; a collision (two keys sharing a lockout) needs a 2⁻⁶⁴ chance
//! per pair, or the secret hash key.
//!
//! A key new to a full bucket evicts, in order of preference, an entry whose
//! window and lockout are over, the unlocked entry with the fewest failures,
//! and only when the whole bucket is locked out, the lockout ending soonest —
//! so a flood of fresh keys cannot wash out a lockout without first earning
//! [`WAYS`] lockouts of its own in that very bucket, which it cannot target.
//!
//! Time is the monotonic clock in milliseconds, passed in (sans-IO).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::bytes::unquote_into;
use super::credentials::MAX_ESCAPED_USERNAME;

/// Independently locked shards per table.
const SHARDS: usize = 64;
/// Entries per bucket (set associativity).
const WAYS: usize = 8;
/// Buckets per shard.
const BUCKETS: usize = 128;
/// Entries per table: 65 536 (2 MiB each, two tables).
pub const SLOTS: usize = SHARDS * BUCKETS * WAYS;

/// The limits (`--auth-fail-limit`, `--auth-fail-window`, `--auth-lockout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failed answers within the window that lock a source or user out;
    /// 0 turns the guard off.
    pub limit: u32,
    /// The window, from a key's first failure, in milliseconds.
    pub window_ms: u64,
    /// How long a lockout lasts, in milliseconds.
    pub lockout_ms: u64,
}

impl Default for GuardConfig {
    /// The command line's defaults: 10 failures in 60 s lock out for 300 s.
    fn default() -> Self {
        GuardConfig {
            limit: 10,
            window_ms: 60_000,
            lockout_ms: 300_000,
        }
    }
}

/// Which key of a request is locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// The source address (or its IPv6 /64).
    Source,
    /// The digest user name.
    User,
}

/// Lockouts begun by one [`AuthGuard::record_failure`] (for /metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewLockouts {
    /// The source just reached the limit.
    pub source: bool,
    /// The user just reached the limit.
    pub user: bool,
}

impl NewLockouts {
    /// How many lockouts began (0–2).
    pub fn count(self) -> u64 {
        u64::from(self.source) + u64::from(self.user)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Hash of the key; 0 = free (real tags have their low bit set).
    tag: u64,
    /// When the current counting window began.
    window_start_ms: u64,
    /// Locked out while `now < locked_until_ms`.
    locked_until_ms: u64,
    /// Failures in the current window.
    failures: u32,
}

impl Slot {
    fn locked(&self, now_ms: u64) -> bool {
        now_ms < self.locked_until_ms
    }

    /// Nothing worth keeping: free, or window and lockout both over.
    fn spent(&self, now_ms: u64, window_ms: u64) -> bool {
        self.tag == 0
            || (!self.locked(now_ms) && now_ms.saturating_sub(self.window_start_ms) >= window_ms)
    }
}

struct Shard {
    slots: Box<[Slot]>,
}

/// One table of counters (sources or users).
struct Table {
    shards: Box<[Mutex<Shard>]>,
    /// The latest lockout end ever set: past it nothing can be locked, so
    /// the common case — no lockout in force — costs one atomic load and
    /// no lock.
    latest_lock_end_ms: AtomicU64,
}

impl Table {
    fn new() -> Self {
        Table {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        slots: vec![Slot::default(); BUCKETS * WAYS].into_boxed_slice(),
                    })
                })
                .collect(),
            latest_lock_end_ms: AtomicU64::new(0),
        }
    }

    /// Shard, bucket range and tag for a hash.
    fn place(hash: u64) -> (usize, std::ops::Range<usize>, u64) {
        let shard = (hash >> 58) as usize % SHARDS;
        let bucket = (hash >> 32) as usize % BUCKETS;
        (shard, bucket * WAYS..(bucket + 1) * WAYS, hash | 1)
    }

    fn locked(&self, hash: u64, now_ms: u64) -> bool {
        // Relaxed: a lockout set a moment ago on another worker may be seen
        // one request late, which the guard can afford.
        if now_ms >= self.latest_lock_end_ms.load(Ordering::Relaxed) {
            return false;
        }
        let (shard, bucket, tag) = Self::place(hash);
        let shard = self.shards[shard].lock();
        shard.slots[bucket]
            .iter()
            .any(|s| s.tag == tag && s.locked(now_ms))
    }

    /// Counts one failure; true when it starts a lockout.
    fn fail(&self, hash: u64, now_ms: u64, cfg: &GuardConfig) -> bool {
        let (shard, bucket, tag) = Self::place(hash);
        let mut shard = self.shards[shard].lock();
        let bucket = &mut shard.slots[bucket];
        let idx = match bucket.iter().position(|s| s.tag == tag) {
            Some(i) => i,
            None => {
                let i = victim(bucket, now_ms, cfg.window_ms);
                bucket[i] = Slot {
                    tag,
                    window_start_ms: now_ms,
                    locked_until_ms: 0,
                    failures: 0,
                };
                i
            }
        };
        let slot = &mut bucket[idx];
        if slot.locked(now_ms) {
            // Already refused; the lockout is not stretched, so it ends on
            // time even while the guesser keeps knocking.
            return false;
        }
        if now_ms.saturating_sub(slot.window_start_ms) >= cfg.window_ms {
            slot.window_start_ms = now_ms;
            slot.failures = 0;
        }
        slot.failures = slot.failures.saturating_add(1);
        if slot.failures < cfg.limit {
            return false;
        }
        slot.locked_until_ms = now_ms.saturating_add(cfg.lockout_ms);
        // Counting starts afresh once the lockout is over.
        slot.failures = 0;
        slot.window_start_ms = slot.locked_until_ms;
        self.latest_lock_end_ms
            .fetch_max(slot.locked_until_ms, Ordering::Relaxed);
        true
    }
}

/// Which entry of a full bucket a new key replaces (see the module docs).
fn victim(bucket: &[Slot], now_ms: u64, window_ms: u64) -> usize {
    if let Some(i) = bucket.iter().position(|s| s.spent(now_ms, window_ms)) {
        return i;
    }
    let unlocked = bucket
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.locked(now_ms))
        .min_by_key(|(_, s)| s.failures);
    if let Some((i, _)) = unlocked {
        return i;
    }
    bucket
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| s.locked_until_ms)
        .map_or(0, |(i, _)| i)
}

/// Failed-answer counters and lockouts per source and per user, shared by
/// all workers (`Sync`).
pub struct AuthGuard {
    cfg: GuardConfig,
    /// `None` when the guard is off (`limit == 0`): no memory, no locking.
    tables: Option<Box<(Table, Table)>>,
    keys: RandomState,
}

impl std::fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGuard")
            .field("cfg", &self.cfg)
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

impl AuthGuard {
    /// A guard with these limits; with `limit == 0` it never locks anything.
    pub fn new(cfg: GuardConfig) -> Self {
        AuthGuard {
            cfg,
            tables: (cfg.limit > 0).then(|| Box::new((Table::new(), Table::new()))),
            keys: RandomState::new(),
        }
    }

    /// Whether the guard counts anything.
    pub fn enabled(&self) -> bool {
        self.tables.is_some()
    }

    /// The limits in force.
    pub fn config(&self) -> GuardConfig {
        self.cfg
    }

    fn source_hash(&self, ip: IpAddr) -> u64 {
        // Domain-separated from user names by the leading byte.
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.keys.hash_one((4u8, v4.octets())),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                self.keys.hash_one((6u8, prefix))
            }
        }
    }

    /// `username` as it appears between the quotes of the Authorization
    /// header; quoted-pairs are undone so `a\"b` and the same name written
    /// otherwise are one user.
    fn user_hash(&self, username: &[u8]) -> u64 {
        let mut buf = [0u8; MAX_ESCAPED_USERNAME];
        let user = unquote_into(username, &mut buf).unwrap_or(username);
        self.keys.hash_one((0u8, user))
    }

    /// Whether requests from `ip` are refused at `now_ms`.
    pub fn source_locked(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.tables
            .as_ref()
            .is_some_and(|t| t.0.locked(self.source_hash(ip), now_ms))
    }

    /// Whether requests authenticating as `username` (quoted form, as in
    /// the header) are refused at `now_ms`.
    pub fn user_locked(&self, username: &[u8], now_ms: u64) -> bool {
        self.tables
            .as_ref()
            .is_some_and(|t| t.1.locked(self.user_hash(username), now_ms))
    }

    /// [`source_locked`](Self::source_locked), then
    /// [`user_locked`](Self::user_locked) when a user name is known.
    pub fn check(&self, ip: IpAddr, username: Option<&[u8]>, now_ms: u64) -> Option<Locked> {
        if self.source_locked(ip, now_ms) {
            return Some(Locked::Source);
        }
        match username {
            Some(u) if self.user_locked(u, now_ms) => Some(Locked::User),
            _ => None,
        }
    }

    /// Counts one failed answer from `ip` as `username`; says which lockouts
    /// it started.
    pub fn record_failure(&self, ip: IpAddr, username: &[u8], now_ms: u64) -> NewLockouts {
        let Some(t) = self.tables.as_ref() else {
            return NewLockouts::default();
        };
        NewLockouts {
            source: t.0.fail(self.source_hash(ip), now_ms, &self.cfg),
            user: t.1.fail(self.user_hash(username), now_ms, &self.cfg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn guard(limit: u32) -> AuthGuard {
        AuthGuard::new(GuardConfig {
            limit,
            window_ms: 60_000,
            lockout_ms: 300_000,
        })
    }

    #[test]
    fn limit_failures_lock_source_and_user_until_lockout_ends() {
        let g = guard(3);
        let t = 1_000;
        assert_eq!(g.check(A, Some(b"alice"), t), None);
        assert_eq!(g.record_failure(A, b"alice", t).count(), 0);
        assert_eq!(g.record_failure(A, b"alice", t + 1).count(), 0);
        assert_eq!(g.check(A, Some(b"alice"), t + 2), None);
        let third = g.record_failure(A, b"alice", t + 2);
        assert_eq!(
            third,
            NewLockouts {
                source: true,
                user: true
            }
        );
        assert_eq!(g.check(A, None, t + 3), Some(Locked::Source));
        assert_eq!(g.check(B, Some(b"alice"), t + 3), Some(Locked::User));
        assert_eq!(g.check(B, Some(b"bob"), t + 3), None);
        // More failures while locked neither count nor stretch the lockout.
        assert_eq!(g.record_failure(A, b"alice", t + 4).count(), 0);
        let end = t + 2 + 300_000;
        assert_eq!(g.check(A, Some(b"alice"), end - 1), Some(Locked::Source));
        assert_eq!(g.check(A, Some(b"alice"), end), None);
        // Counting starts afresh.
        assert_eq!(g.record_failure(A, b"alice", end).count(), 0);
        assert_eq!(g.check(A, Some(b"alice"), end + 1), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let g = guard(3);
        for i in 0..10u64 {
            // Two failures per minute never reach three within one.
            let t = i * 30_001;
            assert_eq!(g.record_failure(A, b"alice", t).count(), 0, "{i}");
            assert_eq!(g.check(A, Some(b"alice"), t), None, "{i}");
        }
    }

    #[test]
    fn source_and_user_counts_are_separate() {
        let g = guard(3);
        // Three users from one address lock the address only.
        for u in [&b"a"[..], b"b", b"c"] {
            let _ = g.record_failure(A, u, 0);
        }
        assert_eq!(g.check(A, None, 1), Some(Locked::Source));
        assert_eq!(g.check(B, Some(b"a"), 1), None);
        // One user from three addresses locks the user only.
        let g = guard(3);
        for last in 1..=3u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, last));
            let _ = g.record_failure(ip, b"alice", 0);
        }
        assert_eq!(g.check(A, None, 1), None);
        assert_eq!(g.check(A, Some(b"alice"), 1), Some(Locked::User));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let g = guard(2);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let other_host: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let other_net: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        let _ = g.record_failure(one, b"u1", 0);
        let _ = g.record_failure(other_host, b"u2", 0);
        assert_eq!(g.check(one, None, 1), Some(Locked::Source));
        assert_eq!(g.check(other_net, None, 1), None);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("mapped");
        let _ = g.record_failure(A, b"u3", 0);
        let _ = g.record_failure(mapped, b"u4", 0);
        assert_eq!(g.check(A, None, 1), Some(Locked::Source));
    }

    #[test]
    fn escaped_user_names_are_one_user() {
        let g = guard(2);
        let _ = g.record_failure(A, b"a\\\"b", 0);
        let _ = g.record_failure(B, b"a\"b", 0);
        assert_eq!(
            g.check(IpAddr::from([203, 0, 113, 1]), Some(b"a\"b"), 1),
            Some(Locked::User)
        );
    }

    #[test]
    fn off_when_limit_is_zero() {
        let g = guard(0);
        assert!(!g.enabled());
        for _ in 0..100 {
            assert_eq!(g.record_failure(A, b"alice", 0).count(), 0);
        }
        assert_eq!(g.check(A, Some(b"alice"), 1), None);
    }

    #[test]
    fn a_flood_of_new_keys_stays_bounded_and_keeps_lockouts() {
        let g = guard(2);
        let _ = g.record_failure(A, b"victim", 0);
        let _ = g.record_failure(A, b"victim", 0);
        let _ = g.record_failure(B, b"x", 0);
        let _ = g.record_failure(B, b"y", 0);
        assert_eq!(g.check(A, None, 1), Some(Locked::Source));
        assert_eq!(g.check(B, None, 1), Some(Locked::Source));
        // Four times the table's size of one-off user names (and sources):
        // every bucket overflows, yet the locked entries survive, since
        // unlocked ones are always evicted first.
        for i in 0..4 * SLOTS as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = g.record_failure(ip, &i.to_le_bytes(), 2);
        }
        assert_eq!(g.check(A, Some(b"victim"), 3), Some(Locked::Source));
        assert_eq!(g.check(B, None, 3), Some(Locked::Source));
        assert_eq!(
            g.check(IpAddr::from([203, 0, 113, 1]), Some(b"victim"), 3),
            Some(Locked::User)
        );
    }

    #[test]
    fn victim_prefers_spent_then_fewest_failures_then_soonest_end() {
        let slot = |failures, locked_until_ms, window_start_ms| Slot {
            tag: 3,
            window_start_ms,
            locked_until_ms,
            failures,
        };
        let now = 100_000;
        let w = 60_000;
        let mut b = [slot(5, now + 10, now); WAYS];
        b[3] = slot(4, 0, now);
        b[5] = slot(2, 0, now);
        assert_eq!(victim(&b, now, w), 5, "fewest failures among unlocked");
        b[6] = slot(9, 0, now - w);
        assert_eq!(victim(&b, now, w), 6, "window over");
        let mut all_locked = [slot(1, now + 50, now); WAYS];
        all_locked[2].locked_until_ms = now + 5;
        assert_eq!(victim(&all_locked, now, w), 2, "soonest lockout end");
    }

    #[test]
    fn shared_across_threads() {
        let g = std::sync::Arc::new(guard(40));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = std::sync::Arc::clone(&g);
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| g.record_failure(A, b"alice", 0).count())
                        .sum::<u64>()
                })
            })
            .collect();
        let started: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        // Exactly the 40th failure, on whichever thread, locked both keys.
        assert_eq!(started, 2);
        assert_eq!(g.check(A, None, 1), Some(Locked::Source));
    }
}
