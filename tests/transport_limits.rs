//! Transport bounds against the real binary (issue 6 point 2): TCP connections
//! per source IP and per worker, the partial-message (slowloris) timeout, the
//! read- and write-buffer caps, the idle timeout with RFC 5626 CRLF pings, and
//! `--udp-rcvbuf`. Each abuse is refused and counted in /metrics while a
//! well-behaved device, at the same time, still registers.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::client::{poll_until, simple_request, Conn, Tcp, Ua, Udp};
use common::server::Server;

const DOMAIN: &str = "example.com";
/// Where abusive peers come from, so the good device (127.0.0.1) is another
/// source IP.
const ABUSER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--realm", "sipreg", "--password", "secret"];
    a.extend_from_slice(extra);
    a
}

// ---------------------------------------------------------------- metrics

/// The value of one sample in /metrics, `name` with its labels exactly as
/// exposed (`sipreg_tcp_closed_total{reason="idle"}`); 0 when absent.
fn metric(srv: &Server, name: &str) -> u64 {
    srv.metric(name).map_or(0, |v| v as u64)
}

/// Polls until `name` reaches at least `want`; its last value otherwise.
fn metric_reaches(srv: &Server, name: &str, want: u64) -> Result<u64, u64> {
    let mut last = 0;
    poll_until(Duration::from_secs(5), || {
        last = metric(srv, name);
        (last >= want).then_some(last)
    })
    .ok_or(last)
}

/// A device from 127.0.0.1 registers over TCP: the server still serves.
/// Returns it, connection open.
fn good_device_registers(srv: &Server, user: &str) -> Ua<Tcp> {
    let mut ua = Ua::new(Tcp::connect(srv.addr()), user, DOMAIN, "secret");
    let contact = format!("<sip:{user}@{};transport=tcp>", ua.conn.local_addr());
    let resp = ua.register(&[&contact], Some(600));
    assert_eq!(resp.code(), 200, "{resp:?}\n{}", srv.stderr_report());
    ua
}

// ---------------------------------------------------------------- caps

#[test]
fn per_source_cap_refuses_the_extra_connection_while_others_register() {
    let srv = Server::start(&args(&["--threads", "1", "--tcp-max-per-source", "3"]));
    let mut held: Vec<Tcp> = (0..3)
        .map(|_| Tcp::connect_from(ABUSER, srv.addr()))
        .collect();
    for (i, p) in held.iter_mut().enumerate() {
        assert!(p.served(), "connection {i} under the cap not served");
    }
    let mut extra = Tcp::connect_from(ABUSER, srv.addr());
    assert!(
        extra.closed_within(Duration::from_secs(5)),
        "a 4th connection from one source with --tcp-max-per-source 3 stayed open"
    );
    assert_eq!(
        metric_reaches(&srv, "sipreg_tcp_rejected_total{reason=\"per_source\"}", 1),
        Ok(1)
    );

    // Another source is not affected, and the held connections still work.
    let _device = good_device_registers(&srv, "alice");
    assert!(held[0].served());
    assert_eq!(
        metric(&srv, "sipreg_tcp_connections"),
        4,
        "3 held + the device"
    );

    // Closing one frees its place for the same source.
    drop(held.pop());
    let again = poll_until(Duration::from_secs(5), || {
        let mut p = Tcp::connect_from(ABUSER, srv.addr());
        p.served().then_some(p)
    });
    assert!(again.is_some(), "the freed place was not given back");
    assert_eq!(
        metric(&srv, "sipreg_tcp_rejected_total{reason=\"per_worker\"}"),
        0
    );
}

