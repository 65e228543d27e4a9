//! The input-path audit (issue 6, point 5) over the real binary: every number
//! or length a request carries — Content-Length, Expires (header and contact
//! parameter), CSeq, nc, q, ports, Max-Forwards, header counts and sizes,
//! message sizes, MANSCDP sizes — at its limits and far beyond, over UDP and
//! TCP. Each test asserts the RFC answer (a 4xx/5xx whose reason phrase names
//! the problem, or the value clamped or defaulted as RFC 3261 says) and that
//! the server keeps serving afterwards.

mod common;

use std::time::Duration;

use common::client::{
    branch, manscdp_message, simple_request, unique, Conn, Response, Tcp, Ua, Udp,
};
use common::server::Server;
use serde_json::Value;
use sipreg::sip::HeaderId;

const MIN_EXPIRES: u32 = 60;
const MAX_EXPIRES: u32 = 7200;
const DEFAULT_EXPIRES: u32 = 3600;
const DEVICE: &str = "34020000001320000042";
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn start() -> Server {
    Server::start(&[
        "--realm",
        "sipreg",
        "--password",
        "secret",
        "--threads",
        "2",
        "--min-expires",
        "60",
        "--max-expires",
        "7200",
        "--default-expires",
        "3600",
        "--platform-id",
        "34020000002000000001",
    ])
}

/// An OPTIONS with the mandatory headers, then `headers` (each line ending in
/// CRLF, Content-Length included when wanted), the empty line and `body`.
fn options(conn: &dyn Conn, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:registrar@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{} {};branch={};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag={}\r\n\
         To: <sip:registrar@127.0.0.1>\r\n\
         Call-ID: {}\r\n\
         CSeq: 1 OPTIONS\r\n\
         {headers}\r\n{body}",
        conn.transport(),
        conn.local_addr(),
        branch(),
        unique("tag"),
        unique("cid-"),
    )
    .into_bytes()
}

/// `options` with one line of the template replaced.
fn options_replacing(conn: &dyn Conn, line: &str, with: &str) -> Vec<u8> {
    let text = String::from_utf8(options(conn, "Content-Length: 0\r\n", "")).expect("ascii");
    assert!(text.contains(line), "{line} not in the template");
    text.replacen(line, with, 1).into_bytes()
}

fn assert_answer(resp: &Response, code: u16, reason_has: &str, what: &str) {
    assert_eq!(resp.code(), code, "{what}: unexpected answer:\n{resp:?}");
    assert!(
        resp.reason()
            .to_ascii_lowercase()
            .contains(&reason_has.to_ascii_lowercase()),
        "{what}: reason {:?} does not mention {reason_has:?}",
        resp.reason()
    );
}

/// Sends `bytes` and returns the next message from the server as (status
/// code, reason, raw text), without requiring it to scan: an answer to a
/// malformed CSeq echoes it (RFC 3261 §8.2.6.2), so the answer does not scan.
fn raw_answer(conn: &mut dyn Conn, bytes: &[u8]) -> (u16, String, String) {
    conn.send(bytes);
    let raw = conn
        .recv_timeout(common::client::ANSWER_TIMEOUT)
        .expect("an answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("SIP/2.0"), "not a response: {text}");
    let code = parts
        .next()
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, parts.next().unwrap_or("").to_string(), text)
}

/// The server still answers a plain OPTIONS on this flow.
fn still_serving(conn: &mut dyn Conn) {
    let probe = simple_request("OPTIONS", conn);
    let resp = conn.request(&probe);
    assert_eq!(resp.code(), 200, "server stopped serving:\n{resp:?}");
}

/// A registered UA over UDP whose challenge is already known, so the next
/// REGISTER it builds is authorised.
fn registered_ua(srv: &Server, user: &str, domain: &str) -> Ua<Udp> {
    let mut ua = Ua::new(Udp::connect(srv.addr()), user, domain, "secret");
    ua.query();
    ua
}

