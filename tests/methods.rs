//! Everything that is not a REGISTER flow: other methods, malformed input,
//! garbage, RFC 4475's torture messages, and the command line.

mod common;

use std::net::{TcpListener, UdpSocket};

use common::client::{request_branch, simple_request, Conn, Response, Tcp, Ua, Udp};
use common::server::{run_to_exit, Server};
use common::vectors::rfc4475;
use sipreg::sip::HeaderId;

fn assert_code(resp: &Response, code: u16) {
    assert_eq!(resp.code(), code, "unexpected answer:\n{resp:?}");
}

fn request_text(method: &str, conn: &dyn Conn) -> String {
    String::from_utf8(simple_request(method, conn)).expect("ascii")
}

/// Sends `bytes` then an OPTIONS probe on the same socket, and returns what
/// the server answered to `bytes` (everything before the probe's answer) —
/// one flow is served in order, so no timeout stands in for "no answer".
fn answers_before_probe(udp: &mut Udp, bytes: &[u8]) -> Vec<Response> {
    raw_answers_before_probe(udp, bytes)
        .into_iter()
        .map(Response::new)
        .collect()
}

/// [`answers_before_probe`] without requiring the answers to scan.
fn raw_answers_before_probe(udp: &mut Udp, bytes: &[u8]) -> Vec<Vec<u8>> {
    udp.send(bytes);
    let probe = simple_request("OPTIONS", udp);
    let want = request_branch(&probe);
    udp.send(&probe);
    let mut before = Vec::new();
    loop {
        let raw = udp
            .recv_timeout(common::client::ANSWER_TIMEOUT)
            .expect("the server stopped answering OPTIONS");
        if sipreg::sip::scan(&raw).is_ok() {
            let resp = Response::new(raw.clone());
            if resp.branch() == want && resp.cseq().1 == "OPTIONS" {
                assert_code(&resp, 200);
                return before;
            }
        }
        before.push(raw);
    }
}

/// The status code of a response's start line, without scanning the rest.
fn status_code(raw: &[u8]) -> Option<u16> {
    let line = raw.split(|&b| b == b'\r').next()?;
    let code = line.strip_prefix(b"SIP/2.0 ")?.get(..3)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

// ------------------------------------------------------------ methods

#[test]
fn options_is_200_with_allow_accept_supported() {
    let srv = Server::start_default();
    let mut udp = Udp::connect(srv.addr());
    let mut tcp = Tcp::connect(srv.addr());
    for resp in [
        udp.request(&simple_request("OPTIONS", &udp)),
        tcp.request(&simple_request("OPTIONS", &tcp)),
    ] {
        assert_code(&resp, 200);
        let allow = resp.header(HeaderId::Allow).expect("Allow");
        for m in ["REGISTER", "OPTIONS"] {
            assert!(allow.contains(m), "Allow: {allow}");
        }
        assert!(resp.has(HeaderId::Accept), "no Accept:\n{resp:?}");
        assert!(resp.has(HeaderId::Supported), "no Supported:\n{resp:?}");
        assert!(resp.via_param("received").is_some() || resp.via_param("rport").is_some());
    }
}

#[test]
fn known_methods_not_served_are_405_with_allow() {
    let srv = Server::start_default();
    let mut udp = Udp::connect(srv.addr());
    // INVITE, SUBSCRIBE, REFER and MESSAGE are answered by the redirect server.
    for method in ["BYE", "NOTIFY", "INFO", "UPDATE", "PRACK", "PUBLISH"] {
        let resp = udp.request(&simple_request(method, &udp));
        assert_code(&resp, 405);
        assert_eq!(resp.reason(), "Method Not Allowed", "{method}");
        let allow = resp.header(HeaderId::Allow).expect("405 without Allow");
        assert!(allow.contains("REGISTER"), "Allow: {allow}");
        assert!(!allow.contains(method), "{method} is in Allow: {allow}");
        assert_eq!(resp.cseq(), (1, method.to_string()));
    }
}

#[test]
fn unknown_method_is_501() {
    let srv = Server::start_default();
    let mut udp = Udp::connect(srv.addr());
    let resp = udp.request(&simple_request("FOO", &udp));
    assert_code(&resp, 501);
    assert_eq!(resp.reason(), "Not Implemented");
}

#[test]
fn other_sip_version_is_505() {
    let srv = Server::start_default();
    let mut udp = Udp::connect(srv.addr());
    let req = request_text("OPTIONS", &udp).replacen(" SIP/2.0\r\n", " SIP/3.0\r\n", 1);
    let resp = udp.request(req.as_bytes());
    assert_code(&resp, 505);
    assert!(
        resp.reason().contains("Version"),
        "reason: {}",
        resp.reason()
    );
}

#[test]
fn malformed_requests_are_400_naming_the_problem() {
    let srv = Server::start_default();
    let mut udp = Udp::connect(srv.addr());

    let mismatch = request_text("OPTIONS", &udp).replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    let resp = udp.request(mismatch.as_bytes());
    assert_code(&resp, 400);
    assert!(resp.reason().contains("CSeq"), "reason: {}", resp.reason());

    let text = request_text("REGISTER", &udp);
    let no_call_id: String = text
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("Call-ID:"))
        .collect();
    let resp = udp.request(no_call_id.as_bytes());
    assert_code(&resp, 400);
    assert!(
        resp.reason().contains("Call-ID"),
        "reason: {}",
        resp.reason()
    );

    let bad_expires = request_text("REGISTER", &udp).replace(
        "Content-Length: 0",
        "Contact: <sip:a@192.0.2.1>\r\nExpires: soon\r\nContent-Length: 0",
    );
    let resp = udp.request(bad_expires.as_bytes());
    assert!(
        resp.code() == 400 || resp.code() == 401,
        "malformed Expires answered {}",
        resp.code()
    );
}

