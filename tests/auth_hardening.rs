//! Issue 6, points 2 (brute-force guard) and 4 (stronger digest), black box:
//! the real binary over loopback.
//!
//! - SHA-256 digest (RFC 7616 / RFC 8760) beside MD5: one challenge per
//!   algorithm, SHA-256 first, sharing a nonce; per-user HA1 forms from the
//!   credentials file; `--digest-algorithms`.
//! - `--one-time-nonces`: a reused nonce gets `stale=true`.
//! - `--auth-fail-limit` / `--auth-fail-window` / `--auth-lockout`: a guessing
//!   source or a guessed user gets 403 for the lockout, while other devices
//!   keep registering; the counters in /metrics.
//!
//! Other source addresses are other loopback addresses (127.0.0.2, …).

mod common;

use std::time::Duration;

use common::client::{poll_until, Challenge, Conn, Response, Tcp, Ua, Udp};
use common::counting;
use common::server::{Server, DEFAULT_ARGS, PASSWORD, REALM};
use sipreg::auth::{ha1, ha1_sha256, Algorithm};
use sipreg::sip::HeaderId;

const DOMAIN: &str = "example.com";

fn assert_code(resp: &Response, code: u16) {
    assert_eq!(resp.code(), code, "unexpected answer:\n{resp:?}");
}

fn contact(conn: &dyn Conn, user: &str) -> String {
    format!("<sip:{user}@{}>", conn.local_addr())
}

/// `DEFAULT_ARGS` plus `extra`.
fn start(extra: &[&str]) -> Server {
    Server::start(&[DEFAULT_ARGS, extra].concat())
}

fn ua_from(srv: &Server, ip: &str, user: &str, password: &str) -> Ua<Udp> {
    Ua::new(Udp::connect_from(ip, srv.addr()), user, DOMAIN, password)
}

/// Registers once (challenge, answer) and returns the final answer.
fn register(ua: &mut Ua<Udp>) -> Response {
    let c = contact(&ua.conn, &ua.username);
    ua.register(&[&c], Some(600))
}

fn metric(srv: &Server, name: &str) -> u64 {
    srv.metric(name)
        .unwrap_or_else(|| panic!("{name} missing from /metrics")) as u64
}

/// A credentials file in the temp dir, removed on drop.
struct UsersFile(std::path::PathBuf);

impl UsersFile {
    fn new(text: &str) -> UsersFile {
        let path = std::env::temp_dir().join(common::client::unique("sipreg-users-"));
        std::fs::write(&path, text).expect("write users file");
        UsersFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf8 path")
    }
}

impl Drop for UsersFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------ SHA-256

#[test]
fn sha256_challenge_comes_first_and_registers_end_to_end() {
    let srv = Server::start_default();
    let mut ua = ua_from(&srv, "127.0.0.1", "alice", PASSWORD);
    let r = ua.next_register(&[], None);
    let first = ua.send(&r);
    assert_code(&first, 401);
    // RFC 8760 §2.4: one challenge per algorithm, preferred first; RFC 7616
    // §3.7: the same realm, qop and (here) nonce and opaque in each.
    assert_eq!(first.challenge_algorithms(), ["SHA-256", "MD5"]);
    let challenges = first.challenges();
    let param = |i: usize, name: &str| challenges[i].param(name);
    for name in ["realm", "nonce", "opaque", "qop"] {
        assert!(param(0, name).is_some(), "{name}");
        assert_eq!(param(0, name), param(1, name), "{name}");
    }
    assert_eq!(param(0, "qop").as_deref(), Some("auth"));
    assert_eq!(param(0, "stale"), None);

    // A client that knows both answers SHA-256, and registers.
    let resp = register(&mut ua);
    assert_code(&resp, 200);
    let used = ua.challenge.as_ref().expect("challenged");
    assert_eq!(used.algorithm, Algorithm::Sha256);
    // Refreshes reuse the nonce with the next nc, still SHA-256.
    assert_code(&ua.query(), 200);

    // An MD5-only device answers the second challenge and registers too.
    let mut old = ua_from(&srv, "127.0.0.1", "34020000001320000001", PASSWORD);
    old.algorithms = &[Algorithm::Md5];
    assert_code(&register(&mut old), 200);
    assert_eq!(
        old.challenge.as_ref().map(|c| c.algorithm),
        Some(Algorithm::Md5)
    );

    // Over TCP as well.
    let mut tcp = Ua::new(Tcp::connect(srv.addr()), "bob", DOMAIN, PASSWORD);
    let c = contact(&tcp.conn, "bob");
    assert_code(&tcp.register(&[&c], Some(600)), 200);
    assert_eq!(
        tcp.challenge.as_ref().map(|c| c.algorithm),
        Some(Algorithm::Sha256)
    );

    // A wrong SHA-256 password is an ordinary refusal: a fresh challenge.
    let mut wrong = ua_from(&srv, "127.0.0.1", "carol", "not-the-password");
    let resp = register(&mut wrong);
    assert_code(&resp, 401);
    assert_eq!(resp.challenge_param("stale"), None);
}

