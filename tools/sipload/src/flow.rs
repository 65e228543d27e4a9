//! Per-device flows as a sans-IO state machine: [`Device::begin`] picks the
//! first leg of a flow, [`Device::on_final`] turns a final response into the
//! next leg or the flow's outcome. Time comes in as a parameter; nothing here
//! touches a socket.
//!
//! A *flow* is what the statistics call a transaction (e.g. a whole digest
//! registration); a *leg* is one SIP client transaction inside it (RFC 3261
//! §17.1.2), with its own branch, CSeq and retransmission timer.

use std::time::Instant;

use sipreg::auth::Ha1;
use sipreg::sip::{AuthHeader, HeaderId, Message};

use crate::msg::Users;

/// What a flow does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// REGISTER → 401 → REGISTER with digest → 200, from a fresh challenge.
    Register,
    /// REGISTER with a digest reusing the last nonce (nc + 1) → 200.
    Refresh,
    RegisterNoAuth,
    Options,
    Keepalive,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Register,
        Kind::Refresh,
        Kind::RegisterNoAuth,
        Kind::Options,
        Kind::Keepalive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Refresh => "refresh",
            Kind::RegisterNoAuth => "register-noauth",
            Kind::Options => "options",
            Kind::Keepalive => "keepalive",
        }
    }
}

/// One SIP transaction inside a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// REGISTER without credentials, expecting 401.
    Challenge,
    /// REGISTER answering a fresh challenge (nc = 1).
    Auth,
    /// REGISTER reusing an earlier nonce with the next nc.
    Refresh,
    NoAuth,
    Options,
    Keepalive,
}

impl Leg {
    pub const COUNT: usize = 6;
    pub const ALL: [Leg; Leg::COUNT] = [
        Leg::Challenge,
        Leg::Auth,
        Leg::Refresh,
        Leg::NoAuth,
        Leg::Options,
        Leg::Keepalive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Leg::Challenge => "register_challenge",
            Leg::Auth => "register_auth",
            Leg::Refresh => "refresh",
            Leg::NoAuth => "register_noauth",
            Leg::Options => "options",
            Leg::Keepalive => "keepalive",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The last challenge a device answered, kept for refreshes. Its buffers are
/// reused when a new challenge arrives.
#[derive(Debug, Clone, Default)]
pub struct AuthState {
    pub nonce: Vec<u8>,
    pub opaque: Option<Vec<u8>>,
    pub realm: Vec<u8>,
    /// The server offered `qop="auth"`.
    pub qop: bool,
    /// 407 / Proxy-Authorization instead of 401 / Authorization.
    pub proxy: bool,
    pub ha1: Ha1,
}

/// The leg in flight.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub kind: Kind,
    pub leg: Leg,
    pub flow_start: Instant,
    pub leg_start: Instant,
    /// Retransmissions of this leg so far.
    pub retrans: u8,
    /// Sum of the finished legs' latencies: a flow's latency is the time it
    /// waited for answers, not the generator's own delay between legs.
    pub waited: std::time::Duration,
    /// A refresh already fell back to a new challenge once.
    pub rechallenged: bool,
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Global device index (AOR, Call-ID, branch).
    pub idx: u32,
    /// CSeq of the current/last request (RFC 3261 §8.1.1.5: +1 per request).
    pub cseq: u32,
    /// Branch generation: +1 per leg, so each leg has a unique branch.
    pub gen: u32,
    /// Nonce-count for the stored nonce (RFC 2617 §3.2.2).
    pub nc: u32,
    /// GB28181 keep-alive serial number.
    pub sn: u32,
    pub pending: Option<Pending>,
    pub auth: Option<Box<AuthState>>,
    pub registered: bool,
}

/// What a final response leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send this leg next (already begun: CSeq and branch advanced).
    Next(Leg),
    /// The flow is over.
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The expected final answer.
    Ok,
    /// An unexpected final answer (its code is in the status counts).
    Failed(Failure),
}