#[test]
fn per_worker_cap_refuses_at_accept_and_the_backlog_keeps_draining() {
    let srv = Server::start(&args(&[
        "--threads",
        "1",
        "--tcp-max-connections",
        "4",
        "--tcp-max-per-source",
        "100",
    ]));
    let mut held: Vec<Tcp> = (0..4)
        .map(|_| Tcp::connect_from(ABUSER, srv.addr()))
        .collect();
    for (i, p) in held.iter_mut().enumerate() {
        assert!(p.served(), "connection {i} under the cap not served");
    }
    assert_eq!(
        metric(&srv, "sipreg_worker_tcp_connections{worker=\"0\"}"),
        4
    );

    // Over the cap, from any source: each is accepted and closed at once
    // rather than left to fill the backlog.
    let mut over: Vec<Tcp> = (0..20)
        .map(|i| {
            let ip = if i % 2 == 0 {
                ABUSER
            } else {
                Ipv4Addr::LOCALHOST
            };
            Tcp::connect_from(ip, srv.addr())
        })
        .collect();
    for (i, p) in over.iter_mut().enumerate() {
        assert!(
            p.closed_within(Duration::from_secs(5)),
            "connection {i} over --tcp-max-connections 4 stayed open"
        );
    }
    assert_eq!(
        metric_reaches(&srv, "sipreg_tcp_rejected_total{reason=\"per_worker\"}", 20),
        Ok(20)
    );

    // UDP is not held up by a full TCP table.
    let mut ua = Ua::new(Udp::connect(srv.addr()), "bob", DOMAIN, "secret");
    let contact = format!("<sip:bob@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(600)).code(), 200);

    // A place freed is a place a well-behaved device gets (once the worker
    // has seen the close: polled).
    drop(held.pop());
    let conn = poll_until(Duration::from_secs(5), || {
        let mut p = Tcp::connect_from(Ipv4Addr::LOCALHOST, srv.addr());
        p.served().then_some(p)
    })
    .expect("the freed place was not given back");
    let mut ua = Ua::new(conn, "carol", DOMAIN, "secret");
    let contact = format!("<sip:carol@{};transport=tcp>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(600)).code(), 200);
    assert!(held[0].served(), "held connections keep working");
}

// ---------------------------------------------------------------- slowloris

#[test]
fn slowloris_is_closed_after_the_message_timeout_while_a_device_registers() {
    let srv = Server::start(&args(&[
        "--threads",
        "1",
        "--tcp-message-timeout",
        "1",
        "--tcp-idle-timeout",
        "60",
    ]));
    let mut slow = Tcp::connect_from(ABUSER, srv.addr());
    let request = simple_request("OPTIONS", &slow);
    slow.send(&request[..request.len() / 2]);
    let start = Instant::now();

    // A connection idle between complete messages is governed by the idle
    // timeout (60 s here), not the message timeout.
    let mut idle = Tcp::connect_from(Ipv4Addr::LOCALHOST, srv.addr());
    assert!(idle.served());

    // The slow peer keeps trickling bytes (so it is never idle) but never
    // finishes its message; meanwhile a device registers.
    good_device_registers(&srv, "alice");
    // The filler lengthens the current header line and never ends the head.
    let mut closed = false;
    loop {
        if slow.stream.write_all(b"x").is_err() || slow.closed_within(Duration::from_millis(200)) {
            closed = true;
            break;
        }
        if start.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let after = start.elapsed();
    assert!(
        closed,
        "a message begun {after:?} ago with --tcp-message-timeout 1 is still open"
    );
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the message timeout"
    );
    assert_eq!(
        metric_reaches(
            &srv,
            "sipreg_tcp_closed_total{reason=\"message_timeout\"}",
            1
        ),
        Ok(1)
    );
    assert!(
        idle.served(),
        "an idle connection between messages was closed by the message timeout"
    );
    assert_eq!(metric(&srv, "sipreg_tcp_closed_total{reason=\"idle\"}"), 0);
}

// ---------------------------------------------------------------- buffers

#[test]
fn a_header_without_end_hits_the_read_buffer_cap() {
    let srv = Server::start(&args(&["--threads", "1"]));
    let mut flood = Tcp::connect_from(ABUSER, srv.addr());
    let mut head = b"REGISTER sip:example.com SIP/2.0\r\nX-Filler: ".to_vec();
    head.resize(200 * 1024, b'a');
    // The server closes mid-way; the rest of the write may fail.
    let _ = flood.stream.write_all(&head);
    assert!(
        flood.closed_within(Duration::from_secs(5)),
        "200 KiB of one unterminated header line did not close the connection"
    );
    assert_eq!(
        metric_reaches(&srv, "sipreg_tcp_closed_total{reason=\"read_buffer\"}", 1),
        Ok(1)
    );
    let _device = good_device_registers(&srv, "alice");
    // The device's connection is open, the flood's is not.
    assert_eq!(metric(&srv, "sipreg_tcp_connections"), 1);
}

#[test]
fn a_peer_that_never_reads_hits_the_write_buffer_cap() {
    let srv = Server::start(&args(&["--threads", "1"]));
    // A tiny receive window: the answers pile up on the server's side.
    let mut deaf = Tcp::connect_with(ABUSER, srv.addr(), Some(4096));
    deaf.stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend_from_slice(&simple_request("OPTIONS", &deaf));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let name = "sipreg_tcp_closed_total{reason=\"write_buffer\"}";
    let mut sent = 0usize;
    while Instant::now() < deadline {
        if deaf.stream.write_all(&batch).is_err() {
            break;
        }
        sent += batch.len();
        // Checked now and then; the answers are several times what was sent.
        if sent % (batch.len() * 20) == 0 && metric(&srv, name) > 0 {
            break;
        }
    }
    assert_eq!(
        metric_reaches(&srv, name, 1),
        Ok(1),
        "{sent} bytes of requests never read did not close the connection"
    );
    good_device_registers(&srv, "alice");
}

#[test]
fn pipelining_more_than_the_read_buffer_is_served_in_full() {
    // Reading stops at the read-buffer cap to frame; the rest, still in the
    // kernel, must be read on without a new readiness edge.
    let srv = Server::start(&args(&["--threads", "1"]));
    let mut peer = Tcp::connect_from(Ipv4Addr::LOCALHOST, srv.addr());
    let mut batch = Vec::new();
    let mut count = 0;
    while batch.len() < 400 * 1024 {
        batch.extend_from_slice(&simple_request("OPTIONS", &peer));
        count += 1;
    }
    let writer = {
        let mut stream = peer.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&batch))
    };
    for i in 0..count {
        let answer = peer.recv_timeout(Duration::from_secs(5));
        assert!(
            answer.is_some_and(|m| m.starts_with(b"SIP/2.0 200 ")),
            "answer {i} of {count} pipelined requests missing"
        );
    }
    writer.join().unwrap().unwrap();
    assert_eq!(
        metric(&srv, "sipreg_tcp_closed_total{reason=\"write_buffer\"}"),
        0
    );
}