#[test]
fn credentials_file_holds_md5_sha256_or_both() {
    let line_md5 = |u: &str, pw: &str| hex(&ha1(u.as_bytes(), REALM.as_bytes(), pw.as_bytes()));
    let line_sha =
        |u: &str, pw: &str| hex(&ha1_sha256(u.as_bytes(), REALM.as_bytes(), pw.as_bytes()));
    // alice: Apache htdigest (MD5 only); bob: both; carol: SHA-256 only.
    let users = UsersFile::new(&format!(
        "# user:realm:MD5-HA1[:SHA-256-HA1]\n\
         alice:{REALM}:{}\n\
         bob:{REALM}:{}:{}\n\
         carol:{REALM}::{}\n",
        line_md5("alice", "alicepw"),
        line_md5("bob", "bobpw"),
        line_sha("bob", "bobpw"),
        line_sha("carol", "carolpw"),
    ));
    let srv = Server::start(&["--realm", REALM, "--users", users.path(), "--threads", "2"]);
    // Only one failure per user here; keep the guard out of the picture anyway.
    let attempt = |user: &str, pw: &str, algorithms: &'static [Algorithm]| {
        let mut ua = ua_from(&srv, "127.0.0.1", user, pw);
        ua.algorithms = algorithms;
        register(&mut ua)
    };
    let md5: &'static [Algorithm] = &[Algorithm::Md5];
    let sha: &'static [Algorithm] = &[Algorithm::Sha256];
    // alice's MD5 HA1 answers MD5; a SHA-256 answer cannot be checked, and is
    // refused like a wrong password (a plain challenge, not stale).
    assert_code(&attempt("alice", "alicepw", md5), 200);
    let resp = attempt("alice", "alicepw", sha);
    assert_code(&resp, 401);
    assert_eq!(resp.challenge_param("stale"), None);
    // bob answers either.
    assert_code(&attempt("bob", "bobpw", md5), 200);
    assert_code(&attempt("bob", "bobpw", sha), 200);
    // carol only SHA-256.
    assert_code(&attempt("carol", "carolpw", sha), 200);
    assert_code(&attempt("carol", "carolpw", md5), 401);
    // The start-up log names the users a SHA-256 client cannot use.
    assert!(
        srv.stderr()
            .contains("credentials file: 1 user(s) without a SHA-256 HA1"),
        "{}",
        srv.stderr_report()
    );
}

