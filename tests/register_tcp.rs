//! SIP over TCP against the real binary (RFC 3261 §18.3 framing, RFC 5626
//! keep-alive ping): the registrar flow on one connection, pipelining, split
//! requests, CRLF ping and idle close.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::client::{request_branch, simple_request, Conn, Register, Response, Tcp, Ua, Udp};
use common::server::Server;
use sipreg::sip::HeaderId;

const DOMAIN: &str = "example.com";
const A: &str = "sip:alice@192.0.2.1:5071;transport=tcp";
const B: &str = "sip:alice@192.0.2.2:5072;transport=tcp";

fn assert_code(resp: &Response, code: u16) {
    assert_eq!(resp.code(), code, "unexpected answer:\n{resp:?}");
}

#[test]
fn register_flow_on_one_connection() {
    let srv = Server::start_default();
    let mut ua = Ua::new(Tcp::connect(srv.addr()), "alice", DOMAIN, "secret");
    let port = ua.conn.local_addr().port().to_string();

    let resp = ua.register(&[&format!("<{A}>")], Some(600));
    assert_code(&resp, 200);
    assert_eq!(resp.contacts(), vec![(A.to_string(), Some(600))]);
    assert!(resp.has(HeaderId::Date));
    assert!(
        resp.top_via().starts_with("SIP/2.0/TCP "),
        "{}",
        resp.top_via()
    );
    assert_eq!(
        resp.via_param("received"),
        Some(Some("127.0.0.1".to_string()))
    );
    assert_eq!(resp.via_param("rport"), Some(Some(port)));

    let resp = ua.register(&[&format!("<{B}>;expires=900")], None);
    assert_code(&resp, 200);
    assert_eq!(resp.contact_uris(), vec![A.to_string(), B.to_string()]);

    let resp = ua.register(&[&format!("<{A}>;expires=0")], None);
    assert_code(&resp, 200);
    assert_eq!(resp.contact_uris(), vec![B.to_string()]);

    // Too brief and wildcard rules are the same as over UDP.
    let resp = ua.register(&[&format!("<{A}>")], Some(1));
    assert_code(&resp, 423);
    assert_eq!(resp.header(HeaderId::MinExpires).as_deref(), Some("2"));
    assert_code(&ua.register(&["*"], Some(60)), 400);
    let resp = ua.register(&["*"], Some(0));
    assert_code(&resp, 200);
    assert_eq!(resp.contacts(), vec![]);
}

