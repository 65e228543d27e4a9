//! The sans-IO request path: bytes plus (source, transport, now) in, a response
//! and expiry timers out. No sockets, no clock reads, no threads: the transport
//! calls [`Registrar::handle`] and sends what it writes.

pub mod date;
pub mod limits;
pub mod redirect;
mod register;
pub mod txcache;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::{AuthGuard, CredentialStore, GuardConfig, NonceCounts, NonceSecret};
use crate::gb28181::Platform;
use crate::registry::{Aor, ConnRef, Registry, Transport};
use crate::sip::{
    self, scan, scan_for_reply, HeaderId, Message, Method, ResponseWriter, Scheme, Uri, Via,
};
use crate::stats::{self, Drop, WorkerStats};
use txcache::TxCache;

/// The methods this server answers, for Allow (RFC 3261 §20.5).
pub const ALLOW: &[u8] = b"REGISTER, OPTIONS, MESSAGE, INVITE, ACK, CANCEL, SUBSCRIBE, REFER";
/// Our own Server header value.
pub const SERVER: &[u8] = concat!("sipreg/", env!("CARGO_PKG_VERSION")).as_bytes();

/// Registration policy from the command line.
#[derive(Debug, Clone)]
pub struct Policy {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
    /// Accept only this Request-URI host (lower case); `None` accepts any.
    pub domain: Option<String>,
    /// Serve without digest authentication.
    pub no_auth: bool,
    pub nonce_ttl_secs: u64,
    /// Callers redirected by INVITE/SUBSCRIBE/… must authenticate too.
    pub redirect_auth: bool,
    /// `--one-time-nonces`: a nonce answers one request only.
    pub one_time_nonces: bool,
    /// The brute-force guard (`--auth-fail-limit`, `--auth-fail-window`,
    /// `--auth-lockout`).
    pub auth_guard: GuardConfig,
    /// Granted expiries are lowered by a pseudo-random 0..=N % (`--expires-jitter`).
    pub expires_jitter_pct: u32,
    /// `--expected-devices` (0: default): sizes the nonce-count cap
    /// ([`NonceCounts::for_devices`]).
    pub expected_devices: usize,
}

impl Default for Policy {
    /// The command line's defaults (DESIGN.md contract), authentication on.
    fn default() -> Self {
        Policy {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 10,
            domain: None,
            no_auth: false,
            nonce_ttl_secs: 300,
            redirect_auth: false,
            one_time_nonces: false,
            auth_guard: GuardConfig::default(),
            expires_jitter_pct: 0,
            expected_devices: 0,
        }
    }
}

impl Now {
    /// A fixed instant (tests, benches, replay): monotonic ms and wall seconds.
    pub fn at(mono_ms: u64, unix_secs: u64) -> Now {
        Now {
            mono_ms,
            unix_secs,
            unix_millis: 0,
        }
    }
}

/// State shared by every worker.
pub struct Registrar {
    pub policy: Policy,
    /// The GB28181 platform; without it MANSCDP MESSAGEs get 405.
    pub platform: Option<Arc<Platform>>,
    /// INVITE answers over UDP awaiting their ACK.
    pub invites: redirect::InviteTransactions,
    pub registry: Arc<Registry>,
    pub credentials: CredentialStore,
    pub secret: NonceSecret,
    /// Shared with the admin thread, which reads its gauges for /metrics.
    pub nonce_counts: Arc<NonceCounts>,
    /// Failed digest answers per source and user; lockouts.
    pub guard: AuthGuard,
    opaque: [u8; 32],
    /// Keys the expiry jitter, so devices cannot choose theirs.
    jitter_key: std::collections::hash_map::RandomState,
}

/// One request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub bytes: &'a [u8],
    pub source: SocketAddr,
    pub transport: Transport,
    pub conn: Option<ConnRef>,
}

/// The two clocks the core needs: monotonic for deadlines, wall for Date and
/// nonces.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono_ms: u64,
    pub unix_secs: u64,
    /// Milliseconds within `unix_secs`, for the GB28181 `Date` form.
    pub unix_millis: u16,
}