#[test]
fn digest_algorithms_flag_sets_the_challenges_and_what_is_accepted() {
    // MD5 alone: one challenge, for devices that choke on two; a SHA-256
    // answer to it is refused like a wrong password.
    let srv = start(&["--digest-algorithms", "md5"]);
    let mut ua = ua_from(&srv, "127.0.0.1", "alice", PASSWORD);
    let r = ua.next_register(&[], None);
    let first = ua.send(&r);
    assert_eq!(first.challenge_algorithms(), ["MD5"]);
    assert_eq!(first.header_lines(HeaderId::WwwAuthenticate).len(), 1);
    let mut forced = Challenge::from_401(&first);
    assert_eq!(forced.algorithm, Algorithm::Md5);
    forced.algorithm = Algorithm::Sha256;
    let mut r = ua.next_register(&[&contact(&ua.conn, "alice")], None);
    r.authorization = Some(forced.authorization("alice", PASSWORD, "REGISTER", &r.uri, None));
    assert_code(&ua.send(&r), 401);
    assert_code(&register(&mut ua), 200);

    // SHA-256 alone: an MD5-only device cannot register.
    let srv = start(&["--digest-algorithms", "sha-256"]);
    let mut ua = ua_from(&srv, "127.0.0.1", "alice", PASSWORD);
    let r = ua.next_register(&[], None);
    let first = ua.send(&r);
    assert_eq!(first.challenge_algorithms(), ["SHA-256"]);
    let mut forced = Challenge::from_401(&first);
    forced.algorithm = Algorithm::Md5;
    let mut r = ua.next_register(&[&contact(&ua.conn, "alice")], None);
    r.authorization = Some(forced.authorization("alice", PASSWORD, "REGISTER", &r.uri, None));
    assert_code(&ua.send(&r), 401);
    assert_code(&register(&mut ua), 200);

    // MD5 first: a client that knows both takes MD5 (the first it supports).
    let srv = start(&["--digest-algorithms", "md5,sha-256"]);
    let mut ua = ua_from(&srv, "127.0.0.1", "alice", PASSWORD);
    assert_code(&register(&mut ua), 200);
    assert_eq!(
        ua.challenge.as_ref().map(|c| c.algorithm),
        Some(Algorithm::Md5)
    );
}

#[test]
fn a_nonce_from_before_a_restart_is_answered_stale() {
    // Two servers stand for one before and after a restart: each has its
    // own secret, so one's nonces are foreign to the other.
    let before = Server::start_default();
    let after = Server::start_default();
    let mut ua = ua_from(&before, "127.0.0.1", "alice", PASSWORD);
    assert_code(&register(&mut ua), 200);
    let old = ua.challenge.clone().expect("challenged");

    let mut moved = ua_from(&after, "127.0.0.1", "alice", PASSWORD);
    let c = contact(&moved.conn, "alice");
    let mut r = moved.next_register(&[&c], None);
    r.authorization =
        Some(old.authorization("alice", PASSWORD, "REGISTER", &r.uri, Some((2, "x"))));
    let resp = moved.send(&r);
    // RFC 2617 §3.2.1: a valid digest for an invalid nonce is stale — the
    // device retries at once instead of taking it for a wrong password.
    assert_code(&resp, 401);
    assert_eq!(resp.challenge_param("stale").as_deref(), Some("true"));
    // With a wrong password it is an ordinary refusal.
    let mut r = moved.next_register(&[&c], None);
    r.authorization = Some(old.authorization("alice", "wrong", "REGISTER", &r.uri, Some((3, "x"))));
    let resp = moved.send(&r);
    assert_code(&resp, 401);
    assert_eq!(resp.challenge_param("stale"), None);
    assert_eq!(metric(&after, "sipreg_auth_failures_total"), 1);
}

// ------------------------------------------------------------ one-time nonces

