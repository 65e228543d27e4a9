//! Entry points shared by the fuzz targets in `fuzz/` (libFuzzer, run with
//! cargo-fuzz) and the stable tests that replay their corpora and
//! regressions, so a fuzz target is tiny and every finding becomes an ordinary
//! test. Nothing here may panic on any input; that is what is being checked.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::auth::{CredentialStore, NonceSecret};
use crate::gb28181::platform::MAX_CHANNELS;
use crate::gb28181::{xml, Platform, PlatformConfig};
use crate::registrar::txcache::TxCache;
use crate::registrar::{Handled, Inbound, Now, Output, Policy, Registrar, TimerEvent, WorkerCtx};
use crate::registry::{ConnRef, Registry, Transport};
use crate::sip::{
    self, frame, frame_resume, Frame, NameAddr, ResponseWriter, Rport, StartLine, Uri, Via,
};
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
    // Any body may be a MANSCDP document.
    let _ = xml::parse(msg.body);
    // The writer answers requests that have someone to answer (a top Via);
    // what it produces must scan, since it copies headers from a request that
    // scanned.
    if !msg.is_request() || msg.top_via().is_none_or(<[u8]>::is_empty) {
        return;
    }
    let mut out = Vec::new();
    let source = SocketAddr::from(([127, 0, 0, 1], 5060));
    ResponseWriter::start(&mut out, &msg, 400, b"Bad Request", source, b"fuzz").finish(b"");
    let answer = match sip::scan(&out) {
        Ok(a) => a,
        Err(e) => panic!(
            "written response does not scan ({e:?}):\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    // RFC 3581 §4: a requested rport comes back holding the source port,
    // whatever (non-)value the request put there.
    let asked = msg
        .top_via()
        .and_then(|v| Via::parse(v).ok())
        .is_some_and(|v| v.rport() == Rport::Requested);
    if asked {
        let got = answer.top_via().and_then(|v| Via::parse(v).ok());
        assert_eq!(
            got.map(|v| v.rport()),
            Some(Rport::Value(source.port())),
            "rport not filled in:\n{}",
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
    // Resumed framing (as a connection keeps it) must agree with framing afresh.
    let mut scanned = 0;
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            let framed = frame_resume(&buf[pos..], &mut scanned);
            assert_eq!(framed, frame(&buf[pos..]), "resumed framing differs");
            if !matches!(framed, Ok(Frame::NeedMore)) {
                scanned = 0;
            }
            match framed {
                Ok(Frame::Message(n)) => {
                    assert!(n > 0 && pos + n <= buf.len(), "frame beyond the buffer");
                    let framed = &buf[pos..pos + n];
                    // The framer and the scanner agree on where a message
                    // ends: a stream cannot be desynchronised by a message the
                    // scanner accepts.
                    if let Ok(msg) = sip::scan(framed) {
                        let end = crate::sip::bytes::offset_in(framed, msg.head)
                            + msg.head.len()
                            + msg.body.len();
                        assert_eq!(end, n, "scanner and framer disagree on the length");
                    }
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

/// Separates the requests of one [`RequestHarness::run`] input.
pub const SEQUENCE: &[u8] = b"\0\0\0\0";

/// The whole sans-IO request path (registrar, digest, GB28181 platform,
/// redirect server) on one input, over UDP or TCP by the first byte.
pub struct RequestHarness {
    /// Digest authentication with a fixed secret (reproducible nonces).
    registrar: Registrar,
    /// `--no-auth` on the same table, so REGISTER reaches the binding code
    /// (a fuzzer cannot forge a digest).
    open: Registrar,
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
        // A fixed secret keeps runs reproducible; half the inputs go without
        // auth (bit 1 of the first byte, see `run`).
        let build = |policy: Policy| {
            Registrar::new(
                policy,
                registry.clone(),
                CredentialStore::new(b"sipreg").with_password(b"secret"),
                NonceSecret::from_bytes([7; 16]),
            )
            .with_platform(platform.clone())
        };
        let open = build(Policy {
            no_auth: true,
            ..policy.clone()
        });
        RequestHarness {
            registrar: build(policy),
            open,
            platform,
            timers,
            stats: WorkerStats::default(),
            tx: TxCache::new(),
            out: Output::default(),
            now_ms: 1_000,
            runs: 0,
        }
    }

    /// One input: byte 0 picks transport (bit 0), authentication (bit 1: off)
    /// and source port (bits 4–7); the rest is one request, or several
    /// separated by [`SEQUENCE`], handled in order on that flow, so a finding
    /// that needs state (register, then unregister) replays from one file.
    /// Timers the requests schedule fire afterwards (time jumps forward), so
    /// expiry, keep-alive and transaction paths run too.
    pub fn run(&mut self, data: &[u8]) {
        let Some((&sel, bytes)) = data.split_first() else {
            return;
        };
        self.runs += 1;
        let mut timers = Vec::new();
        let mut rest = bytes;
        loop {
            let (one, next) = match memchr::memmem::find(rest, SEQUENCE) {
                Some(at) => (&rest[..at], Some(&rest[at + SEQUENCE.len()..])),
                None => (rest, None),
            };
            self.handle_one(sel, one);
            timers.append(&mut self.out.timers);
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
        let far = self.now_ms + 10_000_000;
        for t in timers {
            self.fire(t.event, far);
        }
        while let Ok(TimerCmd::At { item, .. }) = self.timers.try_recv() {
            self.fire(item, far);
        }
        if self.runs % 1024 == 0 {
            self.check_bounds();
        }
    }

    fn handle_one(&mut self, sel: u8, bytes: &[u8]) {
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
        let registrar = if sel & 2 == 0 {
            &self.registrar
        } else {
            &self.open
        };
        let handled = registrar.handle(&inb, now, &mut ctx, &mut self.out);
        if let Handled::Reply(code) = handled {
            self.check_answer(bytes, code);
        }
    }

    /// Whatever came in, the answer frames as one stream message with the
    /// status it claims; answering a well-formed request it also scans, and
    /// every binding it lists reads back as a Contact. (A 400 to a malformed
    /// request may echo the malformed CSeq, RFC 3261 §8.2.6.2, so only its
    /// framing is checked.)
    fn check_answer(&self, request: &[u8], code: u16) {
        let reply = &self.out.reply;
        let text = || String::from_utf8_lossy(reply).into_owned();
        assert_eq!(
            frame(reply),
            Ok(Frame::Message(reply.len())),
            "answer does not frame:\n{}",
            text()
        );
        let status = format!("SIP/2.0 {code} ");
        assert!(reply.starts_with(status.as_bytes()), "status:\n{}", text());
        if sip::scan(request).is_err() {
            return;
        }
        let answer = match sip::scan(reply) {
            Ok(m) => m,
            Err(e) => panic!("answer does not scan ({e:?}):\n{}", text()),
        };
        assert!(matches!(answer.start, StartLine::Response(_)), "{}", text());
        for c in answer.list(sip::HeaderId::Contact) {
            assert!(NameAddr::parse(c).is_ok(), "bad Contact in:\n{}", text());
        }
    }

    /// Memory per device stays bounded whatever the input: bindings by
    /// `max_contacts`, channels by the platform's cap, channel text by the
    /// XML field cap, stored header values by the scanner's line cap.
    pub fn check_bounds(&self) {
        let max_contacts = self.registrar.policy.max_contacts;
        self.registrar.registry.for_each(|aor, d| {
            let aor = String::from_utf8_lossy(aor);
            assert!(d.bindings.len() <= max_contacts, "{aor}: bindings");
            for b in &d.bindings {
                for v in [b.uri(), b.call_id(), b.user_agent()] {
                    assert!(v.len() <= sip::MAX_LINE, "{aor}: stored value");
                }
            }
            for list in [&d.gb().channels, &d.gb().pending_channels] {
                assert!(list.len() <= MAX_CHANNELS, "{aor}: channels");
                for c in list {
                    for f in [&c.device_id, &c.name, &c.address, &c.parent_id] {
                        assert!(f.len() <= xml::MAX_FIELD, "{aor}: channel field");
                    }
                }
            }
        });
    }

    fn fire(&self, event: TimerEvent, now_ms: u64) {
        match &event {
            TimerEvent::Expiry { aor, generation } => {
                let _ = self.registrar.registry.expire(aor, *generation, now_ms);
            }
            TimerEvent::InviteRetransmit { .. } | TimerEvent::InviteTimeout { .. } => {
                let _ = self.registrar.invites.on_timer(&event, now_ms);
                let _ = self.open.invites.on_timer(&event, now_ms);
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
