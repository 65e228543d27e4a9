//! The redirect server over the real binary (RFC 3261 §8.3): 302 with every
//! live binding by q, 480, 404, 483, INVITE answers repeated until the ACK
//! (timer G), retransmitted INVITEs, CANCEL, over UDP and TCP.

mod common;

use std::time::{Duration, Instant};

use common::client::{branch, unique, Conn, Response, Tcp, Ua, Udp};
use common::server::Server;
use sipreg::sip::HeaderId;

const DOMAIN: &str = "example.com";

/// An out-of-dialog request to `user@example.com` with a fixed branch.
fn request(
    method: &str,
    user: &str,
    conn: &dyn Conn,
    branch: &str,
    cseq_method: &str,
    extra: &str,
) -> Vec<u8> {
    format!(
        "{method} sip:{user}@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/{} {};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@{DOMAIN}>;tag=c1\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: call-{branch}\r\n\
         CSeq: 1 {cseq_method}\r\n\
         {extra}Content-Length: 0\r\n\r\n",
        conn.transport(),
        conn.local_addr(),
    )
    .into_bytes()
}

fn register_two(srv: &Server, user: &str) {
    let mut ua = Ua::new(Udp::connect(srv.addr()), user, DOMAIN, "secret");
    let resp = ua.register(
        &[
            "<sip:low@192.0.2.1:5060>;q=0.5",
            "<sip:high@192.0.2.2:5060>;q=0.9",
        ],
        Some(600),
    );
    assert_eq!(resp.code(), 200, "{resp:?}");
}

fn contacts(resp: &Response) -> Vec<String> {
    resp.header_lines(HeaderId::Contact)
}

#[test]
fn invite_is_redirected_to_every_binding_by_q() {
    let srv = Server::start_default();
    register_two(&srv, "alice");
    for method in ["INVITE", "SUBSCRIBE", "REFER", "MESSAGE"] {
        let mut udp = Udp::connect(srv.addr());
        let b = branch();
        let resp = udp.request(&request(method, "alice", &udp, &b, method, ""));
        assert_eq!(
            (resp.code(), resp.reason().as_str()),
            (302, "Moved Temporarily"),
            "{method}"
        );
        let c = contacts(&resp);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c[0].starts_with("<sip:high@192.0.2.2:5060>;q=0.9;expires="),
            "{c:?}"
        );
        assert!(
            c[1].starts_with("<sip:low@192.0.2.1:5060>;q=0.5;expires="),
            "{c:?}"
        );
        let expires: u32 = c[0].rsplit('=').next().unwrap().parse().unwrap();
        assert!((590..=600).contains(&expires), "{expires}");
        if method == "INVITE" {
            let ack = request("ACK", "alice", &udp, &b, "ACK", "");
            udp.send(&ack);
        }
    }
}