/// Why a flow failed; small and `Copy` so each is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A final status other than the one the leg expects.
    Status,
    /// A 401/407 without a usable Digest challenge.
    BadChallenge,
    /// Challenged again right after answering a challenge.
    Rejected,
    /// No HA1 for the challenge's realm (credentials file with another realm).
    NoCredentials,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Status => "unexpected_status",
            Failure::BadChallenge => "bad_challenge",
            Failure::Rejected => "auth_rejected",
            Failure::NoCredentials => "no_credentials",
        }
    }
}

impl Device {
    pub fn new(idx: u32) -> Self {
        Device {
            idx,
            cseq: 0,
            gen: 0,
            nc: 0,
            sn: 0,
            pending: None,
            auth: None,
            registered: false,
        }
    }

    /// Starts a flow of `kind` at `now` and returns its first leg.
    pub fn begin(&mut self, kind: Kind, now: Instant) -> Leg {
        debug_assert!(self.pending.is_none(), "device {} already busy", self.idx);
        let leg = match kind {
            Kind::Register => Leg::Challenge,
            Kind::Refresh if self.auth.is_some() => Leg::Refresh,
            Kind::Refresh => Leg::Challenge,
            Kind::RegisterNoAuth => Leg::NoAuth,
            Kind::Options => Leg::Options,
            Kind::Keepalive => Leg::Keepalive,
        };
        self.pending = Some(Pending {
            kind,
            leg,
            flow_start: now,
            leg_start: now,
            retrans: 0,
            waited: std::time::Duration::ZERO,
            rechallenged: false,
        });
        self.advance(leg, now);
        leg
    }

    /// New transaction: RFC 3261 §8.1.1.5 CSeq + 1, §8.1.1.7 new branch, and
    /// for a digest the next nonce-count (RFC 2617 §3.2.2).
    fn advance(&mut self, leg: Leg, now: Instant) {
        self.cseq = self.cseq.wrapping_add(1) & 0x7fff_ffff;
        self.gen = self.gen.wrapping_add(1);
        match leg {
            Leg::Auth => self.nc = 1,
            Leg::Refresh => self.nc = self.nc.wrapping_add(1),
            Leg::Keepalive => self.sn = self.sn.wrapping_add(1),
            _ => {}
        }
        if let Some(p) = self.pending.as_mut() {
            p.leg = leg;
            p.leg_start = now;
            p.retrans = 0;
        }
    }

    /// Handles a final response (code ≥ 200) to the pending leg.
    pub fn on_final(&mut self, code: u16, msg: &Message<'_>, users: &Users, now: Instant) -> Step {
        let Some(p) = self.pending else {
            debug_assert!(false, "on_final without a pending leg");
            return Step::Done(Outcome::Failed(Failure::Status));
        };
        let ok = (200..300).contains(&code);
        let challenged = code == 401 || code == 407;
        let step = match p.leg {
            Leg::Challenge if challenged => match self.take_challenge(msg, code == 407, users) {
                Ok(_) => Step::Next(Leg::Auth),
                Err(f) => Step::Done(Outcome::Failed(f)),
            },
            Leg::Auth | Leg::Refresh if challenged => {
                // A refresh whose nonce expired or whose nc was refused gets one
                // new challenge; an answer to a fresh challenge that is
                // challenged again is accepted only with stale=true (RFC 2617
                // §3.2.1: the digest was right, the nonce too old).
                let fresh = p.leg == Leg::Auth;
                match self.take_challenge(msg, code == 407, users) {
                    Ok(stale) if !p.rechallenged && (!fresh || stale) => {
                        if let Some(pp) = self.pending.as_mut() {
                            pp.rechallenged = true;
                        }
                        Step::Next(Leg::Auth)
                    }
                    Ok(_) => Step::Done(Outcome::Failed(Failure::Rejected)),
                    Err(f) => Step::Done(Outcome::Failed(f)),
                }
            }
            Leg::Keepalive => Step::Done(Outcome::Ok),
            _ if ok => {
                if matches!(
                    p.leg,
                    Leg::Challenge | Leg::Auth | Leg::Refresh | Leg::NoAuth
                ) {
                    self.registered = true;
                }
                Step::Done(Outcome::Ok)
            }
            _ => Step::Done(Outcome::Failed(Failure::Status)),
        };
        match step {
            Step::Next(leg) => self.advance(leg, now),
            Step::Done(outcome) => {
                if matches!(outcome, Outcome::Failed(_)) && p.leg != Leg::Keepalive {
                    // Start over with a fresh challenge next time.
                    self.auth = None;
                }
                self.pending = None;
            }
        }
        step
    }

