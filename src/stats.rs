//! Counters for /metrics. Each worker owns one [`WorkerStats`] and is its only
//! writer (relaxed atomics, no contention); readers sum across workers. Every
//! drop path has a named reason here rather than a log line (STYLE habit 5).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::sip::ScanError;

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
    /// A source far over `--rate-limit` (silent drop).
    RateLimited,
}

impl Drop {
    pub const ALL: [Drop; 6] = [
        Drop::Unparseable,
        Drop::StrayResponse,
        Drop::Ack,
        Drop::KeepAlive,
        Drop::BadStream,
        Drop::RateLimited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Drop::Unparseable => "unparseable",
            Drop::StrayResponse => "stray_response",
            Drop::Ack => "ack",
            Drop::KeepAlive => "keepalive",
            Drop::BadStream => "bad_stream",
            Drop::RateLimited => "rate_limited",
        }
    }
}

/// Why the server closed a TCP connection (`tcp_closed_total{reason}`); each
/// is a bound of `--tcp-*` or of the per-connection buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum TcpClose {
    /// Nothing read for `--tcp-idle-timeout`.
    Idle,
    /// A message begun but not complete within `--tcp-message-timeout` (slowloris).
    MessageTimeout,
    /// A message, or a header section without end, larger than the read
    /// buffer holds (`sip::frame::MAX_STREAM_MESSAGE`).
    ReadBuffer,
    /// Unsent answers reached the write-buffer cap: the peer does not read.
    WriteBuffer,
    /// The stream could not be framed (bad or missing Content-Length).
    Framing,
}

impl TcpClose {
    pub const ALL: [TcpClose; 5] = [
        TcpClose::Idle,
        TcpClose::MessageTimeout,
        TcpClose::ReadBuffer,
        TcpClose::WriteBuffer,
        TcpClose::Framing,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TcpClose::Idle => "idle",
            TcpClose::MessageTimeout => "message_timeout",
            TcpClose::ReadBuffer => "read_buffer",
            TcpClose::WriteBuffer => "write_buffer",
            TcpClose::Framing => "framing",
        }
    }
}

/// Why an accepted TCP connection was closed at once (`tcp_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum TcpReject {
    /// The worker already holds `--tcp-max-connections`.
    PerWorker,
    /// The source IP already holds `--tcp-max-per-source` on this worker.
    PerSource,
}

impl TcpReject {
    pub const ALL: [TcpReject; 2] = [TcpReject::PerWorker, TcpReject::PerSource];

    pub fn label(self) -> &'static str {
        match self {
            TcpReject::PerWorker => "per_worker",
            TcpReject::PerSource => "per_source",
        }
    }
}

/// Request methods counted separately; the rest land in `other`.
pub const METHOD_LABELS: [&str; 6] = ["register", "options", "message", "invite", "ack", "other"];

/// Status codes counted one by one in `responses_by_code`; the last slot
/// counts every other code.
pub const STATUS_CODES: [u16; 22] = [
    100, 200, 202, 302, 400, 401, 403, 404, 405, 407, 415, 416, 420, 423, 480, 481, 483, 500, 501,
    503, 505, 513,
];

/// Why a request was malformed, for `parse_errors_by_reason`.
pub const PARSE_ERROR_LABELS: [&str; 15] = [
    "start_line",
    "request_uri",
    "version",
    "header_line",
    "unterminated",
    "too_large",
    "missing_header",
    "duplicate_header",
    "cseq",
    "cseq_method",
    "content_length",
    "body_too_short",
    "header_value",
    "xml",
    "other",
];

/// The `PARSE_ERROR_LABELS` index of a scanner error.
pub fn parse_error_index(e: ScanError) -> usize {
    match e {
        ScanError::BadStartLine | ScanError::BadStatusCode => 0,
        ScanError::BadRequestUri => 1,
        ScanError::UnsupportedVersion => 2,
        ScanError::BadHeaderLine => 3,
        ScanError::UnterminatedHeaders => 4,
        ScanError::LineTooLong | ScanError::TooManyHeaders | ScanError::MessageTooLarge => 5,
        ScanError::MissingHeader(_) => 6,
        ScanError::DuplicateHeader(_) => 7,
        ScanError::BadCSeq => 8,
        ScanError::CSeqMethodMismatch => 9,
        ScanError::BadContentLength | ScanError::ContentLengthRequired => 10,
        ScanError::BodyTooShort => 11,
        ScanError::Empty => 14,
    }
}
/// `PARSE_ERROR_LABELS` index for a malformed header value (Via, From…).
pub const PARSE_ERROR_HEADER_VALUE: usize = 12;
/// `PARSE_ERROR_LABELS` index for a malformed MANSCDP body.
pub const PARSE_ERROR_XML: usize = 13;