/// Something the timer thread must do later. Each carries what makes it
/// stale (a generation, an SN, a transaction id), so nothing is ever cancelled:
/// an outdated event is simply a no-op when it fires (STYLE habit 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerEvent {
    /// Remove the device's expired bindings.
    Expiry { aor: Aor, generation: u64 },
    /// GB28181: the device is offline unless a keep-alive arrived since.
    KeepaliveTimeout { aor: Aor, generation: u64 },
    /// GB28181: the catalog for this SN has not completed in time.
    CatalogTimeout { aor: Aor, sn: u32 },
    /// Client transaction timer E (retransmit) for a server-originated request.
    Retransmit { tx: u64 },
    /// Client transaction timer F (give up).
    TransactionTimeout { tx: u64 },
    /// INVITE server transaction timer G: repeat the final answer.
    InviteRetransmit { key: u64 },
    /// INVITE server transaction timer H: stop waiting for the ACK.
    InviteTimeout { key: u64 },
}

/// A timer to put on the wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub deadline_ms: u64,
    pub event: TimerEvent,
}

/// Reused per-worker output buffers.
#[derive(Debug, Default)]
pub struct Output {
    pub reply: Vec<u8>,
    pub timers: Vec<Timer>,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// `Output::reply` holds a response with this status code.
    Reply(u16),
    /// A response to one of our own requests, consumed.
    Absorbed,
    Dropped(Drop),
}

/// Per-worker context the core reads and updates.
pub struct WorkerCtx<'w> {
    pub stats: &'w WorkerStats,
    pub transactions: &'w mut TxCache,
    /// Per-source rate limiting (`--rate-limit`), when enabled.
    pub limiter: Option<&'w mut limits::RateLimiter>,
}

impl Registrar {
    pub fn new(
        policy: Policy,
        registry: Arc<Registry>,
        credentials: CredentialStore,
        secret: NonceSecret,
    ) -> Self {
        let nonce_counts = Arc::new(
            NonceCounts::for_devices(policy.nonce_ttl_secs, policy.expected_devices)
                .with_one_time(policy.one_time_nonces),
        );
        let guard = AuthGuard::new(policy.auth_guard);
        let opaque = secret.opaque();
        Registrar {
            policy,
            platform: None,
            invites: redirect::InviteTransactions::default(),
            registry,
            credentials,
            secret,
            nonce_counts,
            guard,
            opaque,
            jitter_key: Default::default(),
        }
    }

    /// RFC 3261 §10.3 step 1 (and the same rule for redirected requests): with
    /// `--domain`, only that Request-URI host is served.
    fn serves_domain(&self, ruri: &Uri<'_>) -> bool {
        self.policy
            .domain
            .as_ref()
            .is_none_or(|d| ruri.host.eq_ignore_ascii_case(d.as_bytes()))
    }

