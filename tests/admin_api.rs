//! The admin HTTP API and /metrics over loopback.
//!
//! Two kinds of test:
//! - black-box against the real binary (`--http 127.0.0.1:0`; the port comes
//!   from its second stdout line, `sipreg admin on ADDR (http)`), with devices
//!   registered over UDP by the test client;
//! - the HTTP shell alone (`sipreg::admin::server::spawn_with` in-process,
//!   with short limits), for connection limits, timeouts and framing edge
//!   cases that would be slow or awkward through the binary. Its query sender
//!   is a stub; everything else is real.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{poll_until, simple_request, unique, Conn, Ua, Udp};
use common::server::DEFAULT_ARGS;
use serde_json::Value;

const DOMAIN: &str = "example.com";
const TIMEOUT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------ the binary

/// The binary with both ports read from its stdout; SIGTERM on drop.
struct Sipreg {
    child: Option<Child>,
    sip: SocketAddr,
    http: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Sipreg {
    fn start() -> Sipreg {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sipreg"))
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(DEFAULT_ARGS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipreg");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut next_line = |what: &str| {
            rx.recv_timeout(Duration::from_secs(15))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!(
                        "sipreg printed no {what} line; stderr:\n{}",
                        String::from_utf8_lossy(&stderr.lock().unwrap())
                    )
                })
        };
        let first = next_line("listening");
        let second = next_line("admin");
        let sip = first
            .strip_prefix("sipreg listening on ")
            .and_then(|s| s.strip_suffix(" (udp+tcp)"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("first line {first:?}"));
        let http = second
            .strip_prefix("sipreg admin on ")
            .and_then(|s| s.strip_suffix(" (http)"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("second line {second:?}"));
        Sipreg {
            child: Some(child),
            sip,
            http,
            stderr,
        }
    }

    fn ua(&self, user: &str) -> Ua<Udp> {
        Ua::new(Udp::connect(self.sip), user, DOMAIN, "secret")
    }
}

impl Drop for Sipreg {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        // SAFETY: kill(2) has no memory-safety preconditions; the child has
        // not been reaped, so the PID is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let exited = poll_until(TIMEOUT, || child.try_wait().ok().flatten()).is_some();
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() || !exited {
            eprintln!(
                "--- sipreg stderr (exited after SIGTERM: {exited}) ---\n{}",
                String::from_utf8_lossy(&self.stderr.lock().unwrap())
            );
        }
        assert!(exited || thread::panicking(), "sipreg ignored SIGTERM");
    }
}

// ------------------------------------------------------------ HTTP client

/// One answer, read with httparse.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts an error answer: this status and a JSON `error` string.
    fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    }
}

/// A client connection; requests are written raw so framing can be tested.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect admin");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write request");
    }

    /// Reads one answer (`head_only` for HEAD: no body whatever the length).
    fn read_reply(&mut self, head_only: bool) -> Reply {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) =
                resp.parse(&self.buf).expect("server sent valid HTTP")
            {
                let status = resp.code.expect("status");
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse::<usize>().expect("numeric length"));
                let body_len = if head_only || status == 204 || status == 100 {
                    0
                } else {
                    len.expect("Content-Length on every answer with a body")
                };
                if self.buf.len() >= head + body_len {
                    let body = self.buf[head..head + body_len].to_vec();
                    self.buf.drain(..head + body_len);
                    return Reply {
                        status,
                        headers,
                        body,
                    };
                }
            }
            assert!(Instant::now() < deadline, "no whole answer: {:?}", self.buf);
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "server closed mid-answer: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read answer: {e}"),
            }
        }
    }

    fn request(&mut self, method: &str, target: &str, body: &[u8]) -> Reply {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        self.send(&raw);
        self.read_reply(method == "HEAD")
    }

    /// True when the server closes the connection within `within` (EOF or
    /// reset); bytes arriving meanwhile are kept.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => {}
            }
        }
        false
    }
}

