//! gbsim against the real sipreg binary over loopback: registration (UDP and
//! TCP), refresh, keep-alives, un-registration, the gbsim binary's JSON
//! summary, and — when the server's admin API is there — a catalog query
//! sent through `POST /api/devices/{id}/catalog`.
//!
//! The sipreg binary is found next to this test's own target directory
//! (`target/<profile>/sipreg`) or at `$SIPREG_BIN`; without it the tests say so
//! and pass (build it with `cargo build -p sipreg`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gbsim::{SimConfig, Summary, Transport};

struct Server {
    child: Child,
    sip: SocketAddr,
    http: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sipreg_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SIPREG_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/deps/against_sipreg-… → target/<profile>/sipreg
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("sipreg");
    p.exists().then_some(p)
}

fn addr_in(line: &str) -> Option<SocketAddr> {
    line.split(|c: char| c.is_whitespace() || c == '/' || c == ',' || c == '(' || c == ')')
        .find_map(|w| w.parse::<SocketAddr>().ok())
}

fn start_server(extra: &[&str]) -> Option<Server> {
    let Some(bin) = sipreg_bin() else {
        // `cargo test --workspace` (the CI command) always builds it.
        assert!(std::env::var_os("CI").is_none(), "no sipreg binary in CI");
        eprintln!("SKIP: no sipreg binary (cargo build -p sipreg, or set SIPREG_BIN)");
        return None;
    };
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--password",
            "secret",
            "--threads",
            "2",
            "--min-expires",
            "10",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipreg");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("sipreg's first line");
    assert!(first.starts_with("sipreg listening on "), "{first}");
    let sip = addr_in(&first).expect("address in the first line");
    // A later line naming the admin address, if this sipreg prints one.
    let mut http = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        let l = line.to_ascii_lowercase();
        if l.contains("http") || l.contains("admin") {
            http = addr_in(&line);
        }
    }
    Some(Server { child, sip, http })
}

fn cfg(server: SocketAddr, devices: u32, first_index: u64, transport: Transport) -> SimConfig {
    let mut c = SimConfig::new(server);
    c.devices = devices;
    c.first_index = first_index;
    c.transport = transport;
    c.keepalive_interval = Duration::from_millis(300);
    c.expires = 10;
    c.duration = Some(Duration::from_secs(30));
    c.unregister = true;
    c
}

fn wait_until(sim: &gbsim::SimHandle, what: &str, f: impl Fn(&Summary) -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if f(&sim.summary()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}: {:?}", sim.summary());
}

/// Keep-alives are answered 200 once the GB28181 code is in, 405 before.
fn check_keepalives(s: &Summary) {
    assert!(s.keepalives.sent >= s.devices, "{s:?}");
    let ok = s.keepalives_answered(200);
    let not_allowed = s.keepalives_answered(405);
    assert_eq!(ok + not_allowed, s.keepalives.sent, "{s:?}");
    assert!(ok == 0 || not_allowed == 0, "mixed answers: {s:?}");
}

fn register_keepalive_unregister(transport: Transport, first_index: u64) {
    let Some(srv) = start_server(&[]) else { return };
    let sim = gbsim::spawn(cfg(srv.sip, 10, first_index, transport)).unwrap();
    wait_until(&sim, "10 registrations", |s| s.registered_ok == 10);
    std::thread::sleep(Duration::from_millis(800));
    let s = sim.stop();
    assert_eq!(s.registered_ok, 10, "{s:?}");
    assert_eq!(s.register.challenged, 10, "one 401 each: {s:?}");
    assert_eq!(s.register.unregistered, 10, "{s:?}");
    assert_eq!(s.registered_now, 0);
    check_keepalives(&s);
    assert_eq!((s.errors, s.abandoned), (0, 0), "{s:?}");
}

#[test]
fn udp_devices_register_keep_alive_and_unregister() {
    register_keepalive_unregister(Transport::Udp, 1);
}

#[test]
fn tcp_devices_register_keep_alive_and_unregister() {
    register_keepalive_unregister(Transport::Tcp, 1001);
}

#[test]
fn registration_is_refreshed_before_expiry() {
    let Some(srv) = start_server(&[]) else { return };
    let mut c = cfg(srv.sip, 3, 2001, Transport::Udp);
    c.keepalive_interval = Duration::from_secs(5);
    // Granted 10 s, refreshed at 8 s with the remembered nonce (nc=2).
    c.duration = Some(Duration::from_millis(9500));
    let s = gbsim::run(c).unwrap();
    assert_eq!(s.registered_ok, 3);
    // First registration, refresh, un-registration: three 200s each.
    assert_eq!(s.register.answers.get("200"), Some(&9), "{s:?}");
    assert_eq!(
        s.register.challenged, 3,
        "the refresh reused the nonce: {s:?}"
    );
    assert_eq!(s.register.unregistered, 3, "{s:?}");
    assert_eq!(s.register.failed + s.register.timeouts, 0, "{s:?}");
}

#[test]
fn binary_prints_json_summary() {
    let Some(srv) = start_server(&[]) else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_gbsim"))
        .args([
            "--server",
            &srv.sip.to_string(),
            "--devices",
            "5",
            "--first-index",
            "3001",
            "--keepalive-interval",
            "0.5",
            "--duration",
            "1.5",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["devices"], 5);
    assert_eq!(v["registered_ok"], 5);
    assert!(v["keepalives"]["sent"].as_u64().unwrap() >= 5);
    assert_eq!(v["errors"], 0);

    let refused = Command::new(env!("CARGO_BIN_EXE_gbsim"))
        .args(["--server", "192.0.2.1:5060", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("non-loopback"));
}

fn http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, resp))
}

