//! REGISTER over UDP against the real binary (RFC 3261 §10.3, RFC 2617 digest,
//! RFC 3581 rport): every registrar rule in DESIGN.md's checklist.

mod common;

use std::time::{Duration, Instant};

use common::client::{poll_until, Challenge, Conn, Register, Response, Ua, Udp};
use common::server::Server;
use common::vectors::fixture;
use sipreg::sip::HeaderId;

const DOMAIN: &str = "example.com";
const A: &str = "sip:alice@192.0.2.1:5071";
const B: &str = "sip:alice@192.0.2.2:5072";
const C: &str = "sip:alice@192.0.2.3:5073";

fn contact(uri: &str) -> String {
    format!("<{uri}>")
}

fn contact_exp(uri: &str, secs: u32) -> String {
    format!("<{uri}>;expires={secs}")
}

/// A UA for `user@example.com` with the default shared password.
fn ua(srv: &Server, user: &str) -> Ua<Udp> {
    Ua::new(Udp::connect(srv.addr()), user, DOMAIN, "secret")
}

fn assert_code(resp: &Response, code: u16) {
    assert_eq!(resp.code(), code, "unexpected answer:\n{resp:?}");
}

/// `got` is `want` or one second less (a second may tick between the
/// registration and the answer).
fn assert_expires_about(resp: &Response, uri: &str, want: u32) {
    let got = resp
        .expires_of(uri)
        .unwrap_or_else(|| panic!("{uri} not listed:\n{resp:?}"));
    assert!(
        got == want || got + 1 == want,
        "{uri}: expires={got}, expected {want}:\n{resp:?}"
    );
}

/// An htdigest file in the temp dir, removed on drop.
struct UsersFile(std::path::PathBuf);

impl UsersFile {
    fn new(lines: &[(&str, &str, &str)]) -> UsersFile {
        let path = std::env::temp_dir().join(common::client::unique("sipreg-users-"));
        let mut text = String::new();
        for (user, realm, password) in lines {
            let ha1 = sipreg::auth::ha1(user.as_bytes(), realm.as_bytes(), password.as_bytes());
            let hex: String = ha1.iter().map(|b| format!("{b:02x}")).collect();
            // Both HA1 forms, so the test client may answer SHA-256 or MD5.
            let sha =
                sipreg::auth::ha1_sha256(user.as_bytes(), realm.as_bytes(), password.as_bytes());
            let sha: String = sha.iter().map(|b| format!("{b:02x}")).collect();
            text += &format!("{user}:{realm}:{hex}:{sha}\n");
        }
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

// ------------------------------------------------------------ digest

#[test]
fn unauthenticated_register_is_challenged() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    let r = ua.next_register(&[&contact(A)], None);
    let resp = ua.send(&r);
    assert_code(&resp, 401);
    assert_eq!(resp.reason(), "Unauthorized");
    assert_eq!(resp.challenge_param("realm").as_deref(), Some("sipreg"));
    // SHA-256 first, then MD5 (RFC 8760 §2.4; tests/auth_hardening.rs checks both).
    assert_eq!(
        resp.challenge_param("algorithm").as_deref(),
        Some("SHA-256")
    );
    assert_eq!(resp.challenge_param("qop").as_deref(), Some("auth"));
    assert!(resp.challenge_param("nonce").is_some_and(|n| !n.is_empty()));
    assert!(resp
        .challenge_param("opaque")
        .is_some_and(|o| !o.is_empty()));
    assert_eq!(resp.challenge_param("stale"), None);
    // Nothing was bound by the unauthenticated request.
    assert_eq!(ua.query().contacts(), vec![]);
}

#[test]
fn digest_with_qop_registers_and_200_lists_binding_with_date() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    let resp = ua.register(&[&contact(A)], None);
    assert_code(&resp, 200);
    assert_eq!(resp.reason(), "OK");
    assert_expires_about(&resp, A, 3600);
    assert_eq!(resp.contacts().len(), 1);
    assert!(resp.has(HeaderId::Date), "200 without Date:\n{resp:?}");
    // Each binding on its own Contact header line.
    assert_eq!(resp.header_lines(HeaderId::Contact).len(), 1);
    assert_eq!(resp.call_id(), ua.reg.call_id);
    assert_eq!(resp.cseq(), (ua.reg.cseq, "REGISTER".to_string()));
}