#[test]
fn unknown_is_404_offline_is_480_and_max_forwards_zero_is_483() {
    let srv = Server::start_default();
    let mut udp = Udp::connect(srv.addr());
    let resp = udp.request(&request(
        "SUBSCRIBE",
        "nobody",
        &udp,
        &branch(),
        "SUBSCRIBE",
        "",
    ));
    assert_eq!((resp.code(), resp.reason().as_str()), (404, "Not Found"));

    // A GB28181 device that sent a keep-alive stays known after unregistering.
    let id = "34020000001320000042";
    let mut ua = Ua::new(Udp::connect(srv.addr()), id, DOMAIN, "secret");
    let contact = format!("<sip:{id}@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(600)).code(), 200);
    let body =
        format!("<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{id}</DeviceID></Notify>");
    let ka = format!(
        "MESSAGE sip:34020000002000000001@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={};rport\r\n\
         From: <sip:{id}@{DOMAIN}>;tag=k\r\nTo: <sip:34020000002000000001@{DOMAIN}>\r\nCall-ID: {}\r\n\
         CSeq: 1 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {}\r\n\r\n{body}",
        ua.conn.local_addr(),
        branch(),
        unique("ka"),
        body.len()
    );
    assert_eq!(ua.send_raw(ka.as_bytes()).code(), 200);
    assert_eq!(ua.register(&[&contact], Some(0)).code(), 200);
    let resp = udp.request(&request("SUBSCRIBE", id, &udp, &branch(), "SUBSCRIBE", ""));
    assert_eq!(
        (resp.code(), resp.reason().as_str()),
        (480, "Temporarily Unavailable")
    );

    register_two(&srv, "carol");
    let zero = request("INVITE", "carol", &udp, &branch(), "INVITE", "")
        .into_iter()
        .collect::<Vec<u8>>();
    let zero = String::from_utf8(zero)
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let resp = udp.request(zero.as_bytes());
    assert_eq!(
        (resp.code(), resp.reason().as_str()),
        (483, "Too Many Hops")
    );
}

#[test]
fn invite_answer_is_repeated_until_the_ack_over_udp() {
    let srv = Server::start_default();
    register_two(&srv, "dave");
    let mut udp = Udp::connect(srv.addr());
    let b = branch();
    let invite = request("INVITE", "dave", &udp, &b, "INVITE", "");
    let first = udp.request(&invite);
    assert_eq!(first.code(), 302);
    // Timer G: the same 302 again after T1 without an ACK.
    let again = udp
        .recv_timeout(Duration::from_secs(3))
        .expect("302 retransmitted");
    assert_eq!(Response::new(again).branch(), first.branch());
    // A retransmitted INVITE gets the same final answer.
    assert_eq!(udp.request(&invite).code(), 302);
    // The ACK ends it: nothing more arrives (timer G would fire within 2 s).
    udp.send(&request("ACK", "dave", &udp, &b, "ACK", ""));
    let deadline = Instant::now() + Duration::from_millis(2500);
    // Answers already in flight before the ACK may still arrive; nothing after.
    let mut late = 0;
    while udp
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_some()
    {
        late += 1;
    }
    assert!(late <= 1, "{late} retransmissions after the ACK");

    // CANCEL of an answered INVITE: 200, and nothing changes.
    let cancel = request("CANCEL", "dave", &udp, &b, "CANCEL", "");
    let resp = udp.request(&cancel);
    assert_eq!((resp.code(), resp.reason().as_str()), (200, "OK"));
    // CANCEL of something never seen: 481.
    let stray = request("CANCEL", "dave", &udp, &branch(), "CANCEL", "");
    assert_eq!(udp.request(&stray).code(), 481);
}

#[test]
fn invite_over_tcp_is_answered_once() {
    let srv = Server::start_default();
    register_two(&srv, "erin");
    let mut tcp = Tcp::connect(srv.addr());
    let resp = tcp.request(&request("INVITE", "erin", &tcp, &branch(), "INVITE", ""));
    assert_eq!(resp.code(), 302);
    assert_eq!(contacts(&resp).len(), 2);
    // Reliable transport: no timer G.
    assert!(tcp.recv_timeout(Duration::from_millis(1200)).is_none());
}

#[test]
fn redirect_auth_challenges_callers() {
    let srv = Server::start(&[
        "--realm",
        "sipreg",
        "--password",
        "secret",
        "--redirect-auth",
    ]);
    register_two(&srv, "frank");
    let mut udp = Udp::connect(srv.addr());
    let resp = udp.request(&request("INVITE", "frank", &udp, &branch(), "INVITE", ""));
    assert_eq!(resp.code(), 401);
    let ch = common::client::Challenge::from_401(&resp);
    let auth = ch.authorization(
        "caller",
        "secret",
        "INVITE",
        &format!("sip:frank@{DOMAIN}"),
        Some((1, "abc")),
    );
    let b = branch();
    let resp = udp.request(&request(
        "INVITE",
        "frank",
        &udp,
        &b,
        "INVITE",
        &format!("Authorization: {auth}\r\n"),
    ));
    assert_eq!(resp.code(), 302, "{resp:?}");
    udp.send(&request("ACK", "frank", &udp, &b, "ACK", ""));
}