/// The JSON body of a 200 answer to GET `path`.
fn get_json(api: SocketAddr, path: &str) -> serde_json::Value {
    let (code, resp) = http(api, "GET", path).expect("admin API answers");
    assert_eq!(code, 200, "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).expect("body");
    serde_json::from_str(body).expect("JSON")
}

/// Polls the device until `f` holds (deadline 10 s).
fn wait_device(
    api: SocketAddr,
    id: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = get_json(api, &format!("/api/devices/{id}"));
        if f(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: {what} never happened: {d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn channel_names(d: &serde_json::Value) -> Vec<String> {
    d["gb"]["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn catalog_query_through_the_admin_api() {
    let Some(srv) = start_server(&["--keepalive-timeout", "30"]) else {
        return;
    };
    let api = srv.http.expect("sipreg prints its admin address");
    let mut c = cfg(srv.sip, 2, 4001, Transport::Udp);
    c.channels = 20;
    c.catalog_split = 8;
    c.gb2312 = true;
    let sim = gbsim::spawn(c).unwrap();
    wait_until(&sim, "registrations", |s| s.registered_ok == 2);
    let id = sim.device_ids()[0].clone();
    let (code, resp) = http(api, "POST", &format!("/api/devices/{id}/catalog")).expect("POST");
    assert_eq!(code, 202, "{resp}");
    // The automatic query on first registration came too: both complete.
    wait_until(&sim, "two catalogs answered", |s| {
        s.queries_of("Catalog") >= 3 && s.responses_answered(200) >= 9
    });
    let d = wait_device(api, &id, "catalog complete", |d| {
        d["gb"]["catalog"]["state"] == "complete"
    });
    assert_eq!(channel_names(&d).len(), 20, "{d}");
    let (code, _) = http(api, "POST", &format!("/api/devices/{id}/info")).expect("POST");
    assert_eq!(code, 202);
    let d = wait_device(api, &id, "device info", |d| !d["gb"]["info"].is_null());
    assert_eq!(d["gb"]["info"]["channels"], 20, "{d}");
    let s = sim.stop();
    // Three parts per catalog (20 items, 8 per MESSAGE) and one DeviceInfo.
    assert_eq!(s.responses.sent, 3 * s.queries_of("Catalog") + 1, "{s:?}");
    assert_eq!(s.responses.timeouts, 0, "{s:?}");
}

#[test]
fn hundred_devices_sixteen_gb2312_channels() {
    let Some(srv) = start_server(&[]) else { return };
    let api = srv.http.expect("sipreg prints its admin address");
    let mut c = cfg(srv.sip, 100, 5001, Transport::Udp);
    c.gb2312 = true;
    c.keepalive_interval = Duration::from_secs(1);
    let sim = gbsim::spawn(c).unwrap();
    wait_until(&sim, "100 registrations", |s| s.registered_ok == 100);
    // Every device is online with its 16 channels, named in Chinese from
    // GB2312 bodies, as the platform sees them through the API.
    for (i, id) in sim.device_ids().iter().enumerate() {
        let d = wait_device(api, id, "online with a complete catalog", |d| {
            d["gb"]["online"] == true && d["gb"]["catalog"]["state"] == "complete"
        });
        let names = channel_names(&d);
        assert_eq!(names.len(), 16, "{id}: {d}");
        if i == 0 {
            assert!(names.iter().all(|n| n.starts_with("通道")), "{names:?}");
        }
    }
    let list = get_json(api, "/api/devices?limit=1000");
    assert_eq!(list["total"], 100, "{list}");
    let s = sim.stop();
    assert_eq!(s.registered_ok, 100, "{s:?}");
    check_keepalives(&s);
    // One catalog query per device on first registration, two GB2312 parts
    // (16 channels, 8 per MESSAGE) each, all answered.
    assert_eq!(s.queries_of("Catalog"), 100, "{s:?}");
    assert_eq!(s.responses.sent, 200, "{s:?}");
    assert_eq!(s.responses_answered(200), s.responses.sent, "{s:?}");
    assert_eq!((s.errors, s.abandoned), (0, 0), "{s:?}");
}

#[test]
fn silent_device_goes_offline_and_unanswered_query_times_out() {
    let Some(srv) = start_server(&["--keepalive-timeout", "2", "--query-timeout", "2"]) else {
        return;
    };
    let api = srv.http.expect("sipreg prints its admin address");
    let mut c = cfg(srv.sip, 2, 6001, Transport::Udp);
    c.keepalive_interval = Duration::from_secs(1);
    c.silent_after = Some(Duration::from_secs(1));
    c.silent_devices = Some(1);
    c.no_answer = true;
    let sim = gbsim::spawn(c).unwrap();
    wait_until(&sim, "registrations", |s| s.registered_ok == 2);
    let ids = sim.device_ids();
    wait_device(api, &ids[0], "online", |d| d["gb"]["online"] == true);
    // Device 0 stops its keep-alives: offline within the 2 s timeout (+ slack).
    wait_device(api, &ids[0], "offline", |d| d["gb"]["online"] == false);
    // Device 1 keeps them up and stays online.
    let d = get_json(api, &format!("/api/devices/{}", ids[1]));
    assert_eq!(d["gb"]["online"], true, "{d}");
    // Nobody answers catalog queries: the one sent on registration times out
    // (no parts: "timed_out"), without leaking a transaction.
    wait_device(api, &ids[1], "catalog timed out", |d| {
        d["gb"]["catalog"]["state"] == "timed_out"
    });
    let (_, metrics) = http(api, "GET", "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sipreg_catalog_queries_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    drop(sim);
}