#[test]
fn digest_without_qop_registers() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "bob");
    let q = ua.next_register(&[], None);
    let first = ua.send(&q);
    let ch = Challenge::from_401(&first);
    let mut r = ua.next_register(&[&contact(A)], None);
    r.authorization = Some(ch.authorization("bob", "secret", "REGISTER", &r.uri, None));
    let resp = ua.send(&r);
    assert_code(&resp, 200);
    assert_expires_about(&resp, A, 3600);
}

#[test]
fn opaque_must_be_echoed() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    let q = ua.next_register(&[], None);
    let first = ua.send(&q);
    let ch = Challenge::from_401(&first);

    // Each attempt uses the next nonce-count, as a client would.
    for (nc, opaque) in [(1, None), (2, Some("0".repeat(32)))] {
        let changed = Challenge {
            opaque: opaque.clone(),
            ..ch.clone()
        };
        let mut r = ua.next_register(&[&contact(A)], None);
        r.authorization = Some(changed.authorization(
            "alice",
            "secret",
            "REGISTER",
            &r.uri,
            Some((nc, "abcdef")),
        ));
        let resp = ua.send(&r);
        assert_code(&resp, 401);
        assert_eq!(resp.challenge_param("stale"), None, "opaque {opaque:?}");
    }
    // The same digest with the opaque echoed is accepted.
    let mut r = ua.next_register(&[&contact(A)], None);
    r.authorization =
        Some(ch.authorization("alice", "secret", "REGISTER", &r.uri, Some((3, "abcdef"))));
    assert_code(&ua.send(&r), 200);
}

#[test]
fn expired_nonce_is_answered_stale_true() {
    let srv = Server::start_with(&[("--nonce-ttl", "1")]);
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A)], None), 200);
    let old = ua.challenge.clone().expect("challenged");

    // Keep answering with the same nonce (a fresh nc each time) until the
    // server calls it stale.
    let stale = poll_until(Duration::from_secs(6), || {
        let r = ua.next_register(&[], None);
        let resp = ua.send(&r);
        match resp.code() {
            200 => None,
            _ => Some(resp),
        }
    })
    .expect("nonce with a 1 s TTL never went stale within 6 s");
    assert_code(&stale, 401);
    assert_eq!(stale.challenge_param("stale").as_deref(), Some("true"));
    let fresh = Challenge::from_401(&stale);
    assert_ne!(
        fresh.nonce, old.nonce,
        "stale challenge must carry a new nonce"
    );

    // A wrong digest with the expired nonce is not "stale": plain challenge.
    let mut r = ua.next_register(&[], None);
    r.authorization =
        Some(old.authorization("alice", "wrong", "REGISTER", &r.uri, Some((99, "x"))));
    let resp = ua.send(&r);
    assert_code(&resp, 401);
    assert_eq!(resp.challenge_param("stale"), None);

    // The client retries with the new nonce and succeeds.
    ua.challenge = Some(fresh);
    ua.nc = 0;
    let resp = ua.register(&[&contact(B)], None);
    assert_code(&resp, 200);
    assert_eq!(resp.contact_uris(), vec![A.to_string(), B.to_string()]);
}

#[test]
fn repeated_or_lower_nonce_count_is_a_replay() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A)], None), 200); // nc=1
    assert_code(&ua.register(&[&contact(A)], None), 200); // nc=2
    let ch = ua.challenge.clone().expect("challenged");

    for nc in [2, 1] {
        let mut r = ua.next_register(&[&contact_exp(A, 0)], None);
        r.authorization = Some(ch.authorization(
            "alice",
            "secret",
            "REGISTER",
            &r.uri,
            Some((nc, "0a4f113b")),
        ));
        let resp = ua.send(&r);
        assert_code(&resp, 401);
        assert_eq!(resp.challenge_param("stale"), None, "nc={nc}");
    }
    // The replays removed nothing; a higher nc (gaps allowed) works.
    ua.nc = 5;
    let resp = ua.register(&[], None);
    assert_code(&resp, 200);
    assert_eq!(resp.contact_uris(), vec![A.to_string()]);
}