#[test]
fn one_time_nonces_answer_one_request_then_go_stale() {
    // A low guard limit shows that stale answers do not count as failures.
    let srv = start(&["--one-time-nonces", "--auth-fail-limit", "2"]);
    for algorithms in [&[Algorithm::Sha256][..], &[Algorithm::Md5]] {
        let mut ua = ua_from(&srv, "127.0.0.1", "alice", PASSWORD);
        ua.algorithms = algorithms;
        assert_code(&register(&mut ua), 200);
        let used = ua.challenge.clone().expect("challenged");
        // The same nonce again with the next nc (what a refresh does): stale.
        for _ in 0..3 {
            let resp = ua.query_raw();
            assert_code(&resp, 401);
            assert_eq!(resp.challenge_param("stale").as_deref(), Some("true"));
            let fresh = Challenge::first_supported(&resp, algorithms);
            assert_ne!(
                fresh.nonce, used.nonce,
                "a stale challenge brings a new nonce"
            );
        }
        // Without qop too (the devices the option is for).
        let c = contact(&ua.conn, "alice");
        let mut r = ua.next_register(&[&c], None);
        r.authorization = Some(used.authorization("alice", PASSWORD, "REGISTER", &r.uri, None));
        let resp = ua.send(&r);
        assert_eq!(resp.challenge_param("stale").as_deref(), Some("true"));
        // The device answers the new challenge, once.
        let fresh = Challenge::first_supported(&resp, algorithms);
        let mut r = ua.next_register(&[&c], None);
        r.authorization = Some(fresh.authorization("alice", PASSWORD, "REGISTER", &r.uri, None));
        assert_code(&ua.send(&r), 200);
        let mut r = ua.next_register(&[&c], None);
        r.authorization = Some(fresh.authorization("alice", PASSWORD, "REGISTER", &r.uri, None));
        assert_eq!(
            ua.send(&r).challenge_param("stale").as_deref(),
            Some("true")
        );
    }
    assert_eq!(metric(&srv, "sipreg_auth_failures_total"), 0);
    assert_eq!(metric(&srv, "sipreg_auth_lockouts_total"), 0);
}

/// A REGISTER without Contact answered with the UA's current challenge (no
/// re-challenge): what a refresh sends.
trait QueryRaw {
    fn query_raw(&mut self) -> Response;
}

impl<C: Conn> QueryRaw for Ua<C> {
    fn query_raw(&mut self) -> Response {
        let r = self.next_register(&[], None);
        self.send(&r)
    }
}

// ------------------------------------------------------------ brute-force guard

#[test]
fn a_guessing_source_is_locked_out_while_another_device_registers() {
    let srv = start(&["--auth-fail-limit", "5", "--auth-fail-window", "60"]);
    // The guesser tries a different user each time, so only its address
    // reaches the limit.
    let guess = |i: u32| {
        let mut ua = ua_from(&srv, "127.0.0.2", &format!("user{i}"), "guess");
        register(&mut ua)
    };
    let mut device = ua_from(&srv, "127.0.0.1", "alice", PASSWORD);
    for i in 0..5 {
        let resp = guess(i);
        assert_code(&resp, 401);
        assert_eq!(resp.challenge_param("stale"), None);
        // Meanwhile the well-behaved device registers and refreshes.
        if i == 2 {
            assert_code(&register(&mut device), 200);
        }
    }
    // The sixth request from the source — even without credentials, even
    // with the right password — is refused.
    let mut probe = ua_from(&srv, "127.0.0.2", "user99", PASSWORD);
    let r = probe.next_register(&[], None);
    let resp = probe.send(&r);
    assert_code(&resp, 403);
    assert_eq!(resp.reason(), "Too Many Failed Authentications");
    let mut right = ua_from(&srv, "127.0.0.2", "dave", PASSWORD);
    let resp = register(&mut right);
    assert_code(&resp, 403);
    // The device on 127.0.0.1 keeps refreshing, and a new one registers
    // over TCP.
    assert_code(&device.query(), 200);
    let mut tcp = Ua::new(Tcp::connect(srv.addr()), "erin", DOMAIN, PASSWORD);
    let c = contact(&tcp.conn, "erin");
    assert_code(&tcp.register(&[&c], Some(600)), 200);

    // /metrics: one lockout (the source; each user failed once), the 403s.
    assert_eq!(metric(&srv, "sipreg_auth_lockouts_total"), 1);
    assert_eq!(metric(&srv, "sipreg_auth_locked_rejections_total"), 2);
    assert_eq!(metric(&srv, "sipreg_auth_failures_total"), 5);
    let (_, text) = srv.http_get("/metrics");
    assert!(text.contains("# TYPE sipreg_auth_lockouts_total counter"));
    assert!(
        text.contains("sipreg_responses_by_code_total{code=\"403\"} 2"),
        "{text}"
    );
}

