//! `--rate-limit`: a flooding source is answered 503 + Retry-After, then
//! dropped, while a well-behaved device at the same time still registers.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::client::{branch, unique, Conn, Ua, Udp};
use common::server::Server;

#[test]
fn a_flood_is_throttled_while_a_device_registers() {
    let srv = Server::start(&[
        "--realm",
        "sipreg",
        "--password",
        "secret",
        "--threads",
        "1",
        "--rate-limit",
        "20",
        "--rate-burst",
        "20",
    ]);
    // The flood comes from another loopback address than the good device.
    let flood = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let local = flood.local_addr().unwrap();
    let sent = 300;
    for i in 0..sent {
        let req = format!(
            "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}-{i}\r\n\
             From: <sip:flood@127.0.0.2>;tag=f\r\nTo: <sip:probe@127.0.0.1>\r\nCall-ID: {}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            branch(),
            unique("flood")
        );
        flood.send_to(req.as_bytes(), srv.addr()).unwrap();
    }

    // Meanwhile a device registers from 127.0.0.1 as usual.
    let mut ua = Ua::new(Udp::connect(srv.addr()), "alice", "example.com", "secret");
    let contact = format!("<sip:alice@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(600)).code(), 200);

    // Collect the flood's answers until the line goes quiet.
    let (mut ok, mut unavailable, mut retry_after) = (0, 0, 0);
    let mut buf = vec![0u8; 65536];
    flood
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok((n, _)) = flood.recv_from(&mut buf) else {
            break;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0 200 ") {
            ok += 1;
        } else if text.starts_with("SIP/2.0 503 ") {
            unavailable += 1;
            retry_after += usize::from(text.contains("\r\nRetry-After: 1\r\n"));
        }
    }
    // The burst (20) plus a little refill gets through, the next burst's worth
    // is told to come back later, the rest is dropped without an answer.
    assert!((20..=30).contains(&ok), "ok {ok}");
    assert!((15..=25).contains(&unavailable), "503 {unavailable}");
    assert_eq!(retry_after, unavailable);
    assert!(ok + unavailable < sent / 2, "most of the flood is dropped");
    let (_, metrics) = srv.http_get("/metrics");
    assert!(
        metrics.contains(&format!("sipreg_rate_limited_total {unavailable}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("sipreg_drops_total{reason=\"rate_limited\"}"));
}