#[test]
fn wrong_password_and_unknown_user_get_identical_answers() {
    let users = UsersFile::new(&[("alice", "sipreg", "alicepw")]);
    let srv = Server::start(&[
        "--realm",
        "sipreg",
        "--users",
        users.path(),
        "--threads",
        "2",
    ]);

    let answer = |user: &str, password: &str| {
        let mut ua = Ua::new(Udp::connect(srv.addr()), user, DOMAIN, password);
        let q = ua.next_register(&[], None);
        let first = ua.send(&q);
        ua.challenge = Some(Challenge::from_401(&first));
        let r = ua.next_register(&[&contact(A)], None);
        let resp = ua.send(&r);
        (first, resp)
    };
    let (plain, wrong_password) = answer("alice", "not-alicepw");
    let (_, unknown_user) = answer("mallory", "whatever");

    for resp in [&plain, &wrong_password, &unknown_user] {
        assert_code(resp, 401);
        assert_eq!(resp.reason(), "Unauthorized");
        assert_eq!(resp.challenge_param("stale"), None);
        assert_eq!(resp.challenge_param("realm").as_deref(), Some("sipreg"));
    }
    assert_eq!(wrong_password.header_names(), unknown_user.header_names());
    assert_eq!(
        wrong_password.challenge_param_names(),
        unknown_user.challenge_param_names()
    );
    assert_eq!(plain.header_names(), wrong_password.header_names());

    // And the right password works for the file's user.
    let mut alice = Ua::new(Udp::connect(srv.addr()), "alice", DOMAIN, "alicepw");
    assert_code(&alice.register(&[&contact(A)], None), 200);
}

#[test]
fn users_file_user_cannot_register_another_aor() {
    let users = UsersFile::new(&[("alice", "sipreg", "alicepw"), ("bob", "sipreg", "bobpw")]);
    let srv = Server::start(&[
        "--realm",
        "sipreg",
        "--users",
        users.path(),
        "--password",
        "secret",
        "--threads",
        "2",
    ]);
    // alice authenticates correctly but asks for bob's AOR.
    let mut ua = Ua::new(Udp::connect(srv.addr()), "alice", DOMAIN, "alicepw");
    ua.reg = Register::new("bob", DOMAIN);
    let resp = ua.register(&[&contact(A)], None);
    assert_code(&resp, 403);
    assert_eq!(resp.reason(), "Forbidden");

    // bob's AOR stayed empty; bob himself may register it.
    let mut bob = Ua::new(Udp::connect(srv.addr()), "bob", DOMAIN, "bobpw");
    assert_eq!(bob.query().contacts(), vec![]);
    assert_code(&bob.register(&[&contact(B)], None), 200);
    // A file user's HA1 wins over the shared password...
    let mut alice_shared = Ua::new(Udp::connect(srv.addr()), "alice", DOMAIN, "secret");
    assert_code(&alice_shared.register(&[&contact(A)], None), 401);
    // ...and an id not in the file uses the shared password.
    let mut carol = Ua::new(Udp::connect(srv.addr()), "carol", DOMAIN, "secret");
    assert_code(&carol.register(&[&contact(C)], None), 200);
}

// ------------------------------------------------------------ bindings

#[test]
fn two_bindings_for_one_aor() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A)], Some(600)), 200);
    let resp = ua.register(&[&contact(B)], Some(900));
    assert_code(&resp, 200);
    assert_eq!(resp.contacts().len(), 2);
    assert_expires_about(&resp, A, 600);
    assert_expires_about(&resp, B, 900);
    assert_eq!(resp.header_lines(HeaderId::Contact).len(), 2);

    // A second device (other Call-ID) sees both, and two contacts in one
    // request are both bound.
    let mut other = self::ua(&srv, "alice");
    let resp = other.register(
        &[&contact(C), &contact_exp("sip:alice@192.0.2.4", 300)],
        None,
    );
    assert_code(&resp, 200);
    assert_eq!(resp.contacts().len(), 4, "{resp:?}");
    assert_expires_about(&resp, C, 3600);
    assert_expires_about(&resp, "sip:alice@192.0.2.4", 300);
}