#[test]
fn requests_without_credentials_do_not_count() {
    let srv = start(&["--auth-fail-limit", "2"]);
    let mut ua = ua_from(&srv, "127.0.0.2", "alice", PASSWORD);
    for _ in 0..10 {
        let r = ua.next_register(&[], None);
        let resp = ua.send(&r);
        assert_code(&resp, 401);
    }
    assert_code(&register(&mut ua), 200);
    assert_eq!(metric(&srv, "sipreg_auth_lockouts_total"), 0);
}

#[test]
fn a_user_guessed_from_many_sources_is_refused_from_all() {
    let srv = start(&["--auth-fail-limit", "3"]);
    // One failure from each of three addresses: no address reaches the
    // limit, the user does.
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let mut ua = ua_from(&srv, ip, "victim", "guess");
        assert_code(&register(&mut ua), 401);
    }
    // The right password from a fourth address: refused, the user is locked.
    let mut owner = ua_from(&srv, "127.0.0.5", "victim", PASSWORD);
    let resp = register(&mut owner);
    assert_code(&resp, 403);
    assert_eq!(resp.reason(), "Too Many Failed Authentications");
    // The guessing addresses themselves still serve other users.
    let mut other = ua_from(&srv, "127.0.0.2", "bob", PASSWORD);
    assert_code(&register(&mut other), 200);
    assert_eq!(metric(&srv, "sipreg_auth_lockouts_total"), 1);

    // A user locked out by guesses from one address is refused from another.
    for _ in 0..3 {
        let mut ua = ua_from(&srv, "127.0.0.6", "target", "guess");
        assert_code(&register(&mut ua), 401);
    }
    let mut owner = ua_from(&srv, "127.0.0.7", "target", PASSWORD);
    assert_code(&register(&mut owner), 403);
    // That address (127.0.0.6) and the user were both locked.
    assert_eq!(metric(&srv, "sipreg_auth_lockouts_total"), 3);
}

#[test]
fn the_lockout_ends_after_auth_lockout() {
    let srv = start(&["--auth-fail-limit", "2", "--auth-lockout", "1"]);
    for _ in 0..2 {
        let mut ua = ua_from(&srv, "127.0.0.2", "alice", "guess");
        assert_code(&register(&mut ua), 401);
    }
    let mut ua = ua_from(&srv, "127.0.0.2", "alice", PASSWORD);
    assert_code(&register(&mut ua), 403);
    // Within a few seconds of the 1 s lockout the right password works again.
    let resp = poll_until(Duration::from_secs(5), || {
        let mut ua = ua_from(&srv, "127.0.0.2", "alice", PASSWORD);
        let resp = register(&mut ua);
        (resp.code() != 403).then_some(resp)
    })
    .expect("still locked out 5 s after a 1 s lockout");
    assert_code(&resp, 200);
    assert!(metric(&srv, "sipreg_auth_locked_rejections_total") >= 1);
}

#[test]
fn the_guard_is_off_with_a_zero_limit() {
    let srv = start(&["--auth-fail-limit", "0"]);
    for i in 0..15 {
        let mut ua = ua_from(&srv, "127.0.0.2", "alice", &format!("guess{i}"));
        assert_code(&register(&mut ua), 401);
    }
    let mut ua = ua_from(&srv, "127.0.0.2", "alice", PASSWORD);
    assert_code(&register(&mut ua), 200);
    assert_eq!(metric(&srv, "sipreg_auth_lockouts_total"), 0);
}