    /// Serves GB28181 devices through `platform`.
    pub fn with_platform(mut self, platform: Arc<Platform>) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Handles one datagram or one framed stream message.
    pub fn handle(
        &self,
        inb: &Inbound<'_>,
        now: Now,
        ctx: &mut WorkerCtx<'_>,
        out: &mut Output,
    ) -> Handled {
        out.reply.clear();
        out.timers.clear();
        if inb
            .bytes
            .iter()
            .all(|&c| matches!(c, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            return Handled::Dropped(Drop::KeepAlive);
        }
        if let Some(limiter) = ctx.limiter.as_deref_mut() {
            match limiter.check(inb.source.ip(), now.mono_ms) {
                limits::RateVerdict::Allow => {}
                limits::RateVerdict::Drop => return Handled::Dropped(Drop::RateLimited),
                limits::RateVerdict::Throttle => {
                    WorkerStats::inc(&ctx.stats.rate_limited);
                    let Some(m) = scan_for_reply(inb.bytes) else {
                        return Handled::Dropped(Drop::RateLimited);
                    };
                    // RFC 3261 §21.5.4: come back later.
                    let mut w = self.start(out, &m, inb, 503, b"Service Unavailable");
                    w.header("Retry-After", b"1");
                    w.finish(b"");
                    return Handled::Reply(503);
                }
            }
        }
        let msg = match scan(inb.bytes) {
            Ok(m) => m,
            Err(e) => {
                let Some(m) = scan_for_reply(inb.bytes) else {
                    return Handled::Dropped(Drop::Unparseable);
                };
                ctx.stats.parse_error(stats::parse_error_index(e));
                return self.reject(out, &m, inb, e.status(), e.reason());
            }
        };
        let Some(req) = msg.request() else {
            // Answers to our own GB28181 queries end their transactions.
            return match self.platform.as_ref().and_then(|p| p.handle_response(&msg)) {
                Some(_) => Handled::Absorbed,
                None => Handled::Dropped(Drop::StrayResponse),
            };
        };
        // Without a Via there is no one to answer (RFC 3261 §18.2.2): drop.
        if msg.top_via().is_none_or(<[u8]>::is_empty) {
            return Handled::Dropped(Drop::Unparseable);
        }
        // RFC 3261 §18.3: a stream message must say where it ends. The framer
        // hands such a request over only to have it answered before the
        // connection closes.
        if inb.transport == Transport::Tcp && msg.value(HeaderId::ContentLength).is_none() {
            let e = crate::sip::ScanError::ContentLengthRequired;
            ctx.stats.parse_error(stats::parse_error_index(e));
            return self.reject(out, &msg, inb, e.status(), e.reason());
        }
        WorkerStats::inc(&ctx.stats.requests[method_index(req.method)]);
        if req.method == Method::Ack {
            // RFC 3261 §17.2.1: ACK is absorbed, never answered; it ends the
            // retransmission of our answer to its INVITE.
            self.invites.ack(&msg, inb.source);
            return Handled::Dropped(Drop::Ack);
        }

        let top_via = msg.top_via().and_then(|v| Via::parse(v).ok());
        let tx_key = ctx.transactions.key(
            inb.source,
            top_via.and_then(|v| v.branch()),
            msg.call_id(),
            msg.cseq().seq,
            msg.cseq().method,
        );
        if let Some(key) = tx_key {
            if let Some((code, cached)) = ctx.transactions.get(key, now.mono_ms) {
                WorkerStats::inc(&ctx.stats.retransmissions);
                out.reply.extend_from_slice(cached);
                return Handled::Reply(code);
            }
        }

        let handled = self.dispatch(&msg, inb, now, ctx, out);
        if let (Some(key), Handled::Reply(code)) = (tx_key, handled) {
            ctx.transactions.put(key, now.mono_ms, code, &out.reply);
        }
        handled
    }

    fn dispatch(
        &self,
        msg: &Message<'_>,
        inb: &Inbound<'_>,
        now: Now,
        ctx: &mut WorkerCtx<'_>,
        out: &mut Output,
    ) -> Handled {
        let Some(req) = msg.request() else {
            return Handled::Dropped(Drop::StrayResponse);
        };
        if let Err(e) = msg.check_views() {
            ctx.stats.parse_error(stats::PARSE_ERROR_HEADER_VALUE);
            return self.reject(out, msg, inb, 400, e.reason());
        }
        // RFC 3261 §8.2.2.1: a Request-URI scheme we do not understand is 416.
        let uri = match Uri::parse(req.uri) {
            Ok(u) if matches!(u.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) => u,
            Ok(_) => return self.reject(out, msg, inb, 416, "Unsupported URI Scheme"),
            Err(e) => return self.reject(out, msg, inb, 400, e.reason()),
        };
        // RFC 3261 §8.2.2.3: we support no extensions (CANCEL carries none).
        if req.method != Method::Cancel && msg.list(HeaderId::Require).next().is_some() {
            let mut w = self.start(out, msg, inb, 420, b"Bad Extension");
            for tag in msg.list(HeaderId::Require) {
                w.header("Unsupported", tag);
            }
            w.finish(b"");
            return Handled::Reply(420);
        }
        match req.method {
            Method::Register => register::handle(self, msg, &uri, inb, now, ctx, out),
            Method::Message if is_manscdp(msg) => match &self.platform {
                Some(p) => p.handle_message(msg, inb, now, ctx.stats, out, |out, code, reason| {
                    self.reject(out, msg, inb, code, reason)
                }),
                None => self.reject(out, msg, inb, 405, "Method Not Allowed"),
            },
            Method::Invite | Method::Subscribe | Method::Refer | Method::Message => {
                redirect::handle(self, msg, &uri, inb, now, ctx, out)
            }
            Method::Options => {
                let mut w = self.start(out, msg, inb, 200, b"OK");
                w.header("Allow", ALLOW)
                    .header("Accept", b"application/sdp, application/MANSCDP+xml")
                    .header("Supported", b"");
                w.finish(b"");
                Handled::Reply(200)
            }
            // RFC 3261 §9.2: every INVITE is answered at once, so a CANCEL
            // either finds it answered (200, no effect) or finds nothing.
            Method::Cancel => {
                let cseq = msg.cseq();
                let branch = msg
                    .top_via()
                    .and_then(|v| Via::parse(v).ok())
                    .and_then(|v| v.branch());
                let answered = ctx
                    .transactions
                    .key(inb.source, branch, msg.call_id(), cseq.seq, b"INVITE")
                    .is_some_and(|k| ctx.transactions.get(k, now.mono_ms).is_some());
                if answered {
                    self.reject(out, msg, inb, 200, "OK")
                } else {
                    self.reject(out, msg, inb, 481, "Call/Transaction Does Not Exist")
                }
            }
            Method::Other => self.reject(out, msg, inb, 501, "Not Implemented"),
            _ => {
                // RFC 3261 §8.2.1: a known method we do not serve.
                let mut w = self.start(out, msg, inb, 405, b"Method Not Allowed");
                w.header("Allow", ALLOW);
                w.finish(b"");
                Handled::Reply(405)
            }
        }
    }

    /// Starts a response with the headers every answer carries.
    fn start<'o>(
        &self,
        out: &'o mut Output,
        msg: &Message<'_>,
        inb: &Inbound<'_>,
        code: u16,
        reason: &[u8],
    ) -> ResponseWriter<'o> {
        let tag = to_tag(msg);
        let mut w = ResponseWriter::start(&mut out.reply, msg, code, reason, inb.source, &tag);
        w.header("Server", SERVER);
        w
    }

    /// Answers with a status and reason phrase and nothing else.
    fn reject(
        &self,
        out: &mut Output,
        msg: &Message<'_>,
        inb: &Inbound<'_>,
        code: u16,
        reason: &str,
    ) -> Handled {
        self.start(out, msg, inb, code, reason.as_bytes())
            .finish(b"");
        Handled::Reply(code)
    }
}

