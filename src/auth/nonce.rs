//! Stateless digest nonces.
//!
//! A nonce carries its own issue time and a MAC over it, so any worker can
//! validate any nonce with nothing but the process-wide [`NonceSecret`], and
//! the registrar keeps no per-challenge state (RFC 2617 §3.2.1 suggests
//! exactly this: "time-stamp H(time-stamp ":" ETag ":" private-key)").
//!
//! Layout, as lowercase ASCII hex ([`NONCE_LEN`] = 48 characters):
//!
//! ```text
//! issue time (u64 BE, 8 bytes) ‖ sequence (u32 BE, 4 bytes) ‖ HMAC-MD5-96 (12 bytes)
//! ```
//!
//! The sequence number makes every issued nonce unique even within one second:
//! qop=auth nonce counts are tracked per nonce ([`super::NonceCounts`]), and two
//! devices sharing a nonce would see each other's `nc=00000001` as a replay.
//!
//! The MAC is HMAC-MD5 (RFC 2104) rather than a bare `MD5(secret ‖ time)`, so
//! the construction is sound on its own and not only because the length is
//! fixed; it is truncated to 96 bits (RFC 2104 §5, as HMAC-MD5-96 in RFC 2403),
//! which is plenty against forgeries that must each be tried over the network.
//! The keyed inner and outer MD5 states are computed once, so a MAC costs two
//! compression-function calls.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU32, Ordering};

use md5::{Digest, Md5};

use super::bytes::{ct_eq, hex16, hex_decode_into, hex_encode_into};

/// Bytes of secret drawn at start.
pub const SECRET_LEN: usize = 16;
/// Length of the MAC kept in a nonce (HMAC-MD5 truncated to 96 bits).
const MAC_LEN: usize = 12;
/// Issue time (8) + sequence (4).
const STAMP_LEN: usize = 12;
/// Binary length of a nonce before hex encoding.
pub(crate) const NONCE_RAW_LEN: usize = STAMP_LEN + MAC_LEN;
/// Length in ASCII hex characters of every nonce this module issues.
pub const NONCE_LEN: usize = NONCE_RAW_LEN * 2;
/// How far in the future a nonce's issue time may be and still be accepted.
/// Only this process issues nonces, so this only absorbs a wall clock stepped
/// back a little (NTP); a larger jump invalidates outstanding nonces and
/// clients are simply challenged again.
pub const MAX_FUTURE_SKEW_SECS: u64 = 30;

/// HMAC block size for MD5 (RFC 2104 §2: B = 64).
const MD5_BLOCK: usize = 64;

/// The per-run key behind nonces and `opaque`.
///
/// Shared read-only by every worker (the only mutable part is an atomic
/// sequence counter), typically behind an `Arc`. A restart draws a new secret,
/// which invalidates outstanding nonces: clients just get a fresh challenge.
pub struct NonceSecret {
    /// MD5 state after absorbing `key ^ ipad` (RFC 2104 §2 step 1–2).
    inner: Md5,
    /// MD5 state after absorbing `key ^ opad` (RFC 2104 §2 step 5).
    outer: Md5,
    /// Distinguishes nonces issued in the same second.
    seq: AtomicU32,
    /// Hex of a MAC over a fixed label: constant for the run.
    opaque: [u8; 32],
}

/// Result of [`NonceSecret::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum NonceStatus {
    /// Issued by this process and younger than the ttl.
    Fresh,
    /// Issued by this process but older than the ttl: challenge again with
    /// `stale=true` if the digest itself was right (RFC 2617 §3.2.1).
    Stale,
    /// Not a nonce from this process (wrong length, not hex, bad MAC) or
    /// dated too far in the future.
    Invalid,
}

/// A nonce as sent in a challenge: fixed-length ASCII hex on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// The nonce as ASCII hex, ready to be quoted in a challenge.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Nonce {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always ASCII hex by construction.
        write!(f, "Nonce({})", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for NonceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("NonceSecret(..)")
    }
}

impl NonceSecret {
    /// Draws a fresh secret from `/dev/urandom`.
    pub fn random() -> io::Result<Self> {
        let mut key = [0u8; SECRET_LEN];
        File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(Self::from_bytes(key))
    }