/// One request on a fresh connection.
fn call(addr: SocketAddr, method: &str, target: &str) -> Reply {
    Http::connect(addr).request(method, target, b"")
}

// ------------------------------------------------------------ black-box

fn register(ua: &mut Ua<Udp>, contact: &str) {
    let resp = ua.register(&[contact], None);
    assert_eq!(resp.code(), 200, "{resp:?}");
}

#[test]
fn lists_shows_and_deletes_a_registered_phone() {
    let srv = Sipreg::start();
    let mut alice = srv.ua("alice");
    register(&mut alice, "<sip:alice@192.0.2.1:5071>;q=0.5");
    let mut bob = srv.ua("bob");
    register(&mut bob, "<sip:bob@192.0.2.2:5072>");

    let r = call(srv.http, "GET", "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    let v = call(srv.http, "GET", "/api/devices").json();
    assert_eq!(
        (v["total"].clone(), v["offset"].clone(), v["limit"].clone()),
        (2.into(), 0.into(), 100.into())
    );
    let mut ids: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["alice@example.com", "bob@example.com"]);
    let summary = &v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "alice@example.com")
        .unwrap();
    assert_eq!(summary["online"], true);
    assert_eq!(summary["bindings"], 1);
    assert_eq!(summary["last_keepalive"], Value::Null);

    // Two pages of one cover both devices.
    let first = call(srv.http, "GET", "/api/devices?limit=1").json();
    let second = call(srv.http, "GET", "/api/devices?offset=1&limit=1").json();
    assert_eq!(first["total"], 2);
    assert_eq!(first["devices"].as_array().unwrap().len(), 1);
    assert_ne!(first["devices"][0]["id"], second["devices"][0]["id"]);

    let v = call(srv.http, "GET", "/api/devices/alice%40example.com").json();
    assert_eq!(v["id"], "alice@example.com");
    let b = &v["bindings"][0];
    assert_eq!(b["contact"], "sip:alice@192.0.2.1:5071");
    assert_eq!(b["source"], alice.conn.local_addr().to_string());
    assert_eq!(b["transport"], "udp");
    assert_eq!(b["q"], 0.5);
    assert_eq!(b["user_agent"], "sipreg-tests");
    let expires_in = b["expires_in"].as_u64().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");
    assert_eq!(v["gb"]["known"], false);

    let r = call(srv.http, "DELETE", "/api/devices/alice@example.com");
    assert_eq!((r.status, r.body.len()), (204, 0));
    call(srv.http, "GET", "/api/devices/alice@example.com").assert_error(404);
    call(srv.http, "DELETE", "/api/devices/alice@example.com").assert_error(404);
    // The registrar sees the same table: alice has no binding left.
    assert_eq!(srv.ua("alice").query().contacts(), vec![]);
    assert_eq!(call(srv.http, "GET", "/api/devices").json()["total"], 1);
}