#[test]
fn udp_and_tcp_share_the_port_and_the_registry() {
    let srv = Server::start_default();
    let mut over_tcp = Ua::new(Tcp::connect(srv.addr()), "alice", DOMAIN, "secret");
    assert_code(&over_tcp.register(&[&format!("<{A}>")], None), 200);
    let mut over_udp = Ua::new(Udp::connect(srv.addr()), "alice", DOMAIN, "secret");
    assert_eq!(over_udp.query().contact_uris(), vec![A.to_string()]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = Server::start_default();
    let mut tcp = Tcp::connect(srv.addr());
    let requests = [
        simple_request("OPTIONS", &tcp),
        Register::new("alice", DOMAIN)
            .contact("<sip:alice@192.0.2.1>")
            .build(&tcp),
        simple_request("BYE", &tcp),
        simple_request("OPTIONS", &tcp),
    ];
    let branches: Vec<Option<String>> = requests.iter().map(|r| request_branch(r)).collect();
    tcp.send(&requests.concat());

    let answers: Vec<Response> = (0..requests.len()).map(|_| tcp.recv()).collect();
    let codes: Vec<u16> = answers.iter().map(Response::code).collect();
    assert_eq!(codes, vec![200, 401, 405, 200], "{answers:?}");
    let got: Vec<Option<String>> = answers.iter().map(Response::branch).collect();
    assert_eq!(got, branches, "answers out of order");
    // Nothing else was queued: the next answer is the next request's.
    let next = simple_request("OPTIONS", &tcp);
    tcp.send(&next);
    assert_eq!(tcp.recv().branch(), request_branch(&next));
}

#[test]
fn request_split_over_many_writes_is_answered_once() {
    let srv = Server::start_default();
    let mut tcp = Tcp::connect(srv.addr());
    let options = simple_request("OPTIONS", &tcp);
    for byte in &options {
        tcp.stream
            .write_all(std::slice::from_ref(byte))
            .expect("write");
        tcp.stream.flush().expect("flush");
    }
    let resp = tcp.recv();
    assert_code(&resp, 200);
    assert_eq!(resp.branch(), request_branch(&options));

    // Header and body split across writes, with a pause-free trickle.
    let register = Register::new("alice", DOMAIN)
        .contact("<sip:alice@192.0.2.1>")
        .build(&tcp);
    for chunk in register.chunks(7) {
        tcp.stream.write_all(chunk).expect("write");
    }
    assert_code(&tcp.recv(), 401);

    // Nothing else was queued: the next answer is the next request's.
    let next = simple_request("OPTIONS", &tcp);
    tcp.send(&next);
    assert_eq!(tcp.recv().branch(), request_branch(&next));
}

#[test]
fn body_is_framed_by_content_length() {
    let srv = Server::start_default();
    let mut tcp = Tcp::connect(srv.addr());
    let with_body = String::from_utf8(simple_request("OPTIONS", &tcp))
        .unwrap()
        .replace(
            "Content-Length: 0\r\n\r\n",
            "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        );
    let after = simple_request("OPTIONS", &tcp);
    tcp.send(&[with_body.as_bytes(), &after].concat());
    assert_code(&tcp.recv(), 200);
    let resp = tcp.recv();
    assert_code(&resp, 200);
    assert_eq!(resp.branch(), request_branch(&after));
}

#[test]
fn double_crlf_ping_is_answered_with_crlf() {
    let srv = Server::start_default();
    let mut tcp = Tcp::connect(srv.addr());
    tcp.send(b"\r\n\r\n");
    let pong = tcp
        .read_raw(Duration::from_secs(5))
        .expect("no pong within 5 s");
    assert_eq!(pong, b"\r\n");
    // The connection still serves requests.
    let resp = tcp.request(&simple_request("OPTIONS", &tcp));
    assert_code(&resp, 200);
}

#[test]
fn malformed_request_over_tcp_is_400() {
    let srv = Server::start_default();
    let mut tcp = Tcp::connect(srv.addr());
    let bad = String::from_utf8(simple_request("OPTIONS", &tcp))
        .unwrap()
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    let resp = tcp.request(bad.as_bytes());
    assert_code(&resp, 400);
    assert!(resp.reason().contains("CSeq"), "reason: {}", resp.reason());
}

#[test]
fn idle_connection_is_closed() {
    let srv = Server::start_with(&[("--tcp-idle-timeout", "1")]);
    let mut tcp = Tcp::connect(srv.addr());
    assert_code(&tcp.request(&simple_request("OPTIONS", &tcp)), 200);
    let start = Instant::now();
    assert!(
        tcp.closed_within(Duration::from_secs(5)),
        "connection idle for 5 s with --tcp-idle-timeout 1 still open"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "closed after {:?}, before the idle timeout",
        start.elapsed()
    );
    // New connections are still accepted.
    let mut again = Tcp::connect(srv.addr());
    assert_code(&again.request(&simple_request("OPTIONS", &again)), 200);
}

#[test]
fn many_connections_at_once() {
    let srv = Server::start_with(&[("--threads", "4")]);
    let addr = srv.addr();
    std::thread::scope(|s| {
        for i in 0..16 {
            s.spawn(move || {
                let user = format!("tcpuser{i}");
                let mut ua = Ua::new(Tcp::connect(addr), &user, DOMAIN, "secret");
                let contact = format!("sip:{user}@192.0.2.{}:5060;transport=tcp", i + 1);
                let resp = ua.register(&[&format!("<{contact}>")], Some(300));
                assert_code(&resp, 200);
                assert_eq!(resp.contact_uris(), vec![contact]);
            });
        }
    });
}
