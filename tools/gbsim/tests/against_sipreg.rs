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

#[test]
fn catalog_query_through_the_admin_api() {
    let Some(srv) = start_server(&["--keepalive-timeout", "30"]) else {
        return;
    };
    let Some(api) = srv.http else {
        eprintln!("SKIP: this sipreg prints no admin address yet");
        return;
    };
    let mut c = cfg(srv.sip, 2, 4001, Transport::Udp);
    c.channels = 20;
    c.catalog_split = 8;
    c.gb2312 = true;
    let sim = gbsim::spawn(c).unwrap();
    wait_until(&sim, "registrations", |s| s.registered_ok == 2);
    let id = sim.device_ids()[0].clone();
    match http(api, "POST", &format!("/api/devices/{id}/catalog")) {
        Some((202, _)) => {}
        other => {
            eprintln!("SKIP: catalog API not available yet: {other:?}");
            return;
        }
    }
    // The automatic query on first registration may have come too.
    wait_until(&sim, "a catalog answered", |s| {
        s.queries_of("Catalog") >= 1 && s.responses_answered(200) >= 3
    });
    let s = sim.stop();
    assert_eq!(s.responses.sent % 3, 0, "3 parts per catalog: {s:?}");
    assert_eq!(s.responses.timeouts, 0, "{s:?}");
}

#[test]
fn hundred_devices_sixteen_gb2312_channels() {
    let Some(srv) = start_server(&[]) else { return };
    let mut c = cfg(srv.sip, 100, 5001, Transport::Udp);
    c.gb2312 = true;
    c.keepalive_interval = Duration::from_secs(1);
    let sim = gbsim::spawn(c).unwrap();
    wait_until(&sim, "100 registrations", |s| s.registered_ok == 100);
    std::thread::sleep(Duration::from_millis(1500));
    let s = sim.stop();
    assert_eq!(s.registered_ok, 100, "{s:?}");
    check_keepalives(&s);
    // A sipreg that queries the catalog on first registration gets two
    // GB2312 parts (16 channels, 8 per MESSAGE) from each device, all answered.
    let catalogs = s.queries_of("Catalog");
    if catalogs == 0 {
        eprintln!("NOTE: this sipreg sent no Catalog query on registration");
    }
    assert_eq!(s.responses.sent, 2 * catalogs, "{s:?}");
    assert_eq!(s.responses_answered(200), s.responses.sent, "{s:?}");
    assert_eq!((s.errors, s.abandoned), (0, 0), "{s:?}");
}