#[test]
fn errors_are_json_with_the_right_status() {
    let srv = Sipreg::start();
    for target in [
        "/nope",
        "/api/devices/a@b/c",
        "/api/devices/nobody@example.com",
    ] {
        call(srv.http, "GET", target).assert_error(404);
    }
    for target in [
        "/api/devices?limit=1001",
        "/api/devices?offset=-1",
        "/api/devices?bogus=1",
        "/api/devices/%zz",
        "/api/devices/a%00b",
    ] {
        call(srv.http, "GET", target).assert_error(400);
    }
    for (method, target, allow) in [
        ("PUT", "/healthz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/api/devices", "GET, HEAD"),
        (
            "PATCH",
            "/api/devices/alice@example.com",
            "GET, HEAD, DELETE",
        ),
        ("GET", "/api/devices/34020000001320000001/catalog", "POST"),
        ("GET", "/api/devices/34020000001320000001/info", "POST"),
    ] {
        let r = call(srv.http, method, target);
        r.assert_error(405);
        assert_eq!(r.header("allow"), Some(allow), "{method} {target}");
    }
    call(
        srv.http,
        "POST",
        "/api/devices/34020000009999999999/catalog",
    )
    .assert_error(404);

    // Oversized head and body: 413, then the connection is closed.
    let mut c = Http::connect(srv.http);
    c.send(
        format!(
            "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(9000)
        )
        .as_bytes(),
    );
    let r = c.read_reply(false);
    r.assert_error(413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(TIMEOUT));
    let mut c = Http::connect(srv.http);
    let r = c.request("POST", "/api/devices/x/catalog", &vec![b'x'; 64 * 1024 + 1]);
    r.assert_error(413);
    assert!(c.closed_within(TIMEOUT));
    // Chunked bodies are not supported.
    let mut c = Http::connect(srv.http);
    c.send(b"POST /api/devices/x/info HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    c.read_reply(false).assert_error(501);
    // Garbage.
    let mut c = Http::connect(srv.http);
    c.send(b"\x16\x03\x01 hello\r\n\r\n");
    c.read_reply(false).assert_error(400);
}

#[test]
fn keep_alive_pipelining_head_and_connection_close() {
    let srv = Sipreg::start();
    let mut c = Http::connect(srv.http);
    // Two pipelined requests in one write, answered in order.
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /api/devices?limit=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = c.read_reply(false);
    assert_eq!((first.status, first.text().as_str()), (200, "ok"));
    assert_eq!(c.read_reply(false).json()["limit"], 1);
    // HEAD: the headers GET would have, no body.
    c.send(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.read_reply(true);
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some_and(|l| l != "0"));
    assert_eq!(
        head.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // Still the same connection; now ask it to close.
    c.send(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    let last = c.read_reply(false);
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.closed_within(TIMEOUT));
    // HTTP/1.0 closes by default.
    let mut c = Http::connect(srv.http);
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_reply(false).status, 200);
    assert!(c.closed_within(TIMEOUT));
}

/// The next SIP request the device receives, skipping responses; answered
/// 200 so the server's client transaction completes.
fn next_request(dev: &mut Udp) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let raw = dev
            .recv_timeout(left)
            .expect("a request from the server within 5 s");
        let msg = sipreg::sip::scan(&raw).expect("server sent valid SIP");
        if !msg.is_request() {
            continue;
        }
        let mut ok = b"SIP/2.0 200 OK\r\n".to_vec();
        for h in msg.headers() {
            use sipreg::sip::HeaderId::*;
            if matches!(h.id, Via | From | To | CallId | CSeq) {
                ok.extend_from_slice(h.name);
                ok.extend_from_slice(b": ");
                ok.extend_from_slice(h.value);
                if h.id == To && !h.value.windows(4).any(|w| w == b"tag=") {
                    ok.extend_from_slice(format!(";tag={}", unique("t")).as_bytes());
                }
                ok.extend_from_slice(b"\r\n");
            }
        }
        ok.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        dev.send(&ok);
        return String::from_utf8_lossy(&raw).into_owned();
    }
}

#[test]
fn catalog_and_info_queries_reach_the_device() {
    let srv = Sipreg::start();
    let id = "34020000001320000001";
    let mut cam = Ua::new(Udp::connect(srv.sip), id, "3402000000", "secret");
    let local = cam.conn.local_addr();
    register(&mut cam, &format!("<sip:{id}@{local}>"));

    for (path, cmd) in [("catalog", "Catalog"), ("info", "DeviceInfo")] {
        let r = call(srv.http, "POST", &format!("/api/devices/{id}/{path}"));
        assert_eq!(r.status, 202, "{}", r.text());
        let sn = r.json()["sn"].as_u64().expect("numeric sn");
        // A first registration may also trigger a Catalog query of its own:
        // wait for the one carrying our SN.
        let want_sn = format!("<SN>{sn}</SN>");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "no {cmd} query with SN {sn}");
            let req = next_request(&mut cam.conn);
            if req.contains(&want_sn) {
                assert!(req.starts_with("MESSAGE "), "{req}");
                assert!(req.contains(&format!("<CmdType>{cmd}</CmdType>")), "{req}");
                assert!(req.contains(&format!("<DeviceID>{id}</DeviceID>")), "{req}");
                break;
            }
        }
    }
    call(srv.http, "POST", "/api/devices/34020000009999999999/info").assert_error(404);
    let v = call(srv.http, "GET", &format!("/api/devices/{id}")).json();
    assert_eq!(v["bindings"][0]["contact"], format!("sip:{id}@{local}"));
}