#[test]
fn register_without_contact_lists_current_bindings() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    let resp = ua.query();
    assert_eq!(resp.contacts(), vec![]);
    assert!(resp.has(HeaderId::Date));
    assert_code(&ua.register(&[&contact(A), &contact(B)], Some(120)), 200);
    let mut other = self::ua(&srv, "alice");
    let resp = other.query();
    assert_eq!(resp.contact_uris(), vec![A.to_string(), B.to_string()]);
    assert_expires_about(&resp, A, 120);
    assert_expires_about(&resp, B, 120);
}

#[test]
fn refresh_updates_the_binding_in_place() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_expires_about(&ua.register(&[&contact(A)], Some(60)), A, 60);
    let resp = ua.register(&[&contact(A)], Some(1200));
    assert_code(&resp, 200);
    assert_eq!(
        resp.contacts().len(),
        1,
        "refresh duplicated the binding:\n{resp:?}"
    );
    assert_expires_about(&resp, A, 1200);
    // Shorter again: the refresh sets, it does not only extend.
    assert_expires_about(&ua.register(&[&contact(A)], Some(30)), A, 30);
}

#[test]
fn expires_zero_removes_one_of_two() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A), &contact(B)], Some(600)), 200);
    let resp = ua.register(&[&contact_exp(A, 0)], None);
    assert_code(&resp, 200);
    assert_eq!(resp.contact_uris(), vec![B.to_string()]);
    // Expires: 0 header works as well.
    let resp = ua.register(&[&contact(B)], Some(0));
    assert_code(&resp, 200);
    assert_eq!(resp.contacts(), vec![]);
    assert_eq!(ua.query().contacts(), vec![]);
}

#[test]
fn wildcard_with_expires_zero_removes_all() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A), &contact(B)], None), 200);
    let mut other = self::ua(&srv, "alice");
    assert_code(&other.register(&[&contact(C)], None), 200);

    let resp = ua.register(&["*"], Some(0));
    assert_code(&resp, 200);
    assert_eq!(resp.contacts(), vec![]);
    assert_eq!(other.query().contacts(), vec![]);
}

#[test]
fn wildcard_without_expires_zero_is_400() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A)], None), 200);
    for expires in [Some(60), None] {
        let resp = ua.register(&["*"], expires);
        assert_code(&resp, 400);
    }
    // `*` together with another contact is also invalid (RFC 3261 §10.3 step 6).
    assert_code(&ua.register(&["*", &contact(B)], Some(0)), 400);
    assert_eq!(ua.query().contact_uris(), vec![A.to_string()]);
}

#[test]
fn contact_expires_param_wins_over_header_and_default_applies() {
    let srv = Server::start_with(&[("--default-expires", "1800")]);
    let mut ua = ua(&srv, "alice");
    let resp = ua.register(&[&contact_exp(A, 100), &contact(B)], Some(200));
    assert_code(&resp, 200);
    assert_expires_about(&resp, A, 100);
    assert_expires_about(&resp, B, 200);
    let resp = ua.register(&[&contact(C)], None);
    assert_expires_about(&resp, C, 1800);
}

#[test]
fn below_min_expires_is_423_with_min_expires() {
    let srv = Server::start_with(&[("--min-expires", "60")]);
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A)], Some(600)), 200);

    let resp = ua.register(&[&contact(B)], Some(30));
    assert_code(&resp, 423);
    assert_eq!(resp.reason(), "Interval Too Brief");
    assert_eq!(resp.header(HeaderId::MinExpires).as_deref(), Some("60"));
    // The contact parameter counts, not the header.
    let resp = ua.register(&[&contact_exp(B, 59)], Some(3600));
    assert_code(&resp, 423);
    assert_eq!(resp.header(HeaderId::MinExpires).as_deref(), Some("60"));
    let resp = ua.register(&[&contact_exp(B, 60)], Some(30));
    assert_code(&resp, 200);
    assert_expires_about(&resp, B, 60);
    // Zero is a removal, never too brief.
    let resp = ua.register(&[&contact(B)], Some(0));
    assert_code(&resp, 200);
    // The 423s left A as it was.
    assert_eq!(resp.contact_uris(), vec![A.to_string()]);
}

