//! GB28181 over the real binary: a camera registers, is asked for its catalog
//! (the platform's first query, over the flow it registered on), answers, sends
//! keep-alives and catalog parts, and unregisters — over UDP and TCP.

mod common;

use std::time::{Duration, Instant};

use common::client::{manscdp_message, Conn, Tcp, Ua, Udp};
use common::server::{Server, GB_ARGS, GB_PASSWORD, GB_REALM};
use sipreg::sip::{scan, HeaderId, ResponseWriter};

const DEVICE: &str = "34020000001320000007";

fn start() -> Server {
    Server::start(&[GB_ARGS, &["--min-expires", "2"]].concat())
}

/// The next request the server sends on this flow (a GB28181 query).
fn next_request(conn: &mut impl Conn, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let raw = conn.recv_timeout(left)?;
        if scan(&raw).is_ok_and(|m| m.is_request()) {
            return Some(raw);
        }
    }
}

fn message(conn: &impl Conn, body: &str) -> Vec<u8> {
    manscdp_message(conn, DEVICE, body)
}

fn camera_flow<C: Conn>(conn: C) {
    let mut ua = Ua::new(conn, DEVICE, GB_REALM, GB_PASSWORD);
    let contact = format!("<sip:{DEVICE}@{}>", ua.conn.local_addr());
    let resp = ua.register(&[&contact], Some(3600));
    assert_eq!(resp.code(), 200, "{resp:?}");
    // GB28181 devices get the GB Date form for clock sync.
    let date = resp.header(HeaderId::Date).expect("Date");
    assert_eq!(date.len(), "2026-11-22T05:40:00.000".len(), "{date}");

    // The platform asks for the catalog on the flow the device registered on.
    let query = next_request(&mut ua.conn, Duration::from_secs(5)).expect("catalog query");
    let q = scan(&query).unwrap();
    assert_eq!(q.request().unwrap().method_raw, b"MESSAGE");
    assert_eq!(
        q.value(HeaderId::ContentType),
        Some(&b"Application/MANSCDP+xml"[..])
    );
    let body = String::from_utf8_lossy(q.body).into_owned();
    assert!(body.contains("<CmdType>Catalog</CmdType>"), "{body}");
    assert!(
        body.contains(&format!("<DeviceID>{DEVICE}</DeviceID>")),
        "{body}"
    );
    assert!(
        String::from_utf8_lossy(q.value(HeaderId::From).unwrap()).contains("34020000002000000001")
    );
    let sn: u32 = body
        .split("<SN>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|s| s.parse().ok())
        .expect("SN");
    let mut ok = Vec::new();
    ResponseWriter::start(&mut ok, &q, 200, b"OK", ua.conn.local_addr(), b"cam").finish(b"");
    ua.conn.send(&ok);

    // Keep-alive from the registered flow: 200.
    let ka = format!("<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n");
    let resp = ua.send_raw(&message(&ua.conn, &ka));
    assert_eq!(resp.code(), 200, "{resp:?}");

    // The catalog in two parts, each acknowledged.
    for (i, ids) in [[1, 2], [3, 4]].iter().enumerate() {
        let items: String = ids
            .iter()
            .map(|c| format!("<Item><DeviceID>3402000000131000000{c}</DeviceID><Name>通道{c}</Name><Status>ON</Status></Item>"))
            .collect();
        let part = format!("<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<SumNum>4</SumNum>\r\n<DeviceList Num=\"2\">{items}</DeviceList>\r\n</Response>\r\n");
        let resp = ua.send_raw(&message(&ua.conn, &part));
        assert_eq!(resp.code(), 200, "part {i}: {resp:?}");
    }

    // Answered once: the 200 ended the transaction, so no retransmission of
    // the query arrives (timer E would fire 500 ms after it was sent).
    assert!(next_request(&mut ua.conn, Duration::from_millis(1200)).is_none());

    // Unregister.
    let resp = ua.register(&[&contact], Some(0));
    assert_eq!(resp.code(), 200, "{resp:?}");
    assert!(resp.contacts().is_empty());
}

#[test]
fn camera_over_udp() {
    let srv = start();
    camera_flow(Udp::connect(srv.addr()));
}

#[test]
fn camera_over_tcp() {
    let srv = start();
    camera_flow(Tcp::connect(srv.addr()));
}

#[test]
fn unanswered_query_is_retransmitted_over_udp() {
    let srv = start();
    let mut ua = Ua::new(Udp::connect(srv.addr()), DEVICE, GB_REALM, GB_PASSWORD);
    let contact = format!("<sip:{DEVICE}@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(3600)).code(), 200);
    let first = next_request(&mut ua.conn, Duration::from_secs(5)).expect("query");
    let again = next_request(&mut ua.conn, Duration::from_secs(3)).expect("timer E retransmission");
    assert_eq!(first, again, "a retransmission is the same request");
}

#[test]
fn keepalive_from_an_unregistered_device_is_403() {
    let srv = start();
    let mut udp = Udp::connect(srv.addr());
    let ka = format!(
        "<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{DEVICE}</DeviceID></Notify>"
    );
    let bytes = message(&udp, &ka);
    let resp = udp.request(&bytes);
    assert_eq!(
        (resp.code(), resp.reason().as_str()),
        (403, "Device Not Registered")
    );
    let bad = message(&udp, "<Notify><CmdType>Keepalive</Notify>");
    let resp = udp.request(&bad);
    assert_eq!(
        (resp.code(), resp.reason().as_str()),
        (400, "Malformed XML Body")
    );
}

/// Replaces a quoted digest parameter's value in a captured Authorization.
fn set_param(text: &str, name: &str, value: &str) -> String {
    let key = format!("{name}=\"");
    let start = text.find(&key).expect("param") + key.len();
    let end = start + text[start..].find('"').expect("closing quote");
    format!("{}{value}{}", &text[..start], &text[end..])
}

/// A captured REGISTER with its digest redone for a fresh challenge
/// (username admin, realm hik, password 12345, no qop, as the camera does).
fn reauthorise(capture: &[u8], challenge: &common::client::Response) -> Vec<u8> {
    let nonce = challenge.challenge_param("nonce").expect("nonce");
    let opaque = challenge.challenge_param("opaque").expect("opaque");
    let ha1 = sipreg::auth::ha1(b"admin", b"hik", b"12345");
    let uri = b"sip:130909115229300920@10.64.49.44:7100";
    let response = sipreg::auth::client_response(&ha1, nonce.as_bytes(), b"REGISTER", uri, None);
    let text = String::from_utf8(capture.to_vec()).unwrap();
    let text = set_param(&text, "nonce", &nonce);
    let text = set_param(&text, "response", std::str::from_utf8(&response).unwrap());
    set_param(&text, "opaque", &opaque).into_bytes()
}

/// The Hikvision capture replayed message by message: register (01 → 401,
/// 03 → 200), keep-alive 09 verbatim (its Content-Length is one byte short of
/// its body: accepted), the platform's catalog query answered like 12, and
/// unregister (05 → 401, 07 → 200).
#[test]
fn hikvision_capture_replayed() {
    use common::vectors::fixture;
    let srv = Server::start(&["--realm", "hik", "--password", "12345", "--threads", "2"]);
    let mut cam = Udp::connect(srv.addr());

    let challenge = cam.request(&fixture("hikvision-gb28181/01-register.sip"));
    assert_eq!(challenge.code(), 401);
    let ok = cam.request(&reauthorise(
        &fixture("hikvision-gb28181/03-register-auth.sip"),
        &challenge,
    ));
    assert_eq!(ok.code(), 200, "{ok:?}");
    assert_eq!(ok.contacts().len(), 1);

    let ka = cam.request(&fixture("hikvision-gb28181/09-keepalive-message.sip"));
    assert_eq!((ka.code(), ka.cseq()), (200, (20, "MESSAGE".to_string())));

    // The platform asks the camera for its catalog; the camera says 200 (12).
    let query = next_request(&mut cam, Duration::from_secs(5)).expect("catalog query");
    let q = scan(&query).unwrap();
    assert!(String::from_utf8_lossy(q.body).contains("<DeviceID>130909113319427420</DeviceID>"));
    let mut answer = Vec::new();
    let mut w = ResponseWriter::start(&mut answer, &q, 200, b"OK", cam.local_addr(), b"1981225076");
    w.header("User-Agent", b"Hikvision");
    w.finish(b"");
    cam.send(&answer);
    assert!(
        next_request(&mut cam, Duration::from_millis(1200)).is_none(),
        "answered once"
    );

    let challenge = cam.request(&fixture("hikvision-gb28181/05-unregister.sip"));
    assert_eq!(challenge.code(), 401);
    let bye = cam.request(&reauthorise(
        &fixture("hikvision-gb28181/07-unregister-auth.sip"),
        &challenge,
    ));
    assert_eq!(bye.code(), 200, "{bye:?}");
    assert!(bye.contacts().is_empty());
}

/// One keep-alive timeout event per camera: keep-alives schedule nothing once
/// one is pending, and the pending one re-arms itself at the newest deadline,
/// so a camera that keeps sending stays online past the first deadline and
/// goes offline one timeout after it stops.
#[test]
fn keepalives_keep_a_camera_online_until_they_stop() {
    let srv = Server::start(&[GB_ARGS, &["--keepalive-timeout", "1"]].concat());
    let mut ua = Ua::new(Udp::connect(srv.addr()), DEVICE, GB_REALM, GB_PASSWORD);
    let contact = format!("<sip:{DEVICE}@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(3600)).code(), 200);
    let offline = || srv.metric("sipreg_devices_went_offline_total");
    let ka = format!(
        "<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{DEVICE}</DeviceID><Status>OK</Status></Notify>"
    );
    // 2.4 s of keep-alives every 300 ms: past the first deadline (1 s) twice over.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2400) {
        let resp = ua.send_raw(&message(&ua.conn, &ka));
        assert_eq!(resp.code(), 200, "{resp:?}");
        assert_eq!(offline(), Some(0.0), "offline while keep-alives arrive");
        std::thread::sleep(Duration::from_millis(300));
    }
    let stopped = Instant::now();
    assert!(
        common::client::poll_until(Duration::from_secs(5), || (offline() == Some(1.0))
            .then_some(()))
        .is_some(),
        "never went offline"
    );
    // One timeout (1 s) after the last keep-alive, within a tick and CI slack.
    assert!(
        stopped.elapsed() >= Duration::from_millis(600),
        "{:?}",
        stopped.elapsed()
    );
    let (code, body) = srv.http_get(&format!("/api/devices/{DEVICE}"));
    assert_eq!(code, 200);
    assert!(body.contains("\"online\":false"), "{body}");
}