/// Every line of the exposition, checked with a Prometheus text parser.
fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let r = call(addr, "GET", "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    for line in text.lines() {
        let info = prometheus_parse::LineInfo::parse(line);
        assert!(
            !matches!(
                info,
                prometheus_parse::LineInfo::Ignored | prometheus_parse::LineInfo::Empty
            ),
            "line not understood: {line:?}"
        );
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("exposition parses");
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(scrape.samples.len(), samples, "every sample parsed");
    for s in &scrape.samples {
        assert!(s.metric.starts_with("sipreg_"), "{}", s.metric);
        assert!(
            scrape.docs.contains_key(&s.metric),
            "{} has no HELP",
            s.metric
        );
        let counter = matches!(s.value, prometheus_parse::Value::Counter(_));
        assert_eq!(counter, s.metric.ends_with("_total"), "{} type", s.metric);
    }
    scrape
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("{name} {label:?} missing"));
    match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

#[test]
fn metrics_parse_with_a_prometheus_parser() {
    let srv = Sipreg::start();
    let mut alice = srv.ua("alice");
    register(&mut alice, "<sip:alice@192.0.2.1:5071>");
    register(&mut alice, "<sip:alice@192.0.2.9:5079>");
    // One malformed request (CSeq method differs from the request method).
    let bad = String::from_utf8(simple_request("OPTIONS", &alice.conn))
        .unwrap()
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    assert_eq!(alice.send_raw(bad.as_bytes()).code(), 400);
    let s = scrape(srv.http);
    assert!(metric(&s, "sipreg_registrations", None) >= 2.0);
    assert!(metric(&s, "sipreg_devices", None) >= 1.0);
    assert!(metric(&s, "sipreg_devices_online", None) >= 1.0);
    let registers = metric(&s, "sipreg_requests_total", Some(("method", "register")));
    assert!(registers >= 3.0, "401 + 200 + 200: {registers}");
    assert!(metric(&s, "sipreg_responses_total", Some(("class", "2xx"))) >= 2.0);
    assert!(metric(&s, "sipreg_responses_total", Some(("class", "4xx"))) >= 1.0);
    assert!(metric(&s, "sipreg_auth_challenges_total", None) >= 1.0);
    assert!(metric(&s, "sipreg_responses_by_code_total", Some(("code", "401"))) >= 1.0);
    assert!(metric(&s, "sipreg_responses_by_code_total", Some(("code", "200"))) >= 2.0);
    assert!(
        metric(
            &s,
            "sipreg_parse_errors_by_reason_total",
            Some(("reason", "cseq_method"))
        ) >= 0.0
    );
    assert!(metric(&s, "sipreg_bindings_added_total", None) >= 2.0);
    for name in [
        "sipreg_parse_errors_total",
        "sipreg_auth_failures_total",
        "sipreg_expirations_total",
        "sipreg_keepalives_total",
        "sipreg_keepalives_rejected_total",
        "sipreg_catalog_queries_total",
        "sipreg_catalog_timeouts_total",
        "sipreg_retransmissions_total",
    ] {
        assert!(metric(&s, name, None) >= 0.0);
    }
    for reason in [
        "unparseable",
        "stray_response",
        "ack",
        "keepalive",
        "bad_stream",
    ] {
        metric(&s, "sipreg_drops_total", Some(("reason", reason)));
    }
    // Per-worker counters add up to the totals (DEFAULT_ARGS: 2 workers).
    let all_requests: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == "sipreg_requests_total")
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    let per_worker = metric(&s, "sipreg_worker_requests_total", Some(("worker", "0")))
        + metric(&s, "sipreg_worker_requests_total", Some(("worker", "1")));
    assert_eq!(per_worker, all_requests);
    assert!(metric(&s, "sipreg_worker_responses_total", Some(("worker", "0"))) >= 0.0);

    // Counters move: one more REGISTER shows up in the next scrape.
    register(&mut alice, "<sip:alice@192.0.2.1:5071>");
    let later = scrape(srv.http);
    assert!(
        metric(
            &later,
            "sipreg_requests_total",
            Some(("method", "register"))
        ) > registers
    );
}