#[test]
fn above_max_expires_is_clamped() {
    let srv = Server::start_with(&[("--max-expires", "100"), ("--default-expires", "60")]);
    let mut ua = ua(&srv, "alice");
    let resp = ua.register(&[&contact(A), &contact_exp(B, 99_999)], Some(5000));
    assert_code(&resp, 200);
    assert_expires_about(&resp, A, 100);
    assert_expires_about(&resp, B, 100);
}

#[test]
fn too_many_contacts_is_503() {
    let srv = Server::start_with(&[("--max-contacts", "2")]);
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A), &contact(B)], None), 200);
    let resp = ua.register(&[&contact(C)], None);
    assert_code(&resp, 503);
    assert_eq!(resp.reason(), "Too Many Registered Contacts");
    // Three at once from scratch on another AOR is refused as well.
    let mut bob = self::ua(&srv, "bob");
    let resp = bob.register(&[&contact(A), &contact(B), &contact(C)], None);
    assert_code(&resp, 503);
    assert_eq!(bob.query().contacts(), vec![]);
    // Refreshing an existing binding at the limit is fine.
    let resp = ua.register(&[&contact(A)], Some(300));
    assert_code(&resp, 200);
    assert_eq!(resp.contact_uris(), vec![A.to_string(), B.to_string()]);
}

#[test]
fn lower_cseq_for_same_call_id_is_400_and_binding_untouched() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A)], Some(600)), 200);
    let stored = ua.reg.cseq;

    let mut r = ua.next_register(&[&contact_exp(A, 0)], None);
    r.cseq = stored - 1;
    let resp = ua.send(&r);
    assert_code(&resp, 400);

    let mut other = self::ua(&srv, "alice");
    let resp = other.query();
    assert_eq!(resp.contact_uris(), vec![A.to_string()]);
    assert!(resp.expires_of(A).unwrap() > 590);
}

#[test]
fn same_cseq_again_is_a_retransmission_not_an_update() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    assert_code(&ua.register(&[&contact(A)], Some(600)), 200);
    let stored = ua.reg.cseq;

    // Same Call-ID and CSeq, new branch, different content: same status, and
    // the content is not applied.
    let mut r = ua.next_register(&[&contact_exp(A, 0), &contact(B)], None);
    r.cseq = stored;
    let resp = ua.send(&r);
    assert_code(&resp, 200);

    let mut other = self::ua(&srv, "alice");
    let resp = other.query();
    assert_eq!(resp.contact_uris(), vec![A.to_string()]);
}

#[test]
fn retransmission_gets_same_answer_and_updates_once() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    let mut watcher = self::ua(&srv, "alice");
    ua.query(); // obtain a nonce
    let r = ua.next_register(&[&contact(A)], Some(10));
    let bytes = r.build(&ua.conn);
    let first = ua.send_raw(&bytes);
    assert_code(&first, 200);
    assert_expires_about(&first, A, 10);

    // Wait (polling another flow) until the remaining time visibly drops, so a
    // second update would show as a reset to 10.
    poll_until(Duration::from_secs(4), || {
        (watcher.query().expires_of(A)? <= 8).then_some(())
    })
    .expect("remaining expires never dropped to 8 within 4 s");

    // The exact same datagram again (same branch, CSeq, nonce-count).
    let second = ua.send_raw(&bytes);
    assert_eq!(second.code(), first.code(), "retransmission:\n{second:?}");
    assert_eq!(second.contact_uris(), first.contact_uris());
    let now = watcher.query();
    let left = now.expires_of(A).expect("A still bound");
    assert!(
        left <= 8,
        "the retransmission refreshed the binding again: expires={left}"
    );
}