// ------------------------------------------------------------ no allocation

/// STYLE habit 6 for the SHA-256 path and the guard, with the counting
/// allocator of tests/common/counting.rs around the sans-IO registrar.
#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn sha256_refresh_and_a_counted_failure_allocate_nothing() {
    use common::sans_io::{SansIo, PASSWORD, REALM};
    use sipreg::auth::{client_response_key, format_nc, Ha1Key};
    use sipreg::registrar::{Handled, Policy};
    use sipreg::sip::{scan, AuthHeader};

    let mut io = SansIo::new(Policy {
        max_expires: 3600,
        default_expires: 600,
        ..Policy::default()
    });
    let source: std::net::SocketAddr = "127.0.0.1:5070".parse().expect("addr");
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKsha{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@127.0.0.1>;tag=f1\r\n\
             To: <sip:alice@127.0.0.1>\r\n\
             Call-ID: alloc-sha-1\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:alice@127.0.0.1:5070>\r\n\
             {auth}\
             Expires: 600\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let mut handle = |bytes: &[u8], secs: u64, count: bool| {
        let mut run = || io.udp(bytes, source, secs * 1000);
        let (h, allocs) = if count {
            counting::counted(run)
        } else {
            (run(), 0)
        };
        (h, allocs, io.out.reply.clone())
    };

    let (h, _, reply) = handle(&request(1, ""), 1, false);
    assert_eq!(h, Handled::Reply(401));
    let msg = scan(&reply).expect("401 scans");
    let first = msg
        .all(HeaderId::WwwAuthenticate)
        .next()
        .and_then(|h| AuthHeader::parse(h.value).ok())
        .expect("a challenge");
    assert_eq!(first.param(b"algorithm"), Some(&b"SHA-256"[..]));
    let nonce = first.param(b"nonce").expect("nonce").to_vec();
    let opaque = first.param(b"opaque").expect("opaque").to_vec();
    let auth_for = |nc: u32, password: &[u8]| {
        let key = Ha1Key::derive(Algorithm::Sha256, b"alice", REALM, password);
        let resp = client_response_key(
            &key,
            &nonce,
            b"REGISTER",
            b"sip:127.0.0.1",
            Some((nc, b"c0ffee")),
        );
        format!(
            "Authorization: Digest username=\"alice\", realm=\"sipreg\", nonce=\"{}\", \
             uri=\"sip:127.0.0.1\", response=\"{}\", algorithm=SHA-256, qop=auth, nc={}, \
             cnonce=\"c0ffee\", opaque=\"{}\"\r\n",
            String::from_utf8_lossy(&nonce),
            String::from_utf8_lossy(&resp),
            String::from_utf8_lossy(&format_nc(nc)),
            String::from_utf8_lossy(&opaque),
        )
    };
    // Register, warm up the reusable buffers with a refresh and a failure.
    assert_eq!(
        handle(&request(2, &auth_for(1, PASSWORD)), 2, false).0,
        Handled::Reply(200)
    );
    assert_eq!(
        handle(&request(3, &auth_for(2, PASSWORD)), 3, false).0,
        Handled::Reply(200)
    );
    assert_eq!(
        handle(&request(4, &auth_for(3, b"wrong")), 4, false).0,
        Handled::Reply(401)
    );

    for cseq in 5..15u32 {
        let req = request(cseq, &auth_for(cseq, PASSWORD));
        let (h, allocs, reply) = handle(&req, u64::from(cseq), true);
        assert_eq!(
            h,
            Handled::Reply(200),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(allocs, 0, "SHA-256 refresh {cseq} allocated {allocs} times");
    }
    // A wrong answer: verified, counted by the guard, challenged again.
    let req = request(20, &auth_for(20, b"wrong"));
    let (h, allocs, _) = handle(&req, 20, true);
    assert_eq!(h, Handled::Reply(401));
    assert_eq!(allocs, 0, "a counted failure allocated {allocs} times");
}