#[derive(Debug, Default)]
pub struct WorkerStats {
    pub requests: [AtomicU64; METHOD_LABELS.len()],
    /// Responses sent, by class 1xx..6xx (index 0 = 1xx).
    pub responses: [AtomicU64; 6],
    pub drops: [AtomicU64; Drop::ALL.len()],
    /// Requests answered 4xx/5xx because they were malformed.
    pub parse_errors: AtomicU64,
    /// The same, by reason (`PARSE_ERROR_LABELS`).
    pub parse_errors_by_reason: [AtomicU64; PARSE_ERROR_LABELS.len()],
    /// Responses sent, by exact code (`STATUS_CODES`, then "other").
    pub responses_by_code: [AtomicU64; STATUS_CODES.len() + 1],
    pub auth_challenges: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Sources or users locked out by the brute-force guard (each lockout
    /// begun counts once).
    pub auth_lockouts: AtomicU64,
    /// Requests answered 403 because their source or user was locked out.
    pub auth_locked_rejections: AtomicU64,
    pub retransmissions: AtomicU64,
    /// Requests answered 503 for exceeding `--rate-limit`.
    pub rate_limited: AtomicU64,
    pub bindings_added: AtomicU64,
    pub bindings_refreshed: AtomicU64,
    pub bindings_removed: AtomicU64,
    pub tcp_accepted: AtomicU64,
    /// Accepted connections closed at once, by [`TcpReject`].
    pub tcp_rejected: [AtomicU64; TcpReject::ALL.len()],
    /// Connections the server closed, by [`TcpClose`].
    pub tcp_closed: [AtomicU64; TcpClose::ALL.len()],
    /// Gauge: TCP connections this worker holds open now.
    pub tcp_open: AtomicU64,
    /// Server-originated requests (GB28181 queries, INVITE retransmissions)
    /// dropped because this worker's command queue was full.
    pub commands_dropped: AtomicU64,
    /// Times this worker found the timer queue full and had to wait for it.
    pub timer_queue_waits: AtomicU64,
    /// Answers the kernel refused to send over UDP (full buffer, unreachable).
    pub udp_send_errors: AtomicU64,
    /// Gauge: the UDP receive buffer of this worker's socket as the kernel
    /// reports it (`SO_RCVBUF`; Linux reports twice the size asked for).
    pub udp_rcvbuf: AtomicU64,
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
        let at = STATUS_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(STATUS_CODES.len());
        Self::inc(&self.responses_by_code[at]);
    }

    /// Counts a malformed request under `parse_errors` and its reason.
    #[inline]
    pub fn parse_error(&self, reason: usize) {
        Self::inc(&self.parse_errors);
        Self::inc(&self.parse_errors_by_reason[reason.min(PARSE_ERROR_LABELS.len() - 1)]);
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
    /// Catalog or DeviceInfo answers refused: not from the device's flow.
    pub answers_refused: AtomicU64,
    /// Catalog items beyond the per-message or per-device caps.
    pub catalog_items_dropped: AtomicU64,
}

/// Counters the timer thread owns.
#[derive(Debug, Default)]
pub struct TimerStats {
    pub expirations: AtomicU64,
    pub events_fired: AtomicU64,
    pub events_stale: AtomicU64,
}

/// State snapshots (`--state`).
#[derive(Debug, Default)]
pub struct PersistStats {
    pub saves: AtomicU64,
    pub save_failures: AtomicU64,
    pub last_save_devices: AtomicU64,
    pub last_save_bytes: AtomicU64,
    pub last_save_micros: AtomicU64,
    /// Devices restored from the snapshot at start.
    pub restored_devices: AtomicU64,
}

pub fn read(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}