    /// A secret with a known key, for tests and reproducible benches.
    pub fn from_bytes(key: [u8; SECRET_LEN]) -> Self {
        // RFC 2104 §2: the key is zero-padded to the block size, then XORed
        // with ipad (0x36) and opad (0x5c).
        let mut ipad = [0x36u8; MD5_BLOCK];
        let mut opad = [0x5cu8; MD5_BLOCK];
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = Md5::new();
        inner.update(ipad);
        let mut outer = Md5::new();
        outer.update(opad);
        let mut secret = NonceSecret {
            inner,
            outer,
            seq: AtomicU32::new(0),
            opaque: [0u8; 32],
        };
        // The label cannot collide with a nonce stamp: those are 12 bytes.
        secret.opaque = hex16(&secret.mac(b"sipreg digest opaque v1"));
        secret
    }

    /// Full HMAC-MD5 of `msg` under the secret (RFC 2104 §2).
    fn mac(&self, msg: &[u8]) -> [u8; 16] {
        let mut inner = self.inner.clone();
        inner.update(msg);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// Issues a nonce stamped with `now_secs` (seconds on the same clock later
    /// passed to [`check`](Self::check), normally Unix time).
    pub fn issue(&self, now_secs: u64) -> Nonce {
        // Relaxed: uniqueness is all we need, not ordering with other memory.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..8].copy_from_slice(&now_secs.to_be_bytes());
        raw[8..STAMP_LEN].copy_from_slice(&seq.to_be_bytes());
        let mac = self.mac(&raw[..STAMP_LEN]);
        raw[STAMP_LEN..].copy_from_slice(&mac[..MAC_LEN]);
        let mut hex = [0u8; NONCE_LEN];
        hex_encode_into(&raw, &mut hex);
        Nonce(hex)
    }

    /// Checks a nonce echoed by a client: was it issued by this process, and
    /// is it at most `ttl_secs` old at `now_secs`?
    pub fn check(&self, nonce: &[u8], now_secs: u64, ttl_secs: u64) -> NonceStatus {
        let Some((raw, issued)) = decode(nonce) else {
            return NonceStatus::Invalid;
        };
        let mac = self.mac(&raw[..STAMP_LEN]);
        // Constant time: a byte-by-byte early exit would let a forger learn
        // the MAC one byte at a time from response timing.
        if !ct_eq(&mac[..MAC_LEN], &raw[STAMP_LEN..]) {
            return NonceStatus::Invalid;
        }
        if issued > now_secs.saturating_add(MAX_FUTURE_SKEW_SECS) {
            return NonceStatus::Invalid;
        }
        if now_secs.saturating_sub(issued) > ttl_secs {
            NonceStatus::Stale
        } else {
            NonceStatus::Fresh
        }
    }

    /// The `opaque` value sent in every challenge: 32 hex characters, fixed
    /// for the life of this secret (RFC 2617 §3.2.1: the client returns it
    /// unchanged).
    pub fn opaque(&self) -> [u8; 32] {
        self.opaque
    }

    /// Whether a client echoed this run's `opaque` (constant time). Optional
    /// to enforce: the nonce MAC already proves the challenge came from us.
    pub fn opaque_matches(&self, opaque: &[u8]) -> bool {
        ct_eq(&self.opaque, opaque)
    }
}

/// Splits a nonce of our format into its binary form and issue time, without
/// checking the MAC. `None` for a wrong length or non-hex characters.
pub(crate) fn decode(nonce: &[u8]) -> Option<([u8; NONCE_RAW_LEN], u64)> {
    let mut raw = [0u8; NONCE_RAW_LEN];
    if !hex_decode_into(nonce, &mut raw) {
        return None;
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&raw[..8]);
    Some((raw, u64::from_be_bytes(time)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 300;
    const NOW: u64 = 1_700_000_000;

    fn secret() -> NonceSecret {
        NonceSecret::from_bytes(*b"0123456789abcdef")
    }

    #[test]
    fn issue_then_check_round_trip() {
        let s = secret();
        let n = s.issue(NOW);
        assert_eq!(n.as_bytes().len(), NONCE_LEN);
        assert!(n.as_bytes().iter().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(s.check(n.as_bytes(), NOW, TTL), NonceStatus::Fresh);
        assert_eq!(s.check(n.as_bytes(), NOW + TTL, TTL), NonceStatus::Fresh);
    }

    #[test]
    fn nonce_goes_stale_after_ttl() {
        let s = secret();
        let n = s.issue(NOW);
        assert_eq!(
            s.check(n.as_bytes(), NOW + TTL + 1, TTL),
            NonceStatus::Stale
        );
        assert_eq!(s.check(n.as_bytes(), u64::MAX, TTL), NonceStatus::Stale);
    }

    #[test]
    fn nonces_issued_in_the_same_second_differ() {
        let s = secret();
        assert_ne!(s.issue(NOW), s.issue(NOW));
    }

    #[test]
    fn any_thread_validates_any_nonce() {
        let s = std::sync::Arc::new(secret());
        let n = s.issue(NOW);
        let s2 = std::sync::Arc::clone(&s);
        let status = std::thread::spawn(move || s2.check(n.as_bytes(), NOW + 1, TTL))
            .join()
            .expect("checker thread");
        assert_eq!(status, NonceStatus::Fresh);
    }

    #[test]
    fn tampered_nonce_is_invalid() {
        let s = secret();
        let n = s.issue(NOW);
        for i in 0..NONCE_LEN {
            let mut t = n.0;
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            assert_eq!(s.check(&t, NOW, TTL), NonceStatus::Invalid, "char {i}");
        }
        // Moving the issue time forward (to dodge staleness) breaks the MAC.
        let old = s.issue(NOW - 10 * TTL);
        let mut moved = old.0;
        moved[..16].copy_from_slice(&n.as_bytes()[..16]);
        assert_eq!(s.check(&moved, NOW, TTL), NonceStatus::Invalid);
    }

    #[test]
    fn uppercase_hex_of_a_valid_nonce_is_still_ours() {
        let s = secret();
        let upper = s.issue(NOW).as_bytes().to_ascii_uppercase();
        assert_eq!(s.check(&upper, NOW, TTL), NonceStatus::Fresh);
    }

    #[test]
    fn wrong_length_or_non_hex_is_invalid() {
        let s = secret();
        let n = s.issue(NOW);
        let b = n.as_bytes();
        assert_eq!(s.check(&b[..NONCE_LEN - 1], NOW, TTL), NonceStatus::Invalid);
        assert_eq!(s.check(&b[..NONCE_LEN - 2], NOW, TTL), NonceStatus::Invalid);
        assert_eq!(s.check(b"", NOW, TTL), NonceStatus::Invalid);
        let mut longer = b.to_vec();
        longer.extend_from_slice(b"00");
        assert_eq!(s.check(&longer, NOW, TTL), NonceStatus::Invalid);
        let mut bad = b.to_vec();
        bad[3] = b'g';
        assert_eq!(s.check(&bad, NOW, TTL), NonceStatus::Invalid);
        // A real capture's nonce from another server.
        assert_eq!(
            s.check(b"a8afe6fcbee6331d89d3eb0d3d19ce39", NOW, TTL),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn other_secret_rejects() {
        let n = secret().issue(NOW);
        let other = NonceSecret::from_bytes(*b"fedcba9876543210");
        assert_eq!(other.check(n.as_bytes(), NOW, TTL), NonceStatus::Invalid);
    }

    #[test]
    fn future_nonce_beyond_skew_is_invalid() {
        let s = secret();
        let n = s.issue(NOW + MAX_FUTURE_SKEW_SECS);
        assert_eq!(s.check(n.as_bytes(), NOW, TTL), NonceStatus::Fresh);
        let n = s.issue(NOW + MAX_FUTURE_SKEW_SECS + 1);
        assert_eq!(s.check(n.as_bytes(), NOW, TTL), NonceStatus::Invalid);
    }

    #[test]
    fn hmac_matches_rfc_2202_vector() {
        // RFC 2202 §2 test case 2: key "Jefe" — padded here to our 16-byte key,
        // which HMAC treats identically (zero padding to the block size).
        let mut key = [0u8; SECRET_LEN];
        key[..4].copy_from_slice(b"Jefe");
        let s = NonceSecret::from_bytes(key);
        assert_eq!(
            &hex16(&s.mac(b"what do ya want for nothing?")),
            b"750c783e6ab0b503eaa86e310a5db738"
        );
    }

    #[test]
    fn opaque_is_fixed_per_secret_and_hex() {
        let s = secret();
        assert_eq!(s.opaque(), s.opaque());
        assert!(s.opaque().iter().all(|c| c.is_ascii_hexdigit()));
        assert!(s.opaque_matches(&s.opaque()));
        assert!(!s.opaque_matches(b"a853e4f25298413f9bf3a9aa6767857d"));
        assert_ne!(
            s.opaque(),
            NonceSecret::from_bytes(*b"fedcba9876543210").opaque()
        );
    }

    #[test]
    fn random_secrets_differ() {
        let a = NonceSecret::random().expect("/dev/urandom");
        let b = NonceSecret::random().expect("/dev/urandom");
        assert_ne!(a.opaque(), b.opaque());
    }
}
