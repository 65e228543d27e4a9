//! The generator against the bare responder, both in this process over
//! loopback: a bounded run must complete with no errors, timeouts or
//! unexpected statuses, with and without sendmmsg/recvmmsg.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sipload::cli::{self, Config};
use sipload::{engine, responder};

fn run_against_responder(extra: &str) -> serde_json::Value {
    let sock = responder::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sock.local_addr().unwrap();
    let stop_responder = AtomicBool::new(false);
    let stop_load = AtomicBool::new(false);
    std::thread::scope(|s| {
        let r = s.spawn(|| {
            responder::serve(
                &sock,
                true,
                &stop_responder,
                Some(Instant::now() + Duration::from_secs(30)),
            )
        });
        let args = format!(
            "--target {addr} --scenario options --devices 200 --duration 1 --drain 1 --threads 2 --sockets 4 --quiet {extra}"
        );
        let cfg: Config = cli::parse(args.split_whitespace().map(String::from)).unwrap();
        let report = engine::run(&cfg, &stop_load).unwrap();
        stop_responder.store(true, Ordering::Relaxed);
        let st = r.join().unwrap().unwrap();
        let v = report.to_json();
        assert_eq!(st.dropped, 0, "responder dropped datagrams: {st:?}");
        assert_eq!(
            st.requests,
            v["messages_sent"].as_u64().unwrap() + v["retransmissions"].as_u64().unwrap()
        );
        v
    })
}

fn assert_clean(v: &serde_json::Value) {
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_eq!(v["timeouts"], 0, "{v:#}");
    let completed = v["completed"].as_u64().unwrap();
    assert!(completed > 100, "{v:#}");
    assert_eq!(v["sent"].as_u64().unwrap(), completed, "{v:#}");
    assert_eq!(
        v["status_counts"]["200"].as_u64().unwrap(),
        completed,
        "{v:#}"
    );
    assert!(v["latency_us"]["p50"].as_u64().unwrap() > 0, "{v:#}");
}

#[test]
fn open_loop_options_against_the_responder_has_no_errors() {
    let v = run_against_responder("--rate 2000");
    assert_clean(&v);
    // Open loop at 2000/s for 1 s: close to 2000 flows.
    let completed = v["completed"].as_u64().unwrap();
    assert!((1800..=2001).contains(&completed), "{v:#}");
}

#[test]
fn closed_loop_options_without_mmsg_has_no_errors() {
    let v = run_against_responder("--window 16 --no-mmsg");
    assert_clean(&v);
    assert_eq!(v["mmsg"], false);
}

#[test]
fn count_bounds_the_run() {
    let v = run_against_responder("--window 8 --count 500");
    assert_clean(&v);
    assert_eq!(v["sent"], 500, "{v:#}");
}

#[test]
fn batch_mode_uses_kernel_timestamps_and_has_no_errors() {
    let v = run_against_responder("--rate 2000 --batch-us 20000");
    assert_clean(&v);
    // Reading only every 20 ms must not add ~20 ms to the latency: receive
    // times come from SO_TIMESTAMPNS, and loopback answers take far less.
    let p50 = v["latency_us"]["p50"].as_u64().unwrap();
    assert!(
        p50 < 8000,
        "p50 {p50} µs suggests read time, not arrival time: {v:#}"
    );
}

/// Answers `req` with a 200 the way the bare responder does.
fn answer(req: &[u8], from: std::net::SocketAddr, out: &mut Vec<u8>) -> bool {
    use sipreg::sip::{scan, ResponseWriter};
    match scan(req) {
        Ok(m) if m.is_request() => {
            ResponseWriter::start(out, &m, 200, b"OK", from, b"t").finish(b"");
            true
        }
        _ => false,
    }
}

#[test]
fn udp_retransmits_on_timer_e_until_answered() {
    use std::collections::HashSet;
    use std::net::UdpSocket;
    use std::sync::atomic::AtomicU64;
    // Drops the first copy of every request: each flow must be completed by
    // its first retransmission, 500 ms (T1) later.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let done = AtomicBool::new(false);
    let dropped = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seen = HashSet::new();
            let mut buf = [0u8; 4096];
            let mut out = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let via = sipreg::sip::scan(&buf[..n])
                    .unwrap()
                    .top_via()
                    .unwrap()
                    .to_vec();
                if seen.insert(via) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if answer(&buf[..n], from, &mut out) {
                    sock.send_to(&out, from).unwrap();
                }
            }
        });
        let args = format!("--target {addr} --scenario options --devices 50 --rate 100 --duration 0.5 --drain 3 --quiet");
        let cfg = cli::parse(args.split_whitespace().map(String::from)).unwrap();
        let v = engine::run(&cfg, &AtomicBool::new(false))
            .unwrap()
            .to_json();
        done.store(true, Ordering::Relaxed);
        assert_eq!(v["timeouts"], 0, "{v:#}");
        assert_eq!(v["errors"], 0, "{v:#}");
        let sent = v["sent"].as_u64().unwrap();
        assert!(sent >= 40, "{v:#}");
        assert_eq!(v["completed"].as_u64().unwrap(), sent, "{v:#}");
        assert_eq!(v["retransmissions"].as_u64().unwrap(), sent, "{v:#}");
        assert_eq!(dropped.load(Ordering::Relaxed), sent);
        // Every answer came after T1.
        assert!(v["latency_us"]["p50"].as_u64().unwrap() >= 500_000, "{v:#}");
    });
}

#[test]
fn tcp_transport_frames_requests_and_responses() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Two connections (--sockets 2), each served until the client closes.
            for _ in 0..2 {
                let (mut c, from) = listener.accept().unwrap();
                s.spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 16 * 1024];
                    let mut out = Vec::new();
                    loop {
                        let n = match c.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let mut pos = 0;
                        while let Ok(sipreg::sip::Frame::Message(k)) =
                            sipreg::sip::frame(&buf[pos..])
                        {
                            if answer(&buf[pos..pos + k], from, &mut out)
                                && c.write_all(&out).is_err()
                            {
                                return;
                            }
                            pos += k;
                        }
                        buf.drain(..pos);
                    }
                });
            }
        });
        let args = format!(
            "--target {addr} --scenario keepalive --transport tcp --devices 100 --window 32 --sockets 2 --duration 1 --quiet"
        );
        let cfg = cli::parse(args.split_whitespace().map(String::from)).unwrap();
        let v = engine::run(&cfg, &AtomicBool::new(false))
            .unwrap()
            .to_json();
        assert_clean(&v);
        assert_eq!(v["transport"], "tcp");
        assert_eq!(v["retransmissions"], 0);
    });
}