#[test]
fn responses_and_garbage_get_no_reply_and_the_server_keeps_serving() {
    let srv = Server::start_default();
    let mut udp = Udp::connect(srv.addr());
    let response = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKstray;rport\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: stray\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        udp.local_addr()
    );
    let garbage: [&[u8]; 7] = [
        b"jaK",
        b"",
        b"\r\n\r\n",
        b"\r\n",
        b"\0\0\0\0",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        response.as_bytes(),
    ];
    for g in garbage {
        let answers = answers_before_probe(&mut udp, g);
        assert!(
            answers.is_empty(),
            "{:?} was answered: {answers:?}",
            String::from_utf8_lossy(g)
        );
    }
}

/// Points every simple Via sent-by at us (`127.0.0.1:port`), so whichever
/// rule the server uses to route a response (source address or Via), it
/// comes back to this socket and never leaves the machine. Folded Via lines
/// are left as they are.
fn localise_via(msg: &[u8], port: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    let end_of_headers = find(msg, b"\r\n\r\n").map_or(msg.len(), |i| i + 2);
    let (head, body) = msg.split_at(end_of_headers);
    for line in head.split_inclusive(|&b| b == b'\n') {
        let name = line
            .split(|&b| b == b':')
            .next()
            .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase());
        if !matches!(name.as_deref(), Some("via" | "v")) {
            out.extend_from_slice(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = find(rest, b"SIP/") {
            // SIP/x.y/TRANSPORT SP sent-by
            let after = &rest[at..];
            let Some(sp) = after.iter().position(|&b| b == b' ') else {
                break;
            };
            let host_start = at + sp + 1;
            let host_len = rest[host_start..]
                .iter()
                .position(|&b| matches!(b, b';' | b',' | b'\r' | b'\n' | b' '))
                .unwrap_or(rest.len() - host_start);
            if host_len == 0 {
                break;
            }
            out.extend_from_slice(&rest[..host_start]);
            out.extend_from_slice(format!("127.0.0.1:{port}").as_bytes());
            rest = &rest[host_start + host_len..];
        }
        out.extend_from_slice(rest);
    }
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn rfc4475_messages_never_kill_the_server_nor_get_2xx_when_invalid() {
    let srv = Server::start_default();
    let mut failures = Vec::new();
    for (name, class, bytes) in rfc4475() {
        let mut udp = Udp::connect(srv.addr());
        let msg = localise_via(&bytes, udp.local_addr().port());
        let answers = raw_answers_before_probe(&mut udp, &msg);
        let codes: Vec<u16> = answers.iter().filter_map(|a| status_code(a)).collect();
        eprintln!("{name:12} {class:12} -> {codes:?}");
        for a in &answers {
            // scalar02's CSeq is too large to parse, and RFC 3261 §8.2.6.2 has
            // the 400 echo it verbatim: only that error is expected in an answer.
            let echoed_bad_cseq = name == "scalar02";
            if let Err(e) = sipreg::sip::scan(a).map(|_| ()).or_else(|e| {
                if echoed_bad_cseq && e == sipreg::sip::ScanError::BadCSeq {
                    Ok(())
                } else {
                    Err(e)
                }
            }) {
                failures.push(format!(
                    "{name} ({class}): the answer is not a well-formed response ({e:?}):\n{}",
                    String::from_utf8_lossy(a)
                ));
            }
        }
        let is_response = bytes.starts_with(b"SIP/");
        let expected: Option<&[u16]> = match name.as_str() {
            "badvers" => Some(&[505]),
            "mismatch01" | "insuf" => Some(&[400]),
            "mismatch02" => Some(&[400, 501]),
            "lwsdisp" | "semiuri" | "transports" => Some(&[200]),
            "esc02" | "intmeth" => Some(&[501]),
            _ => None,
        };
        let ok = if is_response {
            answers.is_empty()
        } else if answers.len() > 1 || codes.len() != answers.len() {
            false
        } else if let (Some(want), Some(&got)) = (expected, codes.first()) {
            want.contains(&got)
        } else if class == "invalid" {
            codes.iter().all(|&c| c >= 400)
        } else if class == "valid" {
            // Valid messages (the INVITEs among them reach the redirect
            // server) are never refused as malformed.
            codes.iter().all(|&c| c != 400)
        } else {
            true
        };
        if !ok {
            failures.push(format!("{name} ({class}): answered {codes:?}"));
        }
    }
    assert!(failures.is_empty(), "RFC 4475: {failures:#?}");
}

// ------------------------------------------------------------ modes

#[test]
fn no_auth_registers_without_a_challenge() {
    let srv = Server::start(&["--no-auth", "--threads", "2"]);
    let mut ua = Ua::new(Udp::connect(srv.addr()), "alice", "example.com", "");
    let r = ua.next_register(&["<sip:alice@192.0.2.1>"], Some(600));
    let resp = ua.send(&r);
    assert_code(&resp, 200);
    assert_eq!(
        resp.contacts(),
        vec![("sip:alice@192.0.2.1".to_string(), Some(600))]
    );
}

#[test]
fn domain_restriction_refuses_other_domains() {
    let srv = Server::start_with(&[("--domain", "example.com")]);
    let mut other = Ua::new(Udp::connect(srv.addr()), "alice", "example.org", "secret");
    let resp = other.register(&["<sip:alice@192.0.2.1>"], None);
    assert!(
        (400..500).contains(&resp.code()) && resp.code() != 401,
        "REGISTER for another domain answered:\n{resp:?}"
    );
    let mut ours = Ua::new(Udp::connect(srv.addr()), "alice", "example.com", "secret");
    assert_code(&ours.register(&["<sip:alice@192.0.2.1>"], None), 200);
}

#[test]
fn sigterm_and_sigint_exit_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let srv = Server::start_default();
        let mut udp = Udp::connect(srv.addr());
        assert_code(&udp.request(&simple_request("OPTIONS", &udp)), 200);
        let status = srv.stop_with(signal);
        assert!(status.success(), "signal {signal}: exit {status}");
    }
}