#[test]
fn bindings_expire_within_a_second_of_their_deadline() {
    let srv = Server::start_with(&[("--min-expires", "1")]);
    let mut ua = ua(&srv, "alice");
    let mut watcher = self::ua(&srv, "alice");
    assert_code(&watcher.register(&[&contact(B)], Some(600)), 200);

    ua.query(); // obtain a nonce so the timed request is a single round trip
    let start = Instant::now();
    let resp = ua.register(&[&contact(A)], Some(2));
    assert_code(&resp, 200);
    assert_expires_about(&resp, A, 2);

    let gone = poll_until(Duration::from_secs(6), || {
        let q = watcher.query();
        (!q.contact_uris().contains(&A.to_string())).then_some((start.elapsed(), q))
    });
    let (elapsed, q) = gone.expect("a 2 s binding was still listed after 6 s");
    assert!(
        elapsed >= Duration::from_millis(1000),
        "removed after {elapsed:?}, before its deadline"
    );
    assert!(
        elapsed <= Duration::from_millis(3500),
        "removed after {elapsed:?}, more than a second past its 2 s deadline"
    );
    assert_eq!(
        q.contact_uris(),
        vec![B.to_string()],
        "the other binding stays"
    );
}

// ------------------------------------------------------------ addressing

#[test]
fn response_via_gets_received_and_rport() {
    let srv = Server::start_default();
    let mut ua = ua(&srv, "alice");
    let port = ua.conn.local_addr().port().to_string();

    // A device behind NAT: its Via names a private address.
    ua.reg.sent_by = Some("10.64.49.218:7100".to_string());
    let resp = ua.register(&[&contact(A)], None);
    assert_code(&resp, 200);
    assert_eq!(
        resp.via_param("received"),
        Some(Some("127.0.0.1".to_string()))
    );
    assert_eq!(resp.via_param("rport"), Some(Some(port.clone())));
    assert!(
        resp.top_via().starts_with("SIP/2.0/UDP 10.64.49.218:7100"),
        "{}",
        resp.top_via()
    );

    // Its own address in Via, still asking for rport.
    ua.reg.sent_by = None;
    let resp = ua.register(&[], None);
    assert_eq!(
        resp.via_param("received"),
        Some(Some("127.0.0.1".to_string()))
    );
    assert_eq!(resp.via_param("rport"), Some(Some(port)));

    // Without rport the response carries none.
    ua.reg.rport = false;
    let resp = ua.register(&[], None);
    assert_code(&resp, 200);
    assert_eq!(resp.via_param("rport"), None, "{}", resp.top_via());
}

#[test]
fn aor_host_is_case_insensitive_and_port_free() {
    let srv = Server::start_default();
    let mut ua = Ua::new(
        Udp::connect(srv.addr()),
        "alice",
        "Example.COM:5060",
        "secret",
    );
    assert_code(&ua.register(&[&contact(A)], None), 200);
    let mut other = self::ua(&srv, "alice");
    assert_eq!(other.query().contact_uris(), vec![A.to_string()]);
    // A different user part is a different AOR.
    let mut bob = self::ua(&srv, "bob");
    assert_eq!(bob.query().contacts(), vec![]);
}

#[test]
fn gb28181_device_id_is_keyed_alone() {
    let srv = Server::start_default();
    let id = "34020000001320000001";
    let mut cam = Ua::new(Udp::connect(srv.addr()), id, "3402000000", "secret");
    assert_code(
        &cam.register(&[&format!("<sip:{id}@192.0.2.9:5060>")], None),
        200,
    );
    let mut again = Ua::new(Udp::connect(srv.addr()), id, "192.0.2.9:5060", "secret");
    assert_eq!(
        again.query().contact_uris(),
        vec![format!("sip:{id}@192.0.2.9:5060")]
    );
}

// ------------------------------------------------------------ real devices

/// Replaces the first occurrence of `param="..."` in a captured request.
fn replace_param(msg: &str, param: &str, value: &str) -> String {
    let key = format!("{param}=\"");
    let start = msg
        .find(&key)
        .unwrap_or_else(|| panic!("{param} not in capture"))
        + key.len();
    let end = start + msg[start..].find('"').expect("closing quote");
    format!("{}{value}{}", &msg[..start], &msg[end..])
}

/// Answers a captured digest REGISTER with the server's nonce and opaque.
fn adapt_auth(capture: &str, ch: &Challenge, password: &str) -> Vec<u8> {
    let uri = "sip:130909115229300920@10.64.49.44:7100";
    let ha1 = sipreg::auth::ha1(b"admin", ch.realm.as_bytes(), password.as_bytes());
    let response =
        sipreg::auth::client_response(&ha1, ch.nonce.as_bytes(), b"REGISTER", uri.as_bytes(), None);
    let mut m = replace_param(capture, "nonce", &ch.nonce);
    m = replace_param(&m, "opaque", ch.opaque.as_deref().expect("opaque"));
    m = replace_param(&m, "response", std::str::from_utf8(&response).unwrap());
    m.into_bytes()
}