    /// The flow timed out (or the run ended): forget it.
    pub fn abandon(&mut self) {
        self.pending = None;
    }

    /// Stores the Digest challenge of a 401/407; returns whether it said
    /// `stale=true`.
    fn take_challenge(
        &mut self,
        msg: &Message<'_>,
        proxy: bool,
        users: &Users,
    ) -> Result<bool, Failure> {
        let id = if proxy {
            HeaderId::ProxyAuthenticate
        } else {
            HeaderId::WwwAuthenticate
        };
        // RFC 3261 §22.4: a server may offer several challenges; RFC 8760
        // §2.4: answer the first one we support. The load generator speaks
        // MD5 only (its htdigest credentials hold MD5 HA1s), so it skips
        // sipreg's SHA-256 challenge for the MD5 one, which shares its nonce.
        let header = msg
            .all(id)
            .filter_map(|h| AuthHeader::parse(h.value).ok())
            .find(|a| {
                a.is_digest()
                    && a.param(b"algorithm")
                        .is_none_or(|alg| alg.eq_ignore_ascii_case(b"MD5"))
            })
            .ok_or(Failure::BadChallenge)?;
        let nonce = header.param(b"nonce").ok_or(Failure::BadChallenge)?;
        let realm = header.param(b"realm").ok_or(Failure::BadChallenge)?;
        let qop = header.param(b"qop").is_some_and(|q| {
            q.split(|&c| c == b',')
                .any(|t| sipreg::sip::bytes::trim(t).eq_ignore_ascii_case(b"auth"))
        });
        let stale = header
            .param(b"stale")
            .is_some_and(|s| s.eq_ignore_ascii_case(b"true"));

        let mut st = self.auth.take().unwrap_or_default();
        if st.realm != realm || st.ha1 == [0; 16] {
            st.ha1 = users.ha1(self.idx, realm).ok_or(Failure::NoCredentials)?;
            st.realm.clear();
            st.realm.extend_from_slice(realm);
        }
        st.nonce.clear();
        st.nonce.extend_from_slice(nonce);
        match (header.param(b"opaque"), st.opaque.as_mut()) {
            (Some(o), Some(buf)) => {
                buf.clear();
                buf.extend_from_slice(o);
            }
            (Some(o), None) => st.opaque = Some(o.to_vec()),
            (None, _) => st.opaque = None,
        }
        st.qop = qop;
        st.proxy = proxy;
        self.auth = Some(st);
        self.nc = 0;
        Ok(stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Transport;
    use crate::msg::{parse_branch, Ctx, Writer};
    use sipreg::auth::{
        verify, Authenticator, CredentialStore, DigestResponse, NonceCounts, NonceSecret, Verdict,
    };
    use sipreg::sip::{scan, HeaderId, StartLine, Via};
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn ctx(transport: Transport) -> Ctx {
        Ctx {
            users: Arc::new(Users::Prefix {
                prefix: "dev".into(),
                password: "secret".into(),
            }),
            domain: "127.0.0.1".into(),
            transport,
            run_id: 0xabc,
            expires: 3600,
        }
    }

    fn local() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn build(w: &mut Writer, c: &Ctx, d: &Device) -> Vec<u8> {
        let mut out = Vec::new();
        w.write_request(&mut out, c, d, local());
        out
    }

    /// A 401 as sipreg would answer, built with sipreg's own challenge writer.
    fn challenge_response(auth: &Authenticator<'_>, now: u64, stale: bool) -> Vec<u8> {
        let mut hdr = Vec::new();
        auth.challenge(&mut hdr, "WWW-Authenticate", now, stale);
        let mut out = b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK1.1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n".to_vec();
        out.extend_from_slice(&hdr);
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        out
    }

    fn ok_response() -> Vec<u8> {
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK1.1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n".to_vec()
    }

    /// Checks a built REGISTER with sipreg's Authenticator, as the server would.
    fn server_verdict(req: &[u8], auth: &Authenticator<'_>, now: u64) -> Verdict {
        let msg = scan(req).expect("request scans");
        let v = msg
            .value(HeaderId::Authorization)
            .expect("has Authorization");
        let h = AuthHeader::parse(v).unwrap();
        let resp = DigestResponse::from_params(h.params()).unwrap();
        // The stand-alone digest check agrees with the full authenticator.
        let ha1 = sipreg::auth::ha1(b"dev00000007", b"sipreg", b"secret");
        assert!(verify(&resp, b"REGISTER", &ha1));
        assert_eq!(resp.opaque, Some(&auth.secret.opaque()[..]));
        auth.authenticate(&resp, b"REGISTER", now)
    }

    #[test]
    fn digest_flow_and_refreshes_satisfy_sipreg_authenticator() {
        let store = CredentialStore::new(b"sipreg").with_password(b"secret");
        let secret = NonceSecret::from_bytes([7; 16]);
        let counts = NonceCounts::new(300);
        let auth = Authenticator {
            store: &store,
            secret: &secret,
            counts: &counts,
            ttl_secs: 300,
        };
        let c = ctx(Transport::Udp);
        let mut w = Writer::default();
        let now = Instant::now();
        let t = 1_700_000_000;

        let mut d = Device::new(7);
        assert_eq!(d.begin(Kind::Register, now), Leg::Challenge);
        let first = build(&mut w, &c, &d);
        let m = scan(&first).unwrap();
        assert!(m.value(HeaderId::Authorization).is_none());

        let ch = challenge_response(&auth, t, false);
        // sipreg offers SHA-256 first; the MD5 challenge after it is answered.
        let algs: Vec<_> = scan(&ch)
            .unwrap()
            .all(HeaderId::WwwAuthenticate)
            .map(|h| {
                AuthHeader::parse(h.value)
                    .unwrap()
                    .param(b"algorithm")
                    .unwrap()
                    .to_vec()
            })
            .collect();
        assert_eq!(algs, [&b"SHA-256"[..], b"MD5"]);
        let step = d.on_final(401, &scan(&ch).unwrap(), &c.users, now);
        assert_eq!(step, Step::Next(Leg::Auth));
        let second = build(&mut w, &c, &d);
        assert_eq!(server_verdict(&second, &auth, t + 1), Verdict::Authorized);
        // A retransmission is the same bytes, and the server calls it a replay.
        assert_eq!(build(&mut w, &c, &d), second);
        assert!(matches!(
            server_verdict(&second, &auth, t + 1),
            Verdict::Rejected(_)
        ));
        let okr = ok_response();
        assert_eq!(
            d.on_final(200, &scan(&okr).unwrap(), &c.users, now),
            Step::Done(Outcome::Ok)
        );
        assert!(d.registered && d.pending.is_none());

        // Refreshes reuse the nonce with nc 2, 3, …
        for nc in 2..5 {
            assert_eq!(d.begin(Kind::Refresh, now), Leg::Refresh);
            assert_eq!(d.nc, nc);
            let r = build(&mut w, &c, &d);
            assert_eq!(server_verdict(&r, &auth, t + 2), Verdict::Authorized);
            d.on_final(200, &scan(&okr).unwrap(), &c.users, now);
        }

        // An expired nonce: the server says stale, the device answers the new one.
        assert_eq!(d.begin(Kind::Refresh, now), Leg::Refresh);
        let r = build(&mut w, &c, &d);
        assert_eq!(server_verdict(&r, &auth, t + 400), Verdict::Stale);
        let ch = challenge_response(&auth, t + 400, true);
        assert_eq!(
            d.on_final(401, &scan(&ch).unwrap(), &c.users, now),
            Step::Next(Leg::Auth)
        );
        let r = build(&mut w, &c, &d);
        assert_eq!(server_verdict(&r, &auth, t + 401), Verdict::Authorized);
        // Challenged once more: that is a rejection, not a loop.
        let ch = challenge_response(&auth, t + 401, false);
        assert_eq!(
            d.on_final(401, &scan(&ch).unwrap(), &c.users, now),
            Step::Done(Outcome::Failed(Failure::Rejected))
        );
        assert!(d.auth.is_none());
    }

    #[test]
    fn requests_round_trip_through_the_scanner() {
        let mut w = Writer::default();
        for transport in [Transport::Udp, Transport::Tcp] {
            let c = ctx(transport);
            for kind in Kind::ALL {
                let mut d = Device::new(42);
                let leg = d.begin(kind, Instant::now());
                let req = build(&mut w, &c, &d);
                let m = scan(&req).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
                let StartLine::Request(rl) = m.start else {
                    panic!("not a request")
                };
                assert_eq!(m.cseq().seq, d.cseq);
                assert_eq!(m.cseq().method, rl.method_raw);
                assert_eq!(m.call_id(), b"abc-2a@sipload");
                let via = Via::parse(m.top_via().unwrap()).unwrap();
                assert_eq!(via.rport(), sipreg::sip::Rport::Requested);
                assert_eq!(via.transport, transport.name().to_uppercase().as_bytes());
                assert_eq!(parse_branch(via.branch().unwrap()), Some((42, d.gen)));
                let from = m.value(HeaderId::From).unwrap();
                assert!(from.starts_with(b"<sip:dev00000042@127.0.0.1>;tag="));
                m.check_views().unwrap();
                match leg {
                    Leg::Keepalive => {
                        assert_eq!(
                            m.value(HeaderId::ContentType),
                            Some(&b"Application/MANSCDP+xml"[..])
                        );
                        let body = std::str::from_utf8(m.body).unwrap();
                        assert!(body.contains("<CmdType>Keepalive</CmdType>"));
                        assert!(body.contains("<SN>1</SN>"));
                        assert!(body.contains("<DeviceID>dev00000042</DeviceID>"));
                    }
                    Leg::Options => assert_eq!(rl.method_raw, b"OPTIONS"),
                    _ => {
                        assert_eq!(rl.method_raw, b"REGISTER");
                        assert_eq!(m.value(HeaderId::Expires), Some(&b"3600"[..]));
                        assert!(m.value(HeaderId::Contact).is_some());
                    }
                }
            }
        }
    }

    #[test]
    fn each_leg_gets_a_new_branch_and_cseq() {
        let c = ctx(Transport::Udp);
        let now = Instant::now();
        let mut d = Device::new(1);
        d.begin(Kind::Options, now);
        let (g1, s1) = (d.gen, d.cseq);
        let okr = ok_response();
        d.on_final(200, &scan(&okr).unwrap(), &c.users, now);
        d.begin(Kind::Options, now);
        assert!(d.gen > g1 && d.cseq > s1);
        // A failure status ends the flow as a failure.
        let mut busy = okr.clone();
        busy[8..14].copy_from_slice(b"486 Bu");
        assert_eq!(
            d.on_final(486, &scan(&busy).unwrap(), &c.users, now),
            Step::Done(Outcome::Failed(Failure::Status))
        );
    }

    #[test]
    fn challenge_without_digest_is_a_failure() {
        let c = ctx(Transport::Udp);
        let now = Instant::now();
        let mut d = Device::new(1);
        d.begin(Kind::Register, now);
        let r = b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1.1\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            d.on_final(401, &scan(r).unwrap(), &c.users, now),
            Step::Done(Outcome::Failed(Failure::BadChallenge))
        );
    }
}
