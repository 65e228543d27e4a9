//! sipload against the real `sipreg` binary on 127.0.0.1: every registration
//! sipload reports as completed must be in sipreg's device table — listed by
//! the admin API (`/api/devices`, paged), with the Contact sipload sent
//! (`/api/lookup/{aor}`), and counted by `/metrics` — and nothing else may be.
//!
//! The binary is built (a no-op when up to date) with the same cargo and
//! profile that runs this test, so the test never exercises a stale server.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use sipload::{cli, engine};

/// The sipreg executable: `SIPREG_BIN`, or built by cargo for this profile
/// (once per test process).
fn sipreg_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_sipreg)
}

fn build_sipreg() -> PathBuf {
    if let Some(p) = std::env::var_os("SIPREG_BIN") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root)
        .args(["build", "-p", "sipreg", "--bin", "sipreg"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // target/<profile>/deps/against_sipreg-…: build the server in the same profile.
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|dir| dir.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    // `debug` is the directory of the `dev` profile; others are named after theirs.
    if profile != "debug" {
        cmd.args(["--profile", &profile]);
    }
    let out = cmd.output().expect("running cargo build -p sipreg");
    assert!(out.status.success(), "cargo build -p sipreg failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "sipreg")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no sipreg executable")
}

/// The server process; SIGKILLed when dropped.
struct Sipreg {
    child: Child,
    sip: SocketAddr,
    http: SocketAddr,
}

impl Drop for Sipreg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sipreg {
    fn start(args: &[&str]) -> Sipreg {
        let mut child = Command::new(sipreg_bin())
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipreg");
        // Line 1: "sipreg listening on ADDR (udp+tcp)", line 2: "sipreg admin on ADDR (http)".
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = |prefix: &str| -> SocketAddr {
            let line = rx
                .recv_timeout(Duration::from_secs(15))
                .expect("sipreg printed where it listens");
            let rest = line
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{line:?}"));
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        let sip = addr("sipreg listening on ");
        let http = addr("sipreg admin on ");
        Sipreg { child, sip, http }
    }

    /// GET `path` → (status, body), one connection per request.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, body.to_owned())
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Every device id in the table, through the paged listing.
    fn all_devices(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        let mut offset = 0;
        loop {
            let page = self.json(&format!("/api/devices?offset={offset}&limit=1000"));
            let devices = page["devices"].as_array().unwrap();
            for d in devices {
                assert_eq!(d["bindings"], 1, "{d}");
                ids.insert(d["id"].as_str().unwrap().to_owned());
            }
            offset += devices.len();
            if devices.is_empty() || offset >= page["total"].as_u64().unwrap() as usize {
                return ids;
            }
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }
}

/// Runs sipload (in this process) against `server` and returns its JSON report.
fn sipload(server: &Sipreg, args: &str) -> serde_json::Value {
    let args = format!("--target {} --quiet {args}", server.sip);
    let cfg = cli::parse(args.split_whitespace().map(String::from)).unwrap();
    engine::run(&cfg, &AtomicBool::new(false))
        .unwrap()
        .to_json()
}

/// Checks that exactly `n` devices `{prefix}{i:08}@127.0.0.1` are registered, each
/// with the Contact sipload sends.
fn assert_table_holds(server: &Sipreg, prefix: &str, n: usize) {
    let expected: BTreeSet<String> = (0..n)
        .map(|i| format!("{prefix}{i:08}@127.0.0.1"))
        .collect();
    let listed = server.all_devices();
    let missing: Vec<_> = expected.difference(&listed).take(5).collect();
    let extra: Vec<_> = listed.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} listed, {n} expected; missing e.g. {missing:?}, unexpected e.g. {extra:?}",
        listed.len()
    );
    assert_eq!(server.metric("sipreg_devices"), n as u64);
    assert_eq!(server.metric("sipreg_registrations"), n as u64);
    // Spot checks through the lookup API: the binding is the Contact sipload sent.
    for i in [0, n / 3, n / 2, n - 1] {
        let aor = format!("{prefix}{i:08}@127.0.0.1");
        let v = server.json(&format!("/api/lookup/{aor}"));
        let b = v["bindings"].as_array().unwrap();
        assert_eq!(b.len(), 1, "{v}");
        assert_eq!(
            b[0]["contact"],
            format!("sip:{prefix}{i:08}@127.0.0.1;transport=udp"),
            "{v}"
        );
        assert!(b[0]["expires_in"].as_u64().unwrap() > 3000, "{v}");
    }
}

fn assert_every_flow_completed(v: &serde_json::Value, n: u64) {
    assert_eq!(v["sent"], n, "{v:#}");
    assert_eq!(v["completed"], n, "{v:#}");
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_eq!(v["timeouts"], 0, "{v:#}");
}

#[test]
fn every_digest_registration_sipload_reports_is_in_the_table() {
    let server = Sipreg::start(&[
        "--password",
        "secret",
        "--realm",
        "sipreg",
        "--threads",
        "2",
    ]);
    let n = 3000;
    let v = sipload(
        &server,
        &format!(
            "--scenario register --devices {n} --count {n} --window 64 --duration 30 \
             --threads 2 --sockets 4 --password secret --realm sipreg"
        ),
    );
    assert_every_flow_completed(&v, n as u64);
    assert_eq!(v["status_counts"]["401"], n, "{v:#}");
    assert_eq!(v["status_counts"]["200"], n, "{v:#}");
    assert_table_holds(&server, "dev", n);

    // Refreshes (nonce reuse) update the same bindings: still exactly n devices.
    let v = sipload(
        &server,
        &format!("--scenario refresh --devices {n} --count {n} --window 64 --duration 30"),
    );
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_eq!(v["timeouts"], 0, "{v:#}");
    assert_table_holds(&server, "dev", n);
}

#[test]
fn every_unauthenticated_registration_sipload_reports_is_in_the_table() {
    let server = Sipreg::start(&["--no-auth", "--threads", "2"]);
    let n = 5000;
    let v = sipload(
        &server,
        &format!(
            "--scenario register-noauth --user-prefix na --devices {n} --count {n} \
             --rate 20000 --duration 30 --threads 2"
        ),
    );
    assert_every_flow_completed(&v, n as u64);
    assert_table_holds(&server, "na", n);
}
