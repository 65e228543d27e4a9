//! Per-source request rate limiting: a token bucket per source IP in a fixed
//! table per worker (no allocation, bounded memory whatever the number of
//! sources). Over the rate a request is answered 503 with Retry-After; once a
//! source owes a further burst's worth it is dropped silently (a flood should
//! not be able to make the server send one answer per datagram).
//!
//! The kernel keeps a source's 4-tuple on one worker (SO_REUSEPORT), so a
//! source sending from one port meets this limit once; one spreading over many
//! ports meets it once per worker.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

/// Buckets per worker; sources hashing to a busy slot take it over (a reset
/// bucket, never a wrong verdict for long).
pub const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    Allow,
    /// Over the rate: answer 503 with Retry-After.
    Throttle,
    /// Far over the rate: drop without an answer.
    Drop,
}

#[derive(Clone, Copy)]
struct Bucket {
    ip: Option<IpAddr>,
    /// Thousandths of a request.
    milli_tokens: i64,
    last_ms: u64,
}

pub struct RateLimiter {
    per_sec: i64,
    burst_milli: i64,
    slots: Box<[Bucket]>,
    hasher: RandomState,
}

impl RateLimiter {
    /// `per_sec` requests per second per source IP, bursts of `burst`.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: i64::from(per_sec),
            burst_milli: i64::from(burst.max(1)) * 1000,
            slots: vec![
                Bucket {
                    ip: None,
                    milli_tokens: 0,
                    last_ms: 0,
                };
                SLOTS
            ]
            .into_boxed_slice(),
            // Keyed per process: sources are attacker-chosen.
            hasher: RandomState::new(),
        }
    }

    pub fn check(&mut self, ip: IpAddr, now_ms: u64) -> RateVerdict {
        let slot = (self.hasher.hash_one(ip) as usize) & (SLOTS - 1);
        let b = &mut self.slots[slot];
        if b.ip != Some(ip) {
            *b = Bucket {
                ip: Some(ip),
                milli_tokens: self.burst_milli,
                last_ms: now_ms,
            };
        }
        let elapsed = now_ms.saturating_sub(b.last_ms).min(3_600_000) as i64;
        b.milli_tokens = (b.milli_tokens + elapsed * self.per_sec).min(self.burst_milli);
        b.last_ms = now_ms;
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            return RateVerdict::Allow;
        }
        // Debt is capped so a source that stops recovers within two bursts.
        b.milli_tokens = (b.milli_tokens - 1000).max(-2 * self.burst_milli);
        if b.milli_tokens > -self.burst_milli {
            RateVerdict::Throttle
        } else {
            RateVerdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_throttle_then_drop_then_recover() {
        let mut l = RateLimiter::new(10, 5);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(l.check(ip, 0), RateVerdict::Allow);
        }
        assert_eq!(l.check(ip, 0), RateVerdict::Throttle);
        for _ in 0..3 {
            assert_eq!(l.check(ip, 0), RateVerdict::Throttle);
        }
        assert_eq!(l.check(ip, 0), RateVerdict::Drop);
        // Another source is untouched.
        assert_eq!(l.check(other, 0), RateVerdict::Allow);
        // Ten per second refill: after two seconds the debt is paid and more.
        assert_eq!(l.check(ip, 2_000), RateVerdict::Allow);
    }
}