// ---------------------------------------------------------------- idle and pings

#[test]
fn idle_connections_close_but_crlf_pings_keep_one_open() {
    let srv = Server::start(&args(&[
        "--threads",
        "1",
        "--tcp-idle-timeout",
        "3",
        "--tcp-message-timeout",
        "1",
    ]));
    let mut pinger = Tcp::connect_from(Ipv4Addr::LOCALHOST, srv.addr());
    let mut silent = Tcp::connect_from(Ipv4Addr::LOCALHOST, srv.addr());
    let start = Instant::now();

    // Half a ping waits longer than the message timeout: a keep-alive is not
    // a message begun.
    pinger.send(b"\r\n");
    assert!(
        !pinger.closed_within(Duration::from_millis(2200)),
        "a lone CRLF was taken for a message begun"
    );
    pinger.send(b"\r\n");
    // Then pings every half second for longer than the idle timeout; each
    // is answered with a pong and keeps the connection open.
    while start.elapsed() < Duration::from_secs(6) {
        let pong = pinger.read_raw(Duration::from_secs(2));
        assert!(
            pong.as_deref().is_some_and(|b| b.starts_with(b"\r\n")),
            "no pong after {:?}: {pong:?}",
            start.elapsed(),
        );
        assert!(!pinger.closed_within(Duration::from_millis(500)));
        pinger.send(b"\r\n\r\n");
    }
    assert!(
        silent.closed_within(Duration::from_millis(10)),
        "a silent connection outlived --tcp-idle-timeout 3 by {:?}",
        start.elapsed()
    );
    assert!(pinger.served(), "the pinging connection still serves");

    // Once the pings stop, it goes too.
    let stopped = Instant::now();
    assert!(
        pinger.closed_within(Duration::from_secs(6)),
        "still open {:?} after the pings stopped",
        stopped.elapsed()
    );
    assert!(stopped.elapsed() >= Duration::from_millis(2500));
    assert_eq!(
        metric_reaches(&srv, "sipreg_tcp_closed_total{reason=\"idle\"}", 2),
        Ok(2)
    );
    assert_eq!(
        metric(&srv, "sipreg_tcp_closed_total{reason=\"message_timeout\"}"),
        0
    );
}

// ---------------------------------------------------------------- UDP buffer

/// `net.core.rmem_max`, the kernel's cap on SO_RCVBUF.
fn rmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("read /proc/sys/net/core/rmem_max")
}

#[test]
fn udp_rcvbuf_is_applied_reported_and_capped_with_a_warning() {
    let max = rmem_max();
    // Linux grants the request doubled (its bookkeeping half) up to rmem_max.
    let asked = 96 * 1024;
    let srv = Server::start(&args(&["--udp-rcvbuf", &asked.to_string()]));
    let want = 2 * asked.min(max) as u64;
    assert_eq!(metric(&srv, "sipreg_udp_rcvbuf_bytes"), want);
    let mut ua = Ua::new(Udp::connect(srv.addr()), "alice", DOMAIN, "secret");
    let contact = format!("<sip:alice@{}>", ua.conn.local_addr());
    assert_eq!(ua.register(&[&contact], Some(600)).code(), 200);
    drop(srv);

    // Over rmem_max: granted rmem_max, and the operator is told once.
    if max < (i32::MAX as usize) / 2 {
        let over = (max + 1).to_string();
        let srv = Server::start(&args(&["--threads", "2", "--udp-rcvbuf", &over]));
        assert_eq!(metric(&srv, "sipreg_udp_rcvbuf_bytes"), 2 * max as u64);
        let warned = poll_until(Duration::from_secs(5), || {
            let log = srv.stderr();
            log.contains("UDP receive buffer capped").then_some(log)
        })
        .unwrap_or_else(|| panic!("no capped warning\n{}", srv.stderr_report()));
        assert_eq!(warned.matches("UDP receive buffer capped").count(), 1);
        assert!(warned.contains("net.core.rmem_max"), "{warned}");
    }

    // 0 leaves the kernel default.
    let srv = Server::start(&args(&["--udp-rcvbuf", "0"]));
    assert!(metric(&srv, "sipreg_udp_rcvbuf_bytes") > 0);
}

#[test]
fn bad_bound_values_are_refused_by_the_cli() {
    for (flag, value) in [
        ("--udp-rcvbuf", "lots"),
        ("--udp-rcvbuf", "-1"),
        ("--udp-rcvbuf", "99999999999"),
        ("--tcp-max-per-source", "0"),
        ("--tcp-max-connections", "x"),
        ("--tcp-message-timeout", "0"),
    ] {
        let (status, stderr) =
            Server::start_expect_failure(&args(&["--listen", "127.0.0.1:0", flag, value]));
        assert_eq!(status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