/// GB/T 28181 §5.3: MANSCDP bodies travel as `Application/MANSCDP+xml`
/// (devices differ in case, so compare without it).
fn is_manscdp(msg: &Message<'_>) -> bool {
    msg.value(HeaderId::ContentType)
        .map(sip::bytes::trim)
        .map(|v| sip::bytes::trim(v.split(|&c| c == b';').next().unwrap_or(v)))
        .is_some_and(|media| media.eq_ignore_ascii_case(b"application/manscdp+xml"))
}

fn method_index(m: Method) -> usize {
    match m {
        Method::Register => 0,
        Method::Options => 1,
        Method::Message => 2,
        Method::Invite => 3,
        Method::Ack => 4,
        _ => 5,
    }
}

/// A To-tag derived from the request's Call-ID and From-tag, so retransmissions
/// and repeated requests of one dialog get the same tag (RFC 3261 §8.2.6.2)
/// without keeping state. FNV-1a: the tag needs uniqueness, not secrecy.
fn to_tag(msg: &Message<'_>) -> [u8; 16] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let from_tag = msg
        .value(HeaderId::From)
        .and_then(|f| sip::NameAddr::parse(f).ok())
        .and_then(|f| f.tag())
        .unwrap_or(b"");
    for &b in msg.call_id().iter().chain(b"|").chain(from_tag) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut tag = [0u8; 16];
    for (i, t) in tag.iter_mut().enumerate() {
        *t = b"0123456789abcdef"[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    tag
}