// ------------------------------------------------------------ the shell alone

mod shell {
    use super::*;
    use sipreg::admin::server::{spawn_with, Limits};
    use sipreg::admin::AdminState;
    use sipreg::gb28181::{QueryError, QueryKind, QuerySender};
    use sipreg::registry::Registry;
    use sipreg::stats::{GbStats, TimerStats, WorkerStats};

    struct NoQueries;

    impl QuerySender for NoQueries {
        fn query(&self, _: &[u8], _: QueryKind) -> Result<u32, QueryError> {
            Err(QueryError::Busy)
        }
    }

    /// An admin thread on its own; stopped (and joined) on drop.
    struct Admin {
        addr: SocketAddr,
        shutdown: Arc<AtomicBool>,
        waker: Arc<mio::Waker>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Admin {
        fn start(limits: Limits) -> Admin {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().unwrap();
            let state = Arc::new(AdminState {
                registry: Arc::new(Registry::new()),
                worker_stats: vec![Arc::new(WorkerStats::default())],
                timer_stats: Arc::new(TimerStats::default()),
                gb_stats: Arc::new(GbStats::default()),
                queries: Arc::new(NoQueries),
                persist: Default::default(),
                nonce_counts: Arc::new(sipreg::auth::NonceCounts::new(300)),
            });
            let shutdown = Arc::new(AtomicBool::new(false));
            let (thread, waker) =
                spawn_with(listener, state, shutdown.clone(), limits).expect("spawn admin");
            Admin {
                addr,
                shutdown,
                waker,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Admin {
        fn drop(&mut self) {
            self.shutdown
                .store(true, std::sync::atomic::Ordering::Release);
            let _ = self.waker.wake();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn short() -> Limits {
        Limits {
            max_connections: 4,
            idle_timeout_ms: 300,
            request_timeout_ms: 300,
        }
    }

    #[test]
    fn connections_over_the_limit_get_503_and_a_freed_slot_is_reused() {
        let admin = Admin::start(Limits {
            idle_timeout_ms: 60_000,
            request_timeout_ms: 60_000,
            ..short()
        });
        let mut open: Vec<Http> = (0..4).map(|_| Http::connect(admin.addr)).collect();
        for c in &mut open {
            assert_eq!(c.request("GET", "/healthz", b"").status, 200);
        }
        let mut extra = Http::connect(admin.addr);
        let r = extra.read_reply(false);
        r.assert_error(503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(extra.closed_within(TIMEOUT));
        // The open ones still work; closing one frees a slot.
        assert_eq!(open[3].request("GET", "/healthz", b"").status, 200);
        drop(open.pop());
        let ok = poll_until(TIMEOUT, || {
            let mut c = Http::connect(admin.addr);
            c.send(b"GET /healthz HTTP/1.1\r\n\r\n");
            (c.read_reply(false).status == 200).then_some(())
        });
        assert!(ok.is_some(), "a freed slot is reused");
    }

    #[test]
    fn idle_and_slow_connections_are_closed() {
        let admin = Admin::start(short());
        let mut idle = Http::connect(admin.addr);
        assert_eq!(idle.request("GET", "/healthz", b"").status, 200);
        let started = Instant::now();
        assert!(idle.closed_within(TIMEOUT), "idle connection closed");
        assert!(started.elapsed() >= Duration::from_millis(250));

        // A request trickling in a byte at a time is abandoned.
        let mut slow = Http::connect(admin.addr);
        let started = Instant::now();
        let mut closed = false;
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: " {
            if slow.stream.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            thread::sleep(Duration::from_millis(50));
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        assert!(closed || slow.closed_within(TIMEOUT), "slow request closed");
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn oversized_body_sent_anyway_still_gets_its_413() {
        let admin = Admin::start(short());
        let mut c = Http::connect(admin.addr);
        // The whole body follows at once: the answer must survive the unread
        // input (the server drains it before closing, instead of a RST).
        let mut raw =
            b"POST /api/devices/x/catalog HTTP/1.1\r\nContent-Length: 200000\r\n\r\n".to_vec();
        raw.resize(raw.len() + 200_000, b'z');
        let writer = {
            let mut s = c.stream.try_clone().unwrap();
            thread::spawn(move || {
                let _ = s.write_all(&raw);
            })
        };
        c.read_reply(false).assert_error(413);
        assert!(c.closed_within(TIMEOUT));
        writer.join().unwrap();
    }

    #[test]
    fn expect_continue_and_a_body_in_pieces() {
        let admin = Admin::start(short());
        let mut c = Http::connect(admin.addr);
        c.send(b"POST /api/devices/cam/catalog HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(c.read_reply(false).status, 100);
        c.send(b"{");
        thread::sleep(Duration::from_millis(50));
        c.send(b"}");
        // The stub sender is always busy: 503 with Retry-After.
        let r = c.read_reply(false);
        r.assert_error(503);
        assert_eq!(r.header("retry-after"), Some("1"));
        // Still kept alive.
        assert_eq!(c.request("GET", "/healthz", b"").status, 200);
    }

    #[test]
    fn shutdown_stops_the_thread_promptly() {
        let admin = Admin::start(Limits::default());
        let mut c = Http::connect(admin.addr);
        assert_eq!(c.request("GET", "/healthz", b"").status, 200);
        let started = Instant::now();
        drop(admin);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "joined after wake"
        );
        assert!(c.closed_within(TIMEOUT), "connections closed on shutdown");
    }
}

#[test]
fn lookup_lists_live_bindings_by_q_as_register_normalised_them() {
    let srv = Sipreg::start();
    let mut alice = srv.ua("alice");
    register(&mut alice, "<sip:alice@192.0.2.1:5071>;q=0.5");
    register(&mut alice, "<sip:alice@192.0.2.9:5079>;q=0.9");
    // Any spelling of the AOR finds it: scheme or not, host case, port.
    for target in [
        "/api/lookup/alice@example.com",
        "/api/lookup/sip:alice@EXAMPLE.com",
        "/api/lookup/sip%3Aalice%40example.com%3A5060",
    ] {
        let v = call(srv.http, "GET", target).json();
        assert_eq!(v["aor"], "alice@example.com", "{target}: {v}");
        let b = v["bindings"].as_array().unwrap();
        assert_eq!(b.len(), 2, "{v}");
        assert_eq!(
            b[0]["contact"], "sip:alice@192.0.2.9:5079",
            "highest q first: {v}"
        );
        assert_eq!(b[0]["q"], 0.9);
        assert_eq!(b[0]["transport"], "udp");
        assert!(
            b[0]["source"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{v}"
        );
        assert!(b[0]["expires_in"].as_u64().unwrap() > 0);
        assert_eq!(b[1]["q"], 0.5);
    }
    call(srv.http, "GET", "/api/lookup/nobody@example.com").assert_error(404);
    call(srv.http, "POST", "/api/lookup/alice@example.com").assert_error(405);
}
