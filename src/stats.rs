//! Counters for /metrics. Each worker owns one [`WorkerStats`] and is its only
//! writer (relaxed atomics, no contention); readers sum across workers. Every
//! drop path has a named reason here rather than a log line (STYLE habit 5).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a datagram or stream message got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Could not be scanned and no reply could be built (garbage, "jaK").
    Unparseable,
    /// A SIP response arrived; a registrar has no client transactions for it.
    StrayResponse,
    /// An ACK: never answered (RFC 3261 §17.2.1).
    Ack,
    /// Empty datagram or CRLF keep-alive over UDP.
    KeepAlive,
    /// A TCP stream that could not be framed; the connection was closed.
    BadStream,
}

impl Drop {
    pub const ALL: [Drop; 5] = [
        Drop::Unparseable,
        Drop::StrayResponse,
        Drop::Ack,
        Drop::KeepAlive,
        Drop::BadStream,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Drop::Unparseable => "unparseable",
            Drop::StrayResponse => "stray_response",
            Drop::Ack => "ack",
            Drop::KeepAlive => "keepalive",
            Drop::BadStream => "bad_stream",
        }
    }
}

/// Request methods counted separately; the rest land in `other`.
pub const METHOD_LABELS: [&str; 6] = ["register", "options", "message", "invite", "ack", "other"];

#[derive(Debug, Default)]
pub struct WorkerStats {
    pub requests: [AtomicU64; METHOD_LABELS.len()],
    /// Responses sent, by class 1xx..6xx (index 0 = 1xx).
    pub responses: [AtomicU64; 6],
    pub drops: [AtomicU64; Drop::ALL.len()],
    /// Requests answered 4xx/5xx because they were malformed.
    pub parse_errors: AtomicU64,
    pub auth_challenges: AtomicU64,
    pub auth_failures: AtomicU64,
    pub retransmissions: AtomicU64,
    pub bindings_added: AtomicU64,
    pub bindings_refreshed: AtomicU64,
    pub bindings_removed: AtomicU64,
    pub tcp_accepted: AtomicU64,
    pub tcp_closed_idle: AtomicU64,
}

impl WorkerStats {
    #[inline]
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn drop(&self, why: Drop) {
        Self::inc(&self.drops[why as usize]);
    }

    #[inline]
    pub fn response(&self, code: u16) {
        let class = usize::from(code / 100).clamp(1, 6) - 1;
        Self::inc(&self.responses[class]);
    }
}

/// GB28181 counters, shared by workers and the timer thread (relaxed atomics;
/// written rarely compared with the request counters).
#[derive(Debug, Default)]
pub struct GbStats {
    pub keepalives: AtomicU64,
    /// Keep-alives refused: unregistered device, or from another address.
    pub keepalives_rejected: AtomicU64,
    /// Other MANSCDP notifications (Alarm, MediaStatus…) accepted.
    pub notifications: AtomicU64,
    pub went_offline: AtomicU64,
    pub xml_errors: AtomicU64,
    pub catalog_queries: AtomicU64,
    pub catalog_timeouts: AtomicU64,
    pub info_queries: AtomicU64,
    pub info_timeouts: AtomicU64,
    /// Query retransmissions (timer E).
    pub query_retransmissions: AtomicU64,
}

/// Counters the timer thread owns.
#[derive(Debug, Default)]
pub struct TimerStats {
    pub expirations: AtomicU64,
    pub events_fired: AtomicU64,
    pub events_stale: AtomicU64,
}

pub fn read(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}
