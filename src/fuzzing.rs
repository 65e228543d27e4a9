//! Entry points shared by the fuzz targets in `fuzz/` (libFuzzer, run with
//! cargo-fuzz) and the stable tests that replay their corpora and
//! regressions, so a fuzz target is tiny and every finding becomes an ordinary
//! test. Nothing here may panic on any input; that is what is being checked.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::auth::{CredentialStore, NonceSecret};
use crate::gb28181::{Platform, PlatformConfig};
use crate::registrar::txcache::TxCache;
use crate::registrar::{Inbound, Now, Output, Policy, Registrar, TimerEvent, WorkerCtx};
use crate::registry::{ConnRef, Registry, Transport};
use crate::sip::{self, frame, Frame, NameAddr, ResponseWriter, Uri, Via};
use crate::stats::WorkerStats;
use crate::timer::TimerCmd;

/// The scanner and every view and writer path on arbitrary bytes.
pub fn scan(data: &[u8]) {
    let _ = sip::scan_for_reply(data);
    let Ok(msg) = sip::scan(data) else {
        return;
    };
    let _ = msg.check_views();
    for h in msg.headers() {
        let _ = Via::parse(h.value).map(|v| (v.branch(), v.rport(), v.received()));
        let _ = sip::AuthHeader::parse(h.value).map(|a| a.params().count());
        let _ = sip::parse_expires(h.value);
        let _ = sip::parse_max_forwards(h.value);
        for item in sip::ListIter::new(h.value) {
            if let Ok(a) = NameAddr::parse(item) {
                let _ = (
                    a.tag(),
                    a.expires(),
                    a.q(),
                    a.parse_uri().map(|u| u.params().count()),
                );
            }
        }
    }
    if let Some(r) = msg.request() {
        let _ = Uri::parse(r.uri).map(|u| u.params().count());
    }
    // The writer answers requests that have someone to answer (a top Via);
    // what it produces must scan, since it copies headers from a request that
    // scanned.
    if !msg.is_request() || msg.top_via().is_none_or(<[u8]>::is_empty) {
        return;
    }
    let mut out = Vec::new();
    let source = SocketAddr::from(([127, 0, 0, 1], 5060));
    ResponseWriter::start(&mut out, &msg, 400, b"Bad Request", source, b"fuzz").finish(b"");
    if let Err(e) = sip::scan(&out) {
        panic!(
            "written response does not scan ({e:?}):\n{}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// The TCP framer fed the way a connection is: the first byte picks a chunk
/// size, the rest arrives in chunks of that size; each framed message scanned.
pub fn frame_stream(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut buf: Vec<u8> = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            match frame(&buf[pos..]) {
                Ok(Frame::Message(n)) => {
                    assert!(n > 0 && pos + n <= buf.len(), "frame beyond the buffer");
                    let _ = sip::scan(&buf[pos..pos + n]);
                    pos += n;
                }
                Ok(Frame::Ping(n) | Frame::Skip(n)) => {
                    assert!(
                        n > 0 && pos + n <= buf.len(),
                        "keep-alive beyond the buffer"
                    );
                    pos += n;
                }
                Ok(Frame::NeedMore) => break,
                Err(_) => {
                    pos = buf.len();
                    break;
                }
            }
        }
        buf.drain(..pos);
    }
}

/// The whole sans-IO request path (registrar, digest, GB28181 platform,
/// redirect server) on one input, over UDP or TCP by the first byte.
pub struct RequestHarness {
    registrar: Registrar,
    platform: Arc<Platform>,
    timers: Receiver<TimerCmd<TimerEvent>>,
    stats: WorkerStats,
    tx: TxCache,
    out: Output,
    now_ms: u64,
    runs: u64,
}

impl Default for RequestHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestHarness {
    pub fn new() -> Self {
        let registry = Arc::new(Registry::new());
        let (timer_tx, timers) = crossbeam_channel::unbounded();
        let platform = Arc::new(Platform::new(
            PlatformConfig {
                platform_id: "34020000002000000001".into(),
                keepalive_timeout_ms: 180_000,
                query_timeout_ms: 32_000,
                listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            },
            registry.clone(),
            Arc::new(crate::stats::GbStats::default()),
            timer_tx,
        ));
        let policy = Policy {
            min_expires: 1,
            ..Policy::default()
        };
        // A fixed secret keeps runs reproducible; half the inputs go without auth
        // (no_auth on odd runs is chosen per input, see `run`).
        let registrar = Registrar::new(
            policy,
            registry,
            CredentialStore::new(b"sipreg").with_password(b"secret"),
            NonceSecret::from_bytes([7; 16]),
        )
        .with_platform(platform.clone());
        RequestHarness {
            registrar,
            platform,
            timers,
            stats: WorkerStats::default(),
            tx: TxCache::new(),
            out: Output::default(),
            now_ms: 1_000,
            runs: 0,
        }
    }

    /// One input: byte 0 picks transport and source port, the rest is the
    /// message. Timers it schedules are fired at once (time jumps forward), so
    /// expiry, keep-alive and transaction paths run too.
    pub fn run(&mut self, data: &[u8]) {
        let Some((&sel, bytes)) = data.split_first() else {
            return;
        };
        self.runs += 1;
        self.now_ms += 1 + u64::from(sel);
        let transport = if sel & 1 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let source = SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(sel >> 4)));
        let inb = Inbound {
            bytes,
            source,
            transport,
            conn: (transport == Transport::Tcp).then_some(ConnRef {
                worker: 0,
                token: 3,
                id: u64::from(sel >> 4),
            }),
        };
        let mut ctx = WorkerCtx {
            stats: &self.stats,
            transactions: &mut self.tx,
            limiter: None,
        };
        let now = Now::at(self.now_ms, 1_800_000_000 + self.now_ms / 1000);
        let _ = self.registrar.handle(&inb, now, &mut ctx, &mut self.out);
        let far = self.now_ms + 10_000_000;
        for t in std::mem::take(&mut self.out.timers) {
            self.fire(t.event, far);
        }
        while let Ok(TimerCmd::At { item, .. }) = self.timers.try_recv() {
            self.fire(item, far);
        }
    }

    fn fire(&self, event: TimerEvent, now_ms: u64) {
        match &event {
            TimerEvent::Expiry { aor, generation } => {
                let _ = self.registrar.registry.expire(aor, *generation, now_ms);
            }
            TimerEvent::InviteRetransmit { .. } | TimerEvent::InviteTimeout { .. } => {
                let _ = self.registrar.invites.on_timer(&event, now_ms);
            }
            _ => {
                let _ = self.platform.on_timer(&event, now_ms);
            }
        }
    }

    /// How many inputs this harness has seen (fuzz targets rebuild it now and
    /// then so the device table stays small).
    pub fn runs(&self) -> u64 {
        self.runs
    }
}
