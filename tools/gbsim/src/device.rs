//! One simulated device as a sans-IO state machine: feed it received bytes and
//! the time, collect what it wants to send. The socket loops live in
//! [`crate::io`].
//!
//! Client transactions (REGISTER, keep-alive MESSAGE, Response MESSAGEs) follow
//! RFC 3261 §17.1.2: over UDP a request is retransmitted after T1, doubling up
//! to T2 (timer E), and given up after 64·T1 (timer F); over TCP only timer F.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipreg::sip::{scan, HeaderId, Method, ResponseWriter, StartLine, Via};

use crate::msg::{self, Challenge, Endpoint, ReqIds, Transport};
use crate::stats::Stats;

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const TIMER_F: Duration = Duration::from_millis(64 * 500);
/// Wait before trying again after a failed or timed-out registration.
const REGISTER_RETRY: Duration = Duration::from_secs(5);
/// Query transactions remembered to recognise retransmissions.
const SEEN_QUERIES: usize = 128;

/// What one device is and does; shared settings come from [`crate::SimConfig`].
#[derive(Debug, Clone)]
pub struct DeviceParams {
    pub id: String,
    pub index: u64,
    pub platform_id: String,
    pub password: String,
    pub realm: String,
    pub expires: u32,
    pub keepalive_interval: Duration,
    pub channels: u32,
    pub catalog_split: u32,
    pub gb2312: bool,
    pub transport: Transport,
    /// Stop sending keep-alives this long after the device started.
    pub silent_after: Option<Duration>,
    pub no_answer: bool,
    pub server: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register,
    Unregister,
    Keepalive,
    Response,
}

/// What a request is made of, kept to rebuild it with credentials after a 401/407.
#[derive(Debug)]
struct Request {
    kind: Kind,
    body: Vec<u8>,
    call_id: String,
    from_tag: String,
}

/// One client transaction in flight.
#[derive(Debug)]
struct Tx {
    kind: Kind,
    branch: String,
    bytes: Vec<u8>,
    req: Request,
    /// The request carries credentials from a challenge to this very chain:
    /// another 401 means they were refused.
    fresh_auth: bool,
    next_retx: Option<Instant>,
    interval: Duration,
    deadline: Instant,
}

/// Bytes to send to an address (over TCP the address is the connection's peer).
pub type Out = Vec<(SocketAddr, Vec<u8>)>;

pub struct Device {
    p: DeviceParams,
    local: SocketAddr,
    stats: Arc<Stats>,
    started: Instant,
    rng: u64,
    cseq: u32,
    reg_call_id: String,
    reg_from_tag: String,
    expires: u32,
    challenge: Option<Challenge>,
    registered: bool,
    ever_registered: bool,
    expires_at: Option<Instant>,
    /// When the next REGISTER (first, refresh or retry) goes out.
    reg_due: Option<Instant>,
    next_keepalive: Option<Instant>,
    keepalive_sn: u32,
    txs: Vec<Tx>,
    seen_queries: VecDeque<String>,
    answered: HashSet<(String, u32)>,
    unregistering: bool,
    warned_realm: bool,
}