#[test]
fn hikvision_camera_registers_and_unregisters() {
    let srv = Server::start(&[
        "--realm",
        "hik",
        "--password",
        "12345",
        "--threads",
        "2",
        "--max-expires",
        "7200",
    ]);
    let mut udp = Udp::connect(srv.addr());
    let port = udp.local_addr().port().to_string();
    let device = "sip:130909113319427420@10.64.49.218:7100";

    let resp = udp.request(&fixture("hikvision-gb28181/01-register.sip"));
    assert_code(&resp, 401);
    assert_eq!(resp.challenge_param("realm").as_deref(), Some("hik"));
    assert_eq!(resp.via_param("rport"), Some(Some(port.clone())));
    let ch = Challenge::from_401(&resp);
    let capture = String::from_utf8(fixture("hikvision-gb28181/03-register-auth.sip")).unwrap();
    let resp = udp.request(&adapt_auth(&capture, &ch, "12345"));
    assert_code(&resp, 200);
    assert_eq!(resp.contacts(), vec![(device.to_string(), Some(7200))]);
    assert_eq!(
        resp.via_param("received"),
        Some(Some("127.0.0.1".to_string()))
    );
    assert_eq!(resp.via_param("rport"), Some(Some(port)));
    assert_eq!(resp.call_id(), "143225205");
    assert!(resp.has(HeaderId::Date));

    // Unregister (new Call-ID, Expires: 0). A wrong password is refused
    // first (as its own transaction: another branch), then the right one
    // removes the binding.
    let resp = udp.request(&fixture("hikvision-gb28181/05-unregister.sip"));
    let ch = Challenge::from_401(&resp);
    let capture = String::from_utf8(fixture("hikvision-gb28181/07-unregister-auth.sip")).unwrap();
    let wrong = adapt_auth(&capture, &ch, "54321");
    let wrong = String::from_utf8(wrong)
        .unwrap()
        .replace("z9hG4bK317693249", "z9hG4bK317693249-wrong");
    assert_code(&udp.request(wrong.as_bytes()), 401);
    let resp = udp.request(&adapt_auth(&capture, &ch, "12345"));
    assert_code(&resp, 200);
    assert_eq!(resp.contacts(), vec![]);
}

// ------------------------------------------------------------ workers

#[test]
fn several_workers_serve_many_clients_at_once() {
    let srv = Server::start_with(&[("--threads", "4")]);
    let addr = srv.addr();
    let results: Vec<(String, Response)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                s.spawn(move || {
                    let user = format!("user{i}");
                    let mut ua = Ua::new(Udp::connect(addr), &user, DOMAIN, "secret");
                    let contact = format!("<sip:{user}@192.0.2.{}:5060>", i + 1);
                    let mut last = None;
                    for _ in 0..5 {
                        last = Some(ua.register(&[&contact], Some(300)));
                    }
                    (user, last.unwrap())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (i, (user, resp)) in results.iter().enumerate() {
        assert_code(resp, 200);
        assert_eq!(
            resp.contact_uris(),
            vec![format!("sip:{user}@192.0.2.{}:5060", i + 1)]
        );
    }
}

/// `--expires-jitter 20`: every granted expiry lies in [80 %, 100 %] of the
/// request, and the grants spread.
#[test]
fn expiry_jitter_spreads_refreshes() {
    let srv = Server::start_with(&[("--expires-jitter", "20")]);
    let mut granted = Vec::new();
    for i in 0..40 {
        let mut ua = ua(&srv, &format!("jitter{i}"));
        let c = contact(&format!("sip:jitter{i}@127.0.0.1:5999"));
        let resp = ua.register(&[&c], Some(1000));
        assert_code(&resp, 200);
        let e = resp.contacts()[0].1.expect("expires parameter");
        assert!((800..=1000).contains(&e), "granted {e}");
        granted.push(e);
    }
    granted.sort_unstable();
    granted.dedup();
    assert!(granted.len() > 10, "no spread: {granted:?}");
}
