//! Per-worker memory of recent answers, so a retransmitted request (RFC 3261
//! §17.2.2: same branch, Call-ID, CSeq, from the same source) gets exactly the
//! same bytes again without being processed twice — no double update, no second
//! nonce-count use, no 500.
//!
//! A fixed table of reusable buffers: a slot is overwritten by a newer
//! transaction that hashes to it, so under extreme rates an old transaction may
//! be forgotten early; the registrar's Call-ID/CSeq check still treats such a
//! late retransmission as a repeat (it answers, but changes nothing).

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;

/// Timer J for non-INVITE server transactions over UDP: 64·T1 (RFC 3261 §17.2.2).
pub const REMEMBER_MS: u64 = 64 * 500;
/// Slots per worker; a power of two.
pub const SLOTS: usize = 2048;
/// Bytes reserved per slot up front, so remembering an answer never allocates
/// (a REGISTER 200 with a few bindings is 500–900 bytes); 2 MiB per worker.
pub const SLOT_BYTES: usize = 1024;

struct Slot {
    key: u64,
    until_ms: u64,
    code: u16,
    response: Vec<u8>,
}

pub struct TxCache {
    slots: Vec<Slot>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for TxCache {
    fn default() -> Self {
        Self::new()
    }
}

impl TxCache {
    pub fn new() -> Self {
        TxCache {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    key: 0,
                    until_ms: 0,
                    code: 0,
                    response: Vec::with_capacity(SLOT_BYTES),
                })
                .collect(),
            // Keyed per process: sources and branches are attacker-chosen.
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The transaction key; `None` for requests without an RFC 3261 branch
    /// (RFC 2543 clients), which are matched by the registrar's CSeq logic only.
    pub fn key(
        &self,
        source: SocketAddr,
        branch: Option<&[u8]>,
        call_id: &[u8],
        cseq: u32,
        method: &[u8],
    ) -> Option<u64> {
        let branch = branch.filter(|b| b.starts_with(b"z9hG4bK") && b.len() > 7)?;
        let mut h = self.hasher.build_hasher();
        h.write(branch);
        h.write_u8(0);
        h.write(call_id);
        h.write_u8(0);
        h.write(method);
        h.write_u32(cseq);
        std::hash::Hash::hash(&source, &mut h);
        // 0 marks an empty slot.
        Some(h.finish() | 1)
    }

    /// The remembered answer for `key`, if still within its lifetime.
    pub fn get(&self, key: u64, now_ms: u64) -> Option<(u16, &[u8])> {
        let s = &self.slots[(key as usize) & (SLOTS - 1)];
        (s.key == key && s.until_ms > now_ms).then_some((s.code, &s.response[..]))
    }

    /// Remembers `response` for `key`; the slot's buffer is reused.
    pub fn put(&mut self, key: u64, now_ms: u64, code: u16, response: &[u8]) {
        let s = &mut self.slots[(key as usize) & (SLOTS - 1)];
        s.key = key;
        s.until_ms = now_ms + REMEMBER_MS;
        s.code = code;
        s.response.clear();
        s.response.extend_from_slice(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_timer_j() {
        let mut c = TxCache::new();
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let k = c
            .key(src, Some(b"z9hG4bKabc"), b"call", 2, b"REGISTER")
            .unwrap();
        assert!(c.get(k, 0).is_none());
        c.put(k, 1000, 200, b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(
            c.get(k, 1000 + REMEMBER_MS - 1),
            Some((200, &b"SIP/2.0 200 OK\r\n\r\n"[..]))
        );
        assert!(c.get(k, 1000 + REMEMBER_MS).is_none());
        let other_src: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert_ne!(
            c.key(other_src, Some(b"z9hG4bKabc"), b"call", 2, b"REGISTER"),
            Some(k)
        );
        assert_ne!(
            c.key(src, Some(b"z9hG4bKabc"), b"call", 3, b"REGISTER"),
            Some(k)
        );
        assert!(c.key(src, Some(b"1234"), b"call", 2, b"REGISTER").is_none());
        assert!(c.key(src, None, b"call", 2, b"REGISTER").is_none());
    }
}