// ------------------------------------------------------------ command line

const LOOPBACK: [&str; 4] = ["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];

fn with_loopback<'a>(args: &[&'a str]) -> Vec<&'a str> {
    LOOPBACK
        .iter()
        .copied()
        .chain(args.iter().copied())
        .collect()
}

fn assert_one_line_error(status: std::process::ExitStatus, stderr: &str, mentions: &str) {
    assert!(!status.success(), "exit {status}, stderr: {stderr}");
    assert!(status.code().is_some(), "killed by a signal: {status}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{stderr}");
    assert!(
        lines[0].contains(mentions),
        "error does not mention {mentions:?}: {}",
        lines[0]
    );
}

#[test]
fn bad_flag_is_a_one_line_error() {
    let (status, stderr) =
        Server::start_expect_failure(&with_loopback(&["--password", "x", "--frobnicate"]));
    assert_one_line_error(status, &stderr, "--frobnicate");
    let (status, stderr) =
        Server::start_expect_failure(&with_loopback(&["--password", "x", "--threads", "many"]));
    assert_one_line_error(status, &stderr, "--threads");
}

#[test]
fn unreadable_users_file_is_a_one_line_error() {
    let path = std::env::temp_dir().join(common::client::unique("no-such-users-"));
    let path = path.to_str().unwrap();
    let (status, stderr) = Server::start_expect_failure(&with_loopback(&["--users", path]));
    assert_one_line_error(status, &stderr, path);
}

#[test]
fn malformed_users_file_names_the_line() {
    let path = std::env::temp_dir().join(common::client::unique("bad-users-"));
    std::fs::write(
        &path,
        "alice:sipreg:0123456789abcdef0123456789abcdef\nbob:sipreg:not-a-hash\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (status, stderr) = Server::start_expect_failure(&with_loopback(&["--users", p]));
    let _ = std::fs::remove_file(&path);
    assert_one_line_error(status, &stderr, p);
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn address_in_use_is_a_one_line_error() {
    // Hold the port with plain sockets (no SO_REUSEPORT), TCP and UDP.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let _udp = UdpSocket::bind(("127.0.0.1", port)).ok();
    let addr = format!("127.0.0.1:{port}");
    let (status, stderr) = Server::start_expect_failure(&[
        "--listen",
        &addr,
        "--http",
        "127.0.0.1:0",
        "--password",
        "x",
    ]);
    assert_one_line_error(status, &stderr, &addr);
    drop(tcp);
}

#[test]
fn refuses_to_run_open_without_no_auth() {
    let (status, stderr) = Server::start_expect_failure(&LOOPBACK);
    assert_one_line_error(status, &stderr, "");
    assert!(
        ["--users", "--password", "--no-auth"]
            .iter()
            .any(|f| stderr.contains(f)),
        "the error should say which flag to add: {stderr}"
    );
}

#[test]
fn help_documents_every_flag() {
    let (status, stdout, stderr) = run_to_exit(&["--help"]);
    assert!(status.success(), "--help exit {status}: {stderr}");
    let text = stdout + &stderr;
    for flag in [
        "--listen",
        "--http",
        "--realm",
        "--users",
        "--password",
        "--min-expires",
        "--max-expires",
        "--default-expires",
        "--nonce-ttl",
        "--max-contacts",
        "--threads",
        "--domain",
        "--no-auth",
        "--tcp-idle-timeout",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
}