/// The Contact URI this UA registers (its own address, a tag in the user part).
fn contact_uri(ua: &Ua<Udp>, tag: &str) -> String {
    format!("sip:{tag}@{}", ua.conn.local_addr())
}

/// Sends the next REGISTER with these header lines added (an `Expires:` the
/// builder cannot express, a long User-Agent…).
fn register_with(ua: &mut Ua<Udp>, contacts: &[&str], extra: &[String]) -> Response {
    let mut r = ua.next_register(contacts, None);
    r.extra.extend(extra.iter().cloned());
    ua.send(&r)
}

/// `GET /api/devices/{id}` as JSON.
fn device_json(srv: &Server, id: &str) -> Value {
    let (code, body) = srv.http_get(&format!("/api/devices/{id}"));
    assert_eq!(code, 200, "GET /api/devices/{id}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

// ------------------------------------------------------------ Content-Length

#[test]
fn content_length_over_udp() {
    let srv = start();
    let mut udp = Udp::connect(srv.addr());
    for (headers, body, code, reason) in [
        ("Content-Length: 0\r\n", "", 200, "OK"),
        // 1*DIGIT with LWS around it and leading zeros is well-formed.
        ("Content-Length:   0000 \r\n", "", 200, "OK"),
        // RFC 3261 §18.3: bytes past Content-Length are discarded.
        ("Content-Length: 2\r\n", "abcd", 200, "OK"),
        // ... and a datagram shorter than announced is a 400.
        ("Content-Length: 10\r\n", "abc", 400, "Content-Length"),
        ("Content-Length: -1\r\n", "", 400, "Content-Length"),
        ("Content-Length: +0\r\n", "", 400, "Content-Length"),
        ("Content-Length: 0x10\r\n", "", 400, "Content-Length"),
        ("Content-Length: 1 2\r\n", "", 400, "Content-Length"),
        ("Content-Length: \r\n", "", 400, "Content-Length"),
        ("l: 1\r\nContent-Length: 2\r\n", "ab", 400, "Content-Length"),
        // Announcing more than a message may hold is 513, however many digits
        // (no u32 or u64 wrap-around turns them into a small number).
        ("Content-Length: 65535\r\n", "x", 513, "Too Large"),
        ("Content-Length: 4294967296\r\n", "", 513, "Too Large"),
        (
            "Content-Length: 18446744073709551617\r\n",
            "",
            513,
            "Too Large",
        ),
        (
            "Content-Length: 99999999999999999999999999\r\n",
            "",
            513,
            "Too Large",
        ),
    ] {
        let resp = udp.request(&options(&udp, headers, body));
        assert_answer(&resp, code, reason, headers);
    }
    still_serving(&mut udp);
}

#[test]
fn content_length_over_tcp() {
    let srv = start();
    // Pipelined in one write: each message is framed by its Content-Length.
    let mut tcp = Tcp::connect(srv.addr());
    let mut three = options(&tcp, "Content-Length: 4\r\n", "abcd");
    three.extend(options(&tcp, "Content-Length: 0000\r\n", ""));
    three.extend(options(&tcp, "l: 0\r\n", ""));
    tcp.send(&three);
    for i in 0..3 {
        let resp = tcp.recv();
        assert_eq!(resp.code(), 200, "pipelined message {i}:\n{resp:?}");
    }
    // Framing cannot go on after these: answered, then the connection closes.
    for (value, code, reason) in [
        ("70000", 513, "Too Large"),
        // The head (about 250 bytes) plus this is over the 64 KiB cap.
        ("65400", 513, "Too Large"),
        ("99999999999999999999", 513, "Too Large"),
        ("-1", 400, "Content-Length"),
        ("+1", 400, "Content-Length"),
    ] {
        let mut tcp = Tcp::connect(srv.addr());
        let req = options(&tcp, &format!("Content-Length: {value}\r\n"), "");
        let resp = tcp.request(&req);
        assert_answer(&resp, code, reason, value);
        assert!(
            tcp.closed_within(CLOSE_TIMEOUT),
            "Content-Length {value}: connection left open"
        );
    }
    still_serving(&mut Tcp::connect(srv.addr()));
}

#[test]
fn tcp_request_without_content_length_is_400() {
    let srv = start();
    let mut tcp = Tcp::connect(srv.addr());
    let req = options(&tcp, "", "");
    let resp = tcp.request(&req);
    // RFC 3261 §18.3: Content-Length MUST be used with stream transports.
    assert_answer(&resp, 400, "Content-Length", "no Content-Length over TCP");
    assert!(tcp.closed_within(CLOSE_TIMEOUT));
    still_serving(&mut Tcp::connect(srv.addr()));
}

// ------------------------------------------------------------ header and message caps

#[test]
fn header_count_and_line_length_caps() {
    let srv = start();
    let mut udp = Udp::connect(srv.addr());
    let mut tcp = Tcp::connect(srv.addr());
    for conn in [&mut udp as &mut dyn Conn, &mut tcp] {
        // The template has seven headers with Content-Length: up to 64 pass.
        let fill = |n: usize| -> String {
            let mut h: String = (0..n).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect();
            h += "Content-Length: 0\r\n";
            h
        };
        let resp = conn.request(&options(conn, &fill(sipreg::sip::MAX_HEADERS - 7), ""));
        assert_answer(&resp, 200, "OK", "64 headers");
        let resp = conn.request(&options(conn, &fill(sipreg::sip::MAX_HEADERS - 6), ""));
        assert_answer(&resp, 400, "Too Many Headers", "65 headers");
        let resp = conn.request(&options(conn, &fill(500), ""));
        assert_answer(&resp, 400, "Too Many Headers", "506 headers");

        let long = format!(
            "Subject: {}\r\nContent-Length: 0\r\n",
            "s".repeat(sipreg::sip::MAX_LINE + 1)
        );
        let resp = conn.request(&options(conn, &long, ""));
        assert_answer(&resp, 400, "Line Too Long", "header line over 8 KiB");
        // A folded header counts as one line, continuations included.
        let folded = format!(
            "Subject: a{}\r\nContent-Length: 0\r\n",
            "\r\n b".repeat(sipreg::sip::MAX_LINE / 3)
        );
        let resp = conn.request(&options(conn, &folded, ""));
        assert_answer(&resp, 400, "Line Too Long", "folded header over 8 KiB");

        let uri = format!("sip:{}@127.0.0.1", "u".repeat(sipreg::sip::MAX_LINE));
        let req = options_replacing(
            conn,
            "sip:registrar@127.0.0.1 SIP/2.0",
            &format!("{uri} SIP/2.0"),
        );
        let resp = conn.request(&req);
        assert_answer(&resp, 400, "Line Too Long", "Request-URI over 8 KiB");
        still_serving(conn);
    }
}

#[test]
fn message_size_caps() {
    let srv = start();
    // The largest UDP payload over IPv4 arrives whole: no receive truncation.
    let mut udp = Udp::connect(srv.addr());
    let probe = options(&udp, "Content-Length: 65000\r\n", "");
    let body = "b".repeat(65_507 - probe.len() - 10);
    let req = options(&udp, &format!("Content-Length: {}\r\n", body.len()), &body);
    assert!(req.len() <= 65_507 && req.len() > 65_400, "{}", req.len());
    assert_answer(&udp.request(&req), 200, "OK", "65 507-byte datagram");
    still_serving(&mut udp);

    // Over TCP, a header section that never ends is cut off at the message
    // cap: the connection is closed rather than buffered without bound.
    let mut tcp = Tcp::connect(srv.addr());
    let mut endless = options(&tcp, "", "");
    endless.truncate(endless.len() - 2);
    for i in 0..3_000 {
        endless.extend_from_slice(format!("X-Endless-{i}: {}\r\n", "e".repeat(40)).as_bytes());
    }
    assert!(endless.len() > 2 * sipreg::sip::MAX_UDP_MESSAGE);
    // The server may stop reading (and reset) before all of it is written.
    tcp.stream
        .set_write_timeout(Some(CLOSE_TIMEOUT))
        .expect("write timeout");
    let _ = std::io::Write::write_all(&mut tcp.stream, &endless);
    assert!(
        tcp.closed_within(CLOSE_TIMEOUT),
        "an endless header section kept the connection open"
    );
    still_serving(&mut Tcp::connect(srv.addr()));
}

// ------------------------------------------------------------ CSeq, Max-Forwards

#[test]
fn cseq_numbers() {
    let srv = start();
    let mut udp = Udp::connect(srv.addr());
    let mut tcp = Tcp::connect(srv.addr());
    for conn in [&mut udp as &mut dyn Conn, &mut tcp] {
        for (seq, code) in [
            ("0", 200),
            ("2147483647", 200),
            ("0000000000000000001", 200),
            // RFC 3261 §8.1.1.5: less than 2^31.
            ("2147483648", 400),
            ("4294967296", 400),
            ("36893488147419103232", 400),
            ("-1", 400),
            ("+1", 400),
            ("1.0", 400),
        ] {
            let req = options_replacing(conn, "CSeq: 1 OPTIONS", &format!("CSeq: {seq} OPTIONS"));
            let (got, reason, text) = raw_answer(conn, &req);
            assert_eq!(got, code, "CSeq {seq}:\n{text}");
            if code != 200 {
                assert!(reason.contains("CSeq"), "CSeq {seq}: {reason}");
            }
            // The answer carries the request's CSeq (RFC 3261 §8.2.6.2), as
            // a number when it is one.
            let number = match seq.trim_start_matches('0') {
                "" => "0",
                n => n,
            };
            let echoed = format!("\r\nCSeq: {number} OPTIONS\r\n");
            assert!(text.contains(&echoed), "CSeq {seq}:\n{text}");
        }
        still_serving(conn);
    }
}

#[test]
fn max_forwards_values() {
    let srv = start();
    let mut udp = Udp::connect(srv.addr());
    let invite = |conn: &Udp, mf: Option<&str>| {
        let text = String::from_utf8(simple_request("INVITE", conn)).expect("ascii");
        let text = text.replace("sip:registrar@127.0.0.1", "sip:nobody@127.0.0.1");
        match mf {
            Some(v) => text.replace("Max-Forwards: 70", &format!("Max-Forwards: {v}")),
            None => text.replace("Max-Forwards: 70\r\n", ""),
        }
    };
    // RFC 3261 §16.3 step 2: zero is 483; other values, in range or not
    // (RFC 4475 §3.1.2.4 lets an element ignore an overlarge one), go on to
    // the lookup, which finds nobody.
    for (mf, code) in [
        (Some("0"), 483),
        (Some("00"), 483),
        (Some("1"), 404),
        (Some("255"), 404),
        (Some("256"), 404),
        (Some("4294967296"), 404),
        (Some("-1"), 404),
        (None, 404),
    ] {
        let resp = udp.request(invite(&udp, mf).as_bytes());
        assert_eq!(resp.code(), code, "Max-Forwards {mf:?}:\n{resp:?}");
    }
    still_serving(&mut udp);
}

// ------------------------------------------------------------ Expires

#[test]
fn expires_header_is_clamped_or_defaulted() {
    let srv = start();
    let mut ua = registered_ua(&srv, "exp-header", "example.com");
    let uri = contact_uri(&ua, "eh");
    let contact = format!("<{uri}>");
    // RFC 3261 §10.3 step 7: longer than allowed is shortened to the maximum;
    // a value that is not delta-seconds 0..2^32-1 is malformed and means the
    // default (RFC 3261 §20.19, RFC 4475 §3.1.2.4).
    for (expires, granted) in [
        ("60", MIN_EXPIRES),
        ("7201", MAX_EXPIRES),
        ("4294967295", MAX_EXPIRES),
        ("0000000000000000120", 120),
        ("4294967296", DEFAULT_EXPIRES),
        ("99999999999", DEFAULT_EXPIRES),
        ("-1", DEFAULT_EXPIRES),
        ("+120", DEFAULT_EXPIRES),
        ("1.5", DEFAULT_EXPIRES),
    ] {
        let resp = register_with(&mut ua, &[&contact], &[format!("Expires: {expires}")]);
        assert_eq!(resp.code(), 200, "Expires {expires}:\n{resp:?}");
        let got = resp.expires_of(&uri).expect("binding listed");
        assert!(
            got <= granted && got + 1 >= granted,
            "Expires {expires}: granted {got}, want {granted}"
        );
    }
    // Below the minimum (but not 0): 423 with Min-Expires (§10.3 step 7).
    for expires in ["59", "1"] {
        let resp = register_with(&mut ua, &[&contact], &[format!("Expires: {expires}")]);
        assert_answer(&resp, 423, "Interval Too Brief", expires);
        assert_eq!(resp.header(HeaderId::MinExpires).as_deref(), Some("60"));
    }
    let resp = register_with(&mut ua, &[&contact], &["Expires: 0".to_string()]);
    assert_eq!(resp.code(), 200, "{resp:?}");
    assert!(resp.contacts().is_empty(), "Expires 0 removes:\n{resp:?}");
    still_serving(&mut ua.conn);
}

#[test]
fn contact_expires_parameter_is_clamped_or_defaulted() {
    let srv = start();
    let mut ua = registered_ua(&srv, "exp-param", "example.com");
    let uri = contact_uri(&ua, "ep");
    for (param, header, granted) in [
        ("4294967295", None, MAX_EXPIRES),
        ("4294967296", None, DEFAULT_EXPIRES),
        ("280297596632815", None, DEFAULT_EXPIRES),
        ("abc", None, DEFAULT_EXPIRES),
        // The parameter wins over the header (RFC 3261 §10.3 step 6).
        ("120", Some("3000"), 120),
        ("99999999999", Some("300"), DEFAULT_EXPIRES),
    ] {
        let contact = format!("<{uri}>;expires={param}");
        let extra: Vec<String> = header
            .map(|h| format!("Expires: {h}"))
            .into_iter()
            .collect();
        let resp = register_with(&mut ua, &[&contact], &extra);
        assert_eq!(resp.code(), 200, ";expires={param}:\n{resp:?}");
        let got = resp.expires_of(&uri).expect("binding listed");
        assert!(
            got <= granted && got + 1 >= granted,
            ";expires={param}: granted {got}, want {granted}"
        );
    }
    let resp = register_with(&mut ua, &[&format!("<{uri}>;expires=30")], &[]);
    assert_answer(&resp, 423, "Interval Too Brief", ";expires=30");
    let resp = register_with(&mut ua, &[&format!("<{uri}>;expires=0")], &[]);
    assert_eq!(resp.code(), 200, "{resp:?}");
    assert!(resp.contacts().is_empty(), ";expires=0 removes:\n{resp:?}");
}

#[test]
fn one_contact_listed_twice() {
    let srv = start();
    let mut ua = registered_ua(&srv, "twice", "example.com");
    let uri = contact_uri(&ua, "tw");
    let resp = register_with(&mut ua, &[&format!("<{uri}>")], &[]);
    assert_eq!(resp.code(), 200, "{resp:?}");
    // Removing it "twice" in one request removes it once: 200, no binding
    // (not a 503, nor — in a build with overflow checks — a dead worker).
    let gone = format!("<{uri}>;expires=0");
    let resp = register_with(&mut ua, &[&gone, &gone], &[]);
    assert_eq!(resp.code(), 200, "{resp:?}");
    assert!(resp.contacts().is_empty(), "{resp:?}");
    // Adding one new contact twice counts once against --max-contacts.
    let mut full = registered_ua(&srv, "twice-full", "example.com");
    let contacts: Vec<String> = (0..9)
        .map(|i| format!("<{}>", contact_uri(&full, &format!("c{i}"))))
        .collect();
    let refs: Vec<&str> = contacts.iter().map(String::as_str).collect();
    assert_eq!(register_with(&mut full, &refs, &[]).code(), 200);
    let tenth = format!("<{}>", contact_uri(&full, "c9"));
    let resp = register_with(&mut full, &[&tenth, &tenth], &[]);
    assert_eq!(
        resp.code(),
        200,
        "the tenth contact is within --max-contacts 10:\n{resp:?}"
    );
    for _ in 0..4 {
        still_serving(&mut ua.conn);
    }
}

// ------------------------------------------------------------ q, ports

#[test]
fn q_values() {
    let srv = start();
    let mut ua = registered_ua(&srv, "qvalues", "example.com");
    let uri = contact_uri(&ua, "q");
    // RFC 3261 §20.10: qvalue is 0–1 with at most three decimals.
    for q in ["1.5", "2", "-1", "0.0001", "1.001", ".5", "", "0x1"] {
        let resp = register_with(&mut ua, &[&format!("<{uri}>;q={q}")], &[]);
        assert_answer(&resp, 400, "q Value", &format!("q={q}"));
    }
    for (q, listed) in [
        ("0.5", "q=0.5"),
        ("1.000", "q=1"),
        ("0", "q=0.0"),
        ("0.001", "q=0.001"),
    ] {
        let resp = register_with(&mut ua, &[&format!("<{uri}>;q={q}")], &[]);
        assert_eq!(resp.code(), 200, "q={q}:\n{resp:?}");
        let lines = resp.header_lines(HeaderId::Contact).join("\n");
        assert!(lines.contains(listed), "q={q}: {lines}");
    }
    still_serving(&mut ua.conn);
}

#[test]
fn ports_in_via_contact_and_request_uri() {
    let srv = start();
    let mut ua = registered_ua(&srv, "ports", "example.com");
    let via_line = |conn: &Udp| format!("{} {}", conn.transport(), conn.local_addr());
    for (port, code) in [
        // Answers go to the source address (RFC 3581), so port 0 in sent-by
        // hurts nobody; out-of-range ports are malformed.
        ("0", 200),
        ("65535", 200),
        ("65536", 400),
        ("99999", 400),
        ("4294967296", 400),
        ("-1", 400),
    ] {
        let from = via_line(&ua.conn);
        let to = format!("{} 192.0.2.1:{port}", ua.conn.transport());
        let req = options_replacing(&ua.conn, &from, &to);
        let resp = ua.conn.request(&req);
        assert_answer(&resp, code, if code == 200 { "OK" } else { "Via" }, port);
    }
    // rport with a value that is no port is answered with the real one.
    for rport in ["99999", "abc", "4294967296000"] {
        let req = options_replacing(&ua.conn, ";rport", &format!(";rport={rport}"));
        let resp = ua.conn.request(&req);
        assert_eq!(resp.code(), 200, "rport={rport}:\n{resp:?}");
        let port = ua.conn.local_addr().port().to_string();
        assert_eq!(resp.via_param("rport"), Some(Some(port)), "rport={rport}");
    }
    // A Contact is stored and handed out: its port must be a real one.
    for (port, code) in [("65535", 200), ("0", 400), ("65536", 400), ("99999", 400)] {
        let contact = format!("<sip:p@192.0.2.1:{port}>");
        let resp = register_with(&mut ua, &[&contact], &[]);
        assert_answer(
            &resp,
            code,
            if code == 200 { "OK" } else { "Contact" },
            &contact,
        );
    }
    for port in ["0", "65536", "99999"] {
        let req = options_replacing(
            &ua.conn,
            "sip:registrar@127.0.0.1 SIP/2.0",
            &format!("sip:registrar@127.0.0.1:{port} SIP/2.0"),
        );
        let resp = ua.conn.request(&req);
        assert_answer(&resp, 400, "URI", &format!("Request-URI port {port}"));
    }
    still_serving(&mut ua.conn);
}

// ------------------------------------------------------------ digest nc

#[test]
fn nonce_count_values() {
    let srv = start();
    let mut ua = registered_ua(&srv, "nc", "example.com");
    let contact = format!("<{}>", contact_uri(&ua, "nc"));
    // The highest nonce-count is accepted, once.
    ua.nc = 0xffff_fffe;
    let r = ua.next_register(&[&contact], None);
    let resp = ua.send(&r);
    assert_eq!(resp.code(), 200, "nc=ffffffff:\n{resp:?}");
    // After it nothing is higher: any other count is a replay, answered with
    // a fresh challenge (never a wrap-around to 00000001).
    ua.nc = 0;
    let r = ua.next_register(&[&contact], None);
    let resp = ua.send(&r);
    assert_eq!(resp.code(), 401, "nc=00000001 after ffffffff:\n{resp:?}");
    // Counts that are not 8 hex digits fail like any bad credential.
    let mut ua = registered_ua(&srv, "nc-format", "example.com");
    for bad in ["1", "000000001", "0000000g", "-0000001", "100000000", ""] {
        let mut r = ua.next_register(&[&contact], None);
        let auth = r.authorization.take().expect("challenged");
        let at = auth.find("nc=").expect("nc") + 3;
        r.authorization = Some(format!("{}{bad}{}", &auth[..at], &auth[at + 8..]));
        let resp = ua.send(&r);
        assert!(
            resp.code() == 401 || resp.code() == 400,
            "nc={bad}:\n{resp:?}"
        );
    }
    still_serving(&mut ua.conn);
}

// ------------------------------------------------------------ stored sizes

#[test]
fn stored_binding_values_are_capped() {
    let srv = start();
    let mut ua = registered_ua(&srv, "sizes", "example.com");
    let long_uri = format!("sip:{}@192.0.2.1", "u".repeat(2_000));
    let resp = register_with(&mut ua, &[&format!("<{long_uri}>")], &[]);
    assert_answer(&resp, 400, "Contact", "2 KB Contact URI");

    let mut long_call = registered_ua(&srv, "sizes-cid", "example.com");
    long_call.reg.call_id = "c".repeat(1_000);
    let contact = format!("<{}>", contact_uri(&long_call, "cid"));
    let resp = register_with(&mut long_call, &[&contact], &[]);
    assert_answer(&resp, 400, "Call-ID", "1 KB Call-ID");

    let contact = format!("<{}>", contact_uri(&ua, "ua"));
    let agent = format!("User-Agent: {}", "a".repeat(6_000));
    let resp = register_with(&mut ua, &[&contact], &[agent]);
    assert_eq!(resp.code(), 200, "{resp:?}");
    let dev = device_json(&srv, "sizes@example.com");
    let stored = dev["bindings"][0]["user_agent"]
        .as_str()
        .expect("user_agent");
    assert!(
        stored.len() <= 256,
        "User-Agent stored with {} bytes",
        stored.len()
    );
}

// ------------------------------------------------------------ GB28181 XML

fn manscdp(conn: &Udp, body: &str) -> Vec<u8> {
    manscdp_message(conn, DEVICE, body)
}

fn catalog(sn: &str, sum_num: &str, items: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n\
         <DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>{sum_num}</SumNum>\r\n\
         <DeviceList Num=\"1\">{items}</DeviceList>\r\n</Response>\r\n"
    )
}

#[test]
fn manscdp_sizes_are_capped() {
    let srv = start();
    let mut ua = Ua::new(Udp::connect(srv.addr()), DEVICE, "3402000000", "secret");
    let contact = format!("<sip:{DEVICE}@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(3600)).code(), 200);

    // One part with more items than a part may carry and an absurd SumNum:
    // accepted, at most 1024 items kept, waiting for at most 4096.
    let items: String = (0..1_100)
        .map(|i| format!("<Item><DeviceID>{i}</DeviceID></Item>"))
        .collect();
    let resp = ua.send_raw(&manscdp(&ua.conn, &catalog("7", "2147483648", &items)));
    assert_eq!(resp.code(), 200, "{resp:?}");
    let dev = device_json(&srv, DEVICE);
    let cat = &dev["gb"]["catalog"];
    assert_eq!(cat["state"], "pending", "{dev}");
    assert_eq!(cat["received"], 1024, "{dev}");
    assert_eq!(cat["expected"], 4096, "{dev}");

    // Overlong fields are cut at 256 bytes (at a character boundary).
    let name = "通".repeat(5_000);
    let item = format!(
        "<Item><DeviceID>{}</DeviceID><Name>{name}</Name></Item>",
        "9".repeat(4_000)
    );
    let resp = ua.send_raw(&manscdp(&ua.conn, &catalog("8", "1", &item)));
    assert_eq!(resp.code(), 200, "{resp:?}");
    let dev = device_json(&srv, DEVICE);
    let channels = dev["gb"]["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 1, "{dev}");
    let kept_name = channels[0]["name"].as_str().expect("name");
    assert_eq!(
        kept_name,
        "通".repeat(85),
        "name cut at a character boundary"
    );
    assert_eq!(channels[0]["device_id"].as_str().map(str::len), Some(256));

    // Numbers that fit nothing are not an error: SN 0, SumNum unknown.
    let resp = ua.send_raw(&manscdp(
        &ua.conn,
        &catalog("4294967296", "-1", "<Item><DeviceID>1</DeviceID></Item>"),
    ));
    assert_eq!(resp.code(), 200, "{resp:?}");

    let info = format!(
        "<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>9</SN>\r\n\
         <DeviceID>{DEVICE}</DeviceID>\r\n<Manufacturer>{}</Manufacturer>\r\n\
         <Channel>99999999999</Channel>\r\n</Response>\r\n",
        "m".repeat(20_000)
    );
    assert_eq!(ua.send_raw(&manscdp(&ua.conn, &info)).code(), 200);
    let dev = device_json(&srv, DEVICE);
    let manufacturer = dev["gb"]["info"]["manufacturer"].as_str().expect("info");
    assert_eq!(manufacturer.len(), 256, "{dev}");
    assert_eq!(dev["gb"]["info"]["channels"], Value::Null);
    still_serving(&mut ua.conn);
}

#[test]
fn deeply_nested_manscdp_is_refused_not_a_crash() {
    let srv = start();
    let mut udp = Udp::connect(srv.addr());
    // Some 20 000 levels in one datagram: the XML parser recurses per level,
    // so unchecked this overflows a worker's stack and kills the process. No
    // registration needed: the body is parsed before anything else.
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n{}</Notify>\r\n",
        "<a>".repeat(20_000)
    );
    let resp = udp.request(&manscdp(&udp, &body));
    assert_answer(&resp, 400, "Nested Too Deeply", "20 000 levels");
    let shallow = format!(
        "<Notify><CmdType>Alarm</CmdType>{}</Notify>",
        "<a>".repeat(33)
    );
    let resp = udp.request(&manscdp(&udp, &shallow));
    assert_answer(&resp, 400, "Nested Too Deeply", "34 levels");
    still_serving(&mut udp);
}

#[test]
fn catalog_from_another_address_is_refused() {
    let srv = start();
    let mut ua = Ua::new(Udp::connect(srv.addr()), DEVICE, "3402000000", "secret");
    let contact = format!("<sip:{DEVICE}@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(3600)).code(), 200);
    // Anyone else can otherwise fill the device's channel list.
    let mut other = Udp::connect_from("127.0.0.2", srv.addr());
    let items: String = (0..1_000)
        .map(|i| format!("<Item><DeviceID>{i}</DeviceID></Item>"))
        .collect();
    let resp = other.request(&manscdp(&other, &catalog("5", "1000", &items)));
    assert_eq!(resp.code(), 403, "{resp:?}");
    let dev = device_json(&srv, DEVICE);
    assert_eq!(
        dev["gb"]["channels"].as_array().map(Vec::len),
        Some(0),
        "{dev}"
    );
}