impl Device {
    pub fn new(p: DeviceParams, local: SocketAddr, stats: Arc<Stats>, now: Instant) -> Device {
        let seed = now.elapsed().as_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
            ^ (p.index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            ^ u64::from(local.port()) << 32;
        let mut d = Device {
            expires: p.expires,
            p,
            local,
            stats,
            started: now,
            rng: seed | 1,
            cseq: 0,
            reg_call_id: String::new(),
            reg_from_tag: String::new(),
            challenge: None,
            registered: false,
            ever_registered: false,
            expires_at: None,
            reg_due: Some(now),
            next_keepalive: None,
            keepalive_sn: 0,
            txs: Vec::new(),
            seen_queries: VecDeque::new(),
            answered: HashSet::new(),
            unregistering: false,
            warned_realm: false,
        };
        d.reg_call_id = format!("{}@gbsim", d.token());
        d.reg_from_tag = d.token();
        d
    }

    pub fn id(&self) -> &str {
        &self.p.id
    }

    pub fn is_registered(&self) -> bool {
        self.registered
    }

    fn token(&mut self) -> String {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        format!("{:016x}", x.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            device_id: &self.p.id,
            platform_id: &self.p.platform_id,
            local: self.local,
            server: self.p.server,
            transport: self.p.transport,
        }
    }

    /// Builds a request with a fresh branch and CSeq. REGISTERs carry
    /// credentials from the remembered challenge when there is one; MESSAGEs
    /// only when retried after a 401/407 (devices send keep-alives bare).
    fn build(&mut self, req: &Request, fresh_auth: bool) -> (String, Vec<u8>) {
        let (kind, body, call_id, from_tag) = (req.kind, &req.body, &req.call_id, &req.from_tag);
        let branch = format!("{}{}", msg::BRANCH_COOKIE, self.token());
        self.cseq += 1;
        let (method, expires) = match kind {
            Kind::Register => ("REGISTER", self.expires),
            Kind::Unregister => ("REGISTER", 0),
            Kind::Keepalive | Kind::Response => ("MESSAGE", 0),
        };
        let use_auth = fresh_auth || matches!(kind, Kind::Register | Kind::Unregister);
        let cached = if use_auth {
            self.challenge.take()
        } else {
            None
        };
        let auth = match cached {
            Some(mut ch) => {
                let cnonce = self.token();
                let uri = self.endpoint().request_uri();
                let line = ch.authorization(&self.p.id, &self.p.password, method, &uri, &cnonce);
                self.challenge = Some(ch);
                line
            }
            None => String::new(),
        };
        let ids = ReqIds {
            branch: &branch,
            from_tag,
            call_id,
            cseq: self.cseq,
        };
        let ep = self.endpoint();
        let bytes = match kind {
            Kind::Register | Kind::Unregister => msg::register(&ep, &ids, expires, &auth),
            Kind::Keepalive | Kind::Response => msg::message(&ep, &ids, body, &auth),
        };
        (branch, bytes)
    }

    fn send_new(&mut self, now: Instant, req: Request, fresh_auth: bool, out: &mut Out) {
        let kind = req.kind;
        let (branch, bytes) = self.build(&req, fresh_auth);
        match kind {
            Kind::Register | Kind::Unregister => Stats::inc(&self.stats.register_sent),
            _ => {}
        }
        out.push((self.p.server, bytes.clone()));
        let udp = self.p.transport == Transport::Udp;
        self.txs.push(Tx {
            kind,
            branch,
            bytes,
            req,
            fresh_auth,
            next_retx: udp.then(|| now + T1),
            interval: T1,
            deadline: now + TIMER_F,
        });
    }

    fn send_register(&mut self, now: Instant, kind: Kind, out: &mut Out) {
        let req = Request {
            kind,
            body: Vec::new(),
            call_id: self.reg_call_id.clone(),
            from_tag: self.reg_from_tag.clone(),
        };
        self.reg_due = None;
        self.send_new(now, req, false, out);
    }

    fn send_message(&mut self, now: Instant, kind: Kind, body: Vec<u8>, out: &mut Out) {
        let req = Request {
            kind,
            body,
            call_id: format!("{}@gbsim", self.token()),
            from_tag: self.token(),
        };
        self.send_new(now, req, false, out);
    }

    fn silent(&self, now: Instant) -> bool {
        self.p
            .silent_after
            .is_some_and(|s| now.duration_since(self.started) >= s)
    }

    /// The earliest instant at which [`Device::on_tick`] has something to do.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        for tx in &self.txs {
            at(Some(tx.deadline));
            at(tx.next_retx);
        }
        if !self.unregistering {
            at(self.reg_due);
            if self.registered {
                at(self.expires_at);
                if !self.silent(now) {
                    at(self.next_keepalive);
                }
            }
        }
        wake
    }

    /// Timers: retransmissions, timeouts, registration refresh, keep-alives.
    pub fn on_tick(&mut self, now: Instant, out: &mut Out) {
        let mut i = 0;
        while i < self.txs.len() {
            if now >= self.txs[i].deadline {
                let tx = self.txs.swap_remove(i);
                self.on_timeout(now, tx);
                continue;
            }
            let tx = &mut self.txs[i];
            if let Some(at) = tx.next_retx {
                if now >= at {
                    out.push((self.p.server, tx.bytes.clone()));
                    tx.interval = (tx.interval * 2).min(T2);
                    tx.next_retx = Some(now + tx.interval);
                    Stats::inc(&self.stats.retransmits);
                    if tx.kind == Kind::Response {
                        Stats::inc(&self.stats.responses_retransmitted);
                    }
                }
            }
            i += 1;
        }
        if self.unregistering {
            return;
        }
        if self.registered && self.expires_at.is_some_and(|e| now >= e) {
            self.set_registered(false);
            self.stats
                .error(format!("{}: registration expired", self.p.id));
        }
        if self.reg_due.is_some_and(|t| now >= t) {
            self.send_register(now, Kind::Register, out);
        }
        if self.registered && !self.silent(now) {
            if let Some(t) = self.next_keepalive {
                if now >= t {
                    self.keepalive_sn += 1;
                    let body = msg::keepalive_body(&self.p.id, self.keepalive_sn);
                    Stats::inc(&self.stats.keepalives_sent);
                    self.send_message(now, Kind::Keepalive, body, out);
                    let next = t + self.p.keepalive_interval;
                    self.next_keepalive = Some(if next <= now {
                        now + self.p.keepalive_interval
                    } else {
                        next
                    });
                }
            }
        }
    }

    fn set_registered(&mut self, yes: bool) {
        if yes != self.registered {
            self.registered = yes;
            if yes {
                Stats::inc(&self.stats.registered_now);
            } else {
                self.stats
                    .registered_now
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn on_timeout(&mut self, now: Instant, tx: Tx) {
        match tx.kind {
            Kind::Register => {
                Stats::inc(&self.stats.register_timeouts);
                self.stats
                    .error(format!("{}: REGISTER timed out", self.p.id));
                self.reg_due = Some(now + REGISTER_RETRY);
            }
            Kind::Unregister => {
                Stats::inc(&self.stats.register_timeouts);
                self.stats
                    .error(format!("{}: un-REGISTER timed out", self.p.id));
            }
            Kind::Keepalive => Stats::inc(&self.stats.keepalive_timeouts),
            Kind::Response => {
                Stats::inc(&self.stats.responses_timeouts);
                self.stats
                    .error(format!("{}: Response MESSAGE timed out", self.p.id));
            }
        }
    }

    /// Ends the device's activity: no new REGISTER refresh or keep-alive from
    /// now on; transactions in flight go on so their answers are counted, and
    /// with `unregister` a REGISTER with Expires: 0 goes out (after a pending
    /// registration is abandoned). [`Device::idle`] tells when all is answered.
    pub fn close(&mut self, now: Instant, unregister: bool, out: &mut Out) {
        if self.unregistering {
            return;
        }
        self.unregistering = true;
        if unregister {
            self.txs.retain(|t| t.kind != Kind::Register);
            if self.ever_registered {
                self.send_register(now, Kind::Unregister, out);
            }
        }
    }

    /// No transaction in flight.
    pub fn idle(&self) -> bool {
        self.txs.is_empty()
    }

    /// Gives up what is still in flight at the very end, counting it.
    pub fn abandon(&mut self) {
        for tx in self.txs.drain(..) {
            Stats::inc(&self.stats.abandoned);
            if tx.kind == Kind::Unregister {
                self.stats
                    .error(format!("{}: un-REGISTER unanswered at the end", self.p.id));
            }
        }
    }

    /// One received message (a datagram or a framed stream message).
    pub fn on_packet(&mut self, now: Instant, data: &[u8], from: SocketAddr, out: &mut Out) {
        let msg = match scan(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.error(format!(
                    "{}: unparsable message from {from}: {e:?}",
                    self.p.id
                ));
                return;
            }
        };
        match msg.start {
            StartLine::Response(status) => {
                let Some(branch) = msg
                    .top_via()
                    .and_then(|v| Via::parse(v).ok())
                    .and_then(|v| v.branch())
                else {
                    return;
                };
                let Some(pos) = self.txs.iter().position(|t| t.branch.as_bytes() == branch) else {
                    return; // a late retransmitted answer
                };
                if status.code < 200 {
                    // Proceeding: retransmit at T2 from now on (RFC 3261 §17.1.2.2).
                    let tx = &mut self.txs[pos];
                    if tx.next_retx.is_some() {
                        tx.interval = T2;
                        tx.next_retx = Some(now + T2);
                    }
                    return;
                }
                let tx = self.txs.swap_remove(pos);
                self.on_final(now, tx, status.code, &msg, out);
            }
            StartLine::Request(_) => self.on_request(now, &msg, from, out),
        }
    }

    fn on_final(
        &mut self,
        now: Instant,
        tx: Tx,
        code: u16,
        msg: &sipreg::sip::Message<'_>,
        out: &mut Out,
    ) {
        if code == 401 || code == 407 {
            let hdr = if code == 401 {
                HeaderId::WwwAuthenticate
            } else {
                HeaderId::ProxyAuthenticate
            };
            // RFC 8760 §2.4: the first challenge whose algorithm we know
            // (sipreg offers SHA-256, then MD5).
            let challenge = msg
                .all(hdr)
                .find_map(|h| Challenge::parse(h.value, code == 407));
            if tx.kind == Kind::Register || tx.kind == Kind::Unregister {
                Stats::inc(&self.stats.register_challenged);
            }
            if let (Some(ch), false) = (challenge, tx.fresh_auth) {
                if ch.realm != self.p.realm && !self.warned_realm {
                    self.warned_realm = true;
                    self.stats.error(format!(
                        "{}: challenged for realm {:?}, expected {:?}",
                        self.p.id, ch.realm, self.p.realm
                    ));
                }
                self.challenge = Some(ch);
                if tx.kind == Kind::Register || tx.kind == Kind::Unregister {
                    self.reg_due = None;
                }
                self.send_new(now, tx.req, true, out);
                return;
            }
        }
        match tx.kind {
            Kind::Register => {
                self.stats.register_answer(code);
                if (200..300).contains(&code) {
                    let granted =
                        granted_expires(msg, &self.endpoint().contact()).unwrap_or(self.expires);
                    if granted == 0 {
                        self.set_registered(false);
                        self.reg_due = Some(now + REGISTER_RETRY);
                        return;
                    }
                    if !self.ever_registered {
                        self.ever_registered = true;
                        Stats::inc(&self.stats.registered_ok);
                    }
                    if !self.registered {
                        // First keep-alive right away, then every K seconds.
                        self.next_keepalive = Some(now);
                    }
                    self.set_registered(true);
                    let granted = Duration::from_secs(u64::from(granted));
                    self.expires_at = Some(now + granted);
                    // Refresh at 80% of the granted time.
                    self.reg_due = Some(now + granted.mul_f64(0.8).max(Duration::from_millis(500)));
                } else if code == 423 {
                    let min = msg
                        .value(HeaderId::MinExpires)
                        .and_then(|v| sipreg::sip::parse_expires(v).ok());
                    match min {
                        Some(m) if m > self.expires => {
                            self.expires = m;
                            self.send_register(now, Kind::Register, out);
                        }
                        _ => self.register_failed(now, code),
                    }
                } else {
                    self.register_failed(now, code);
                }
            }
            Kind::Unregister => {
                self.stats.register_answer(code);
                if (200..300).contains(&code) {
                    Stats::inc(&self.stats.unregistered);
                    self.set_registered(false);
                } else {
                    self.stats
                        .error(format!("{}: un-REGISTER answered {code}", self.p.id));
                }
            }
            Kind::Keepalive => self.stats.keepalive_answer(code),
            Kind::Response => self.stats.response_answer(code),
        }
    }

    fn register_failed(&mut self, now: Instant, code: u16) {
        Stats::inc(&self.stats.register_failed);
        self.stats
            .error(format!("{}: REGISTER answered {code}", self.p.id));
        self.reg_due = Some(now + REGISTER_RETRY);
    }

    fn to_tag(branch: &[u8]) -> String {
        // FNV-1a: the same tag for a retransmitted request.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in branch {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:x}")
    }

    fn reply(
        &self,
        msg: &sipreg::sip::Message<'_>,
        code: u16,
        reason: &[u8],
        from: SocketAddr,
        out: &mut Out,
    ) {
        let key = transaction_key(msg);
        let mut buf = Vec::with_capacity(400);
        let mut w = ResponseWriter::start(
            &mut buf,
            msg,
            code,
            reason,
            from,
            Self::to_tag(&key).as_bytes(),
        );
        w.header("User-Agent", b"gbsim");
        w.finish(b"");
        out.push((from, buf));
    }

    fn on_request(
        &mut self,
        now: Instant,
        msg: &sipreg::sip::Message<'_>,
        from: SocketAddr,
        out: &mut Out,
    ) {
        match msg.method() {
            Some(Method::Ack) | None => {}
            Some(Method::Message) => self.on_message(now, msg, from, out),
            Some(Method::Options) => self.reply(msg, 200, b"OK", from, out),
            Some(_) => self.reply(msg, 501, b"Not Implemented", from, out),
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        msg: &sipreg::sip::Message<'_>,
        from: SocketAddr,
        out: &mut Out,
    ) {
        let ct = msg.value(HeaderId::ContentType).unwrap_or(b"");
        let ct = ct.split(|&c| c == b';').next().unwrap_or(b"").trim_ascii();
        if !ct.eq_ignore_ascii_case(msg::MANSCDP.as_bytes()) {
            self.reply(msg, 415, b"Unsupported Media Type", from, out);
            return;
        }
        let key = String::from_utf8_lossy(&transaction_key(msg)).into_owned();
        if self.seen_queries.contains(&key) {
            Stats::inc(&self.stats.query_retransmits);
            if !self.p.no_answer {
                self.reply(msg, 200, b"OK", from, out);
            }
            return;
        }
        let q = match msg::parse_manscdp(msg.body) {
            Ok(q) => q,
            Err(e) => {
                self.stats
                    .error(format!("{}: malformed MANSCDP body: {e}", self.p.id));
                self.reply(msg, 400, b"Bad Request", from, out);
                return;
            }
        };
        if self.seen_queries.len() >= SEEN_QUERIES {
            self.seen_queries.pop_front();
        }
        self.seen_queries.push_back(key);
        self.stats.query(&q.cmd_type);
        if self.p.no_answer {
            Stats::inc(&self.stats.queries_unanswered);
            return;
        }
        self.reply(msg, 200, b"OK", from, out);
        if !q.root.eq_ignore_ascii_case("Query") {
            return;
        }
        let sn = q.sn.unwrap_or(0);
        if !self.answered.insert((q.cmd_type.clone(), sn)) {
            return; // a new transaction repeating an SN already answered
        }
        let bodies = if q.cmd_type.eq_ignore_ascii_case("Catalog") {
            msg::catalog_bodies(&msg::CatalogSpec {
                device_id: &self.p.id,
                index: self.p.index,
                sn,
                channels: self.p.channels,
                split: self.p.catalog_split,
                gb2312: self.p.gb2312,
            })
        } else if q.cmd_type.eq_ignore_ascii_case("DeviceInfo") {
            vec![msg::device_info_body(&self.p.id, sn, self.p.channels)]
        } else {
            Vec::new()
        };
        for body in bodies {
            Stats::inc(&self.stats.responses_sent);
            self.send_message(now, Kind::Response, body, out);
        }
    }
}

/// The top Via branch (or Call-ID + CSeq for an RFC 2543 request): what makes
/// a retransmission the same transaction.
fn transaction_key(msg: &sipreg::sip::Message<'_>) -> Vec<u8> {
    if let Some(b) = msg
        .top_via()
        .and_then(|v| Via::parse(v).ok())
        .and_then(|v| v.branch())
    {
        return b.to_vec();
    }
    let mut k = msg.call_id().to_vec();
    k.extend_from_slice(format!(" {}", msg.cseq().seq).as_bytes());
    k
}

/// The expiry the registrar granted our contact: its `;expires=` in the 200's
/// Contact list, else the Expires header.
fn granted_expires(msg: &sipreg::sip::Message<'_>, our_contact: &str) -> Option<u32> {
    let ours = our_contact.trim_start_matches('<').trim_end_matches('>');
    for c in msg.list(HeaderId::Contact) {
        if let Ok(na) = sipreg::sip::NameAddr::parse(c) {
            let text = String::from_utf8_lossy(c);
            if text.contains(ours) {
                if let Some(Ok(e)) = na.expires() {
                    return Some(e);
                }
            }
        }
    }
    msg.value(HeaderId::Expires)
        .and_then(|v| sipreg::sip::parse_expires(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DeviceParams {
        DeviceParams {
            id: "34020000001320000001".into(),
            index: 1,
            platform_id: "34020000002000000001".into(),
            password: "secret".into(),
            realm: "sipreg".into(),
            expires: 3600,
            keepalive_interval: Duration::from_secs(60),
            channels: 16,
            catalog_split: 8,
            gb2312: false,
            transport: Transport::Udp,
            silent_after: None,
            no_answer: false,
            server: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    fn server() -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }

    /// The platform's answer to `req` with `code` and extra header lines.
    fn answer(req: &[u8], code: u16, extra: &str) -> Vec<u8> {
        let msg = scan(req).unwrap();
        let mut out = Vec::new();
        let mut w = ResponseWriter::start(
            &mut out,
            &msg,
            code,
            b"X",
            "127.0.0.1:40000".parse().unwrap(),
            b"s",
        );
        w.raw().extend_from_slice(extra.as_bytes());
        w.finish(b"");
        out
    }

    fn has_auth(req: &[u8]) -> bool {
        scan(req).unwrap().value(HeaderId::Authorization).is_some()
    }

    #[test]
    fn register_challenge_keepalive_and_message_challenge() {
        let stats = Arc::new(Stats::default());
        let t0 = Instant::now();
        let mut d = Device::new(
            params(),
            "127.0.0.1:40000".parse().unwrap(),
            stats.clone(),
            t0,
        );
        let mut out = Out::new();
        d.on_tick(t0, &mut out);
        assert_eq!(out.len(), 1);
        let reg1 = out.pop().unwrap().1;
        assert!(!has_auth(&reg1));
        let chal = "WWW-Authenticate: Digest realm=\"sipreg\", nonce=\"abc\", algorithm=MD5\r\n";
        d.on_packet(t0, &answer(&reg1, 401, chal), server(), &mut out);
        let reg2 = out.pop().unwrap().1;
        assert!(has_auth(&reg2));
        let m2 = scan(&reg2).unwrap();
        assert_eq!(m2.cseq().seq, 2);
        assert_eq!(m2.call_id(), scan(&reg1).unwrap().call_id());
        d.on_packet(
            t0,
            &answer(&reg2, 200, "Expires: 100\r\n"),
            server(),
            &mut out,
        );
        assert!(d.is_registered() && out.is_empty());
        // The first keep-alive goes out at once, without credentials.
        d.on_tick(t0, &mut out);
        let ka = out.pop().unwrap().1;
        let m = scan(&ka).unwrap();
        assert_eq!(m.method(), Some(Method::Message));
        assert!(!has_auth(&ka));
        // Challenged: retried once with credentials for MESSAGE.
        d.on_packet(t0, &answer(&ka, 401, chal), server(), &mut out);
        let ka2 = out.pop().unwrap().1;
        assert!(has_auth(&ka2));
        assert_eq!(scan(&ka2).unwrap().body, m.body);
        d.on_packet(t0, &answer(&ka2, 200, ""), server(), &mut out);
        let s = stats.summary(1, 0.0);
        assert_eq!(s.keepalives_answered(200), 1);
        assert_eq!(s.keepalives.sent, 1);
        // Next keep-alive 60 s later; refresh at 80 s of the granted 100 s.
        assert_eq!(d.next_wake(t0), Some(t0 + Duration::from_secs(60)));
        d.on_tick(t0 + Duration::from_secs(80), &mut out);
        let kinds: Vec<_> = out
            .iter()
            .map(|(_, b)| scan(b).unwrap().method().unwrap())
            .collect();
        assert_eq!(kinds, [Method::Register, Method::Message]);
        assert!(has_auth(&out[0].1), "refresh reuses the nonce");
    }

    #[test]
    fn answers_the_first_challenge_it_knows() {
        let stats = Arc::new(Stats::default());
        let t0 = Instant::now();
        let mut d = Device::new(params(), "127.0.0.1:40000".parse().unwrap(), stats, t0);
        let mut out = Out::new();
        d.on_tick(t0, &mut out);
        let reg1 = out.pop().unwrap().1;
        // An algorithm the simulator does not know comes first: skipped.
        let chal =
            "WWW-Authenticate: Digest realm=\"sipreg\", nonce=\"abc\", algorithm=SHA-512-256\r\n\
                    WWW-Authenticate: Digest realm=\"sipreg\", nonce=\"abc\", algorithm=SHA-256\r\n\
                    WWW-Authenticate: Digest realm=\"sipreg\", nonce=\"abc\", algorithm=MD5\r\n";
        d.on_packet(t0, &answer(&reg1, 401, chal), server(), &mut out);
        let reg2 = out.pop().unwrap().1;
        let m = scan(&reg2).unwrap();
        let h = sipreg::sip::AuthHeader::parse(m.value(HeaderId::Authorization).unwrap()).unwrap();
        assert_eq!(h.param(b"algorithm"), Some(&b"SHA-256"[..]));
        assert_eq!(h.param(b"response").map(<[u8]>::len), Some(64));
    }

    #[test]
    fn udp_retransmits_with_timer_e_and_gives_up_at_f() {
        let stats = Arc::new(Stats::default());
        let t0 = Instant::now();
        let mut d = Device::new(
            params(),
            "127.0.0.1:40000".parse().unwrap(),
            stats.clone(),
            t0,
        );
        let mut out = Out::new();
        d.on_tick(t0, &mut out);
        let first = out.pop().unwrap().1;
        let mut at = t0;
        let mut gaps = Vec::new();
        while let Some(w) = d.next_wake(at) {
            if w > t0 + TIMER_F {
                break;
            }
            gaps.push((w - at).as_millis());
            at = w;
            d.on_tick(at, &mut out);
        }
        assert_eq!(&gaps[..5], [500, 1000, 2000, 4000, 4000]);
        assert!(out.iter().all(|(_, b)| *b == first));
        let s = stats.summary(1, 0.0);
        assert_eq!(s.register.timeouts, 1);
        assert!(s.retransmits >= 9);
        // After the timeout a new registration is due 5 s later.
        assert_eq!(d.next_wake(at), Some(at + REGISTER_RETRY));
    }
}
