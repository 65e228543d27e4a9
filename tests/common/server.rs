//! Runs the real `sipreg` binary on loopback for black-box tests.
//!
//! Every server listens on `127.0.0.1:0`, so tests run in parallel without
//! port clashes; the SIP port is read from the binary's first stdout line, the
//! admin (HTTP) port from its second. The
//! server's stderr is collected and printed when a test fails, and the process
//! gets SIGTERM (then SIGKILL after a deadline) when the [`Server`] is dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::peers::{signal, tail, wait_until};

/// How long the binary may take to print its two listening lines.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub const BIN: &str = env!("CARGO_BIN_EXE_sipreg");

/// The realm and the shared password (`--password`, GB28181 style) of
/// [`DEFAULT_ARGS`].
pub const REALM: &str = "sipreg";
pub const PASSWORD: &str = "secret";

/// Realm, shared password and two worker threads; the binary's own expiry
/// limits (the interop tests use these).
pub const BASIC_ARGS: &[&str] = &["--realm", REALM, "--password", PASSWORD, "--threads", "2"];

/// A GB28181 platform's realm (the SIP domain id) and the cameras' shared
/// password, as GB28181 deployments configure them.
pub const GB_REALM: &str = "3402000000";
pub const GB_PASSWORD: &str = "12345";

/// A GB28181 platform: [`GB_REALM`], [`GB_PASSWORD`], two workers and the
/// platform's own id.
pub const GB_ARGS: &[&str] = &[
    "--realm",
    GB_REALM,
    "--password",
    GB_PASSWORD,
    "--threads",
    "2",
    "--platform-id",
    "34020000002000000001",
];

/// The arguments most tests use: shared password `secret`, realm `sipreg`.
pub const DEFAULT_ARGS: &[&str] = &[
    "--realm",
    REALM,
    "--password",
    PASSWORD,
    "--threads",
    "2",
    "--min-expires",
    "2",
    "--max-expires",
    "3600",
    "--default-expires",
    "3600",
];

pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    http: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts `sipreg --listen 127.0.0.1:0 --http 127.0.0.1:0 <args>` and waits
    /// for `sipreg listening on 127.0.0.1:PORT (udp+tcp)`, then
    /// `sipreg admin on 127.0.0.1:PORT (http)`.
    pub fn start(args: &[&str]) -> Server {
        let mut child = command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let stderr = collect(child.stderr.take().expect("stderr piped"));

        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().take(2) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
            drop(tx);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let mut expect = |which: &str, parse: fn(&str) -> Option<SocketAddr>| {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!(
                        "sipreg {args:?} printed no {which} line within {START_TIMEOUT:?} \
                         (exit: {status:?}); stderr:\n{}",
                        String::from_utf8_lossy(&stderr.lock().unwrap())
                    );
                }
            };
            parse(&line).unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("unexpected {which} stdout line {line:?}");
            })
        };
        let addr = expect("listening", parse_listening_line);
        let http = expect("admin", parse_admin_line);
        Server {
            child: Some(child),
            addr,
            http,
            stderr,
        }
    }

    /// [`Server::start`] with [`DEFAULT_ARGS`].
    pub fn start_default() -> Server {
        Server::start(DEFAULT_ARGS)
    }

    /// [`Server::start`] with [`DEFAULT_ARGS`], each `(flag, value)` replacing
    /// that flag's default or added after them; an empty value adds a bare
    /// flag (`("--no-auth", "")`).
    pub fn start_with(overrides: &[(&str, &str)]) -> Server {
        let mut args: Vec<&str> = DEFAULT_ARGS.to_vec();
        for &(flag, value) in overrides {
            match args.iter().position(|a| *a == flag) {
                Some(i) if !value.is_empty() => args[i + 1] = value,
                Some(_) => {}
                None if value.is_empty() => args.push(flag),
                None => args.extend([flag, value]),
            }
        }
        Server::start(&args)
    }

    /// The SIP address (UDP and TCP share it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API (HTTP) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// A plain HTTP/1.1 GET on the admin API: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }

    /// The value of an unlabelled sample in `/metrics` (`sipreg_` prefix
    /// included in `name`), or `None` when it is absent.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The end of [`Server::stderr`] under a heading, for failure reports.
    pub fn stderr_report(&self) -> String {
        format!("--- sipreg stderr ---\n{}", tail(&self.stderr(), 4000))
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not stopped");
        matches!(child.try_wait(), Ok(None))
    }

    /// Sends `signal` and waits for the exit status (SIGKILL after a deadline,
    /// in which case the test fails).
    pub fn stop_with(mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("not stopped");
        match signal_and_wait(&mut child, signal, STOP_TIMEOUT) {
            Some(status) => status,
            None => panic!(
                "sipreg did not exit within {STOP_TIMEOUT:?} of signal {signal}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit (status 0). `Err`
    /// says why not: the server had already exited, exited otherwise, or had
    /// to be killed. Its stderr stays readable afterwards.
    pub fn stop_cleanly(&mut self, timeout: Duration) -> Result<(), String> {
        let mut child = self.child.take().expect("not stopped");
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sipreg had already exited: {status}"));
        }
        match signal_and_wait(&mut child, libc::SIGTERM, timeout) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("sipreg exited with {status} after SIGTERM")),
            None => Err(format!(
                "sipreg did not exit within {timeout:?} of SIGTERM (killed)"
            )),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let exited = signal_and_wait(&mut child, libc::SIGTERM, STOP_TIMEOUT);
            if thread::panicking() || exited.is_none() {
                eprintln!(
                    "--- sipreg stderr ({}) ---\n{}",
                    match exited {
                        Some(s) => format!("exit {s}"),
                        None => "killed after SIGTERM timeout".to_string(),
                    },
                    self.stderr()
                );
            }
        }
    }
}

impl Server {
    /// Runs the binary with exactly `args` (no `--listen` added) and expects
    /// it to exit by itself, as it must for a CLI error; returns its status and
    /// stderr.
    pub fn start_expect_failure(args: &[&str]) -> (ExitStatus, String) {
        let (status, _stdout, stderr) = run_to_exit(args);
        (status, stderr)
    }
}

/// Runs the binary with exactly `args` and waits for it to exit by itself;
/// returns (status, stdout, stderr). Fails the test if it keeps running.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let (output, exited) = match rx.recv_timeout(START_TIMEOUT) {
        Ok(output) => (output, true),
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions; the waiting
            // thread has not reaped our child yet, so `pid` is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            (rx.recv().expect("waiter thread"), false)
        }
    };
    let output = output.expect("wait for sipreg");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        exited,
        "sipreg {args:?} was expected to exit by itself but kept running; stderr:\n{}",
        text(&output.stderr)
    );
    (output.status, text(&output.stdout), text(&output.stderr))
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Reads a pipe to its end on a thread, into a buffer shared with the caller.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&buf);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

/// `sipreg listening on 127.0.0.1:PORT (udp+tcp)` → the SIP address.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    parse_line(line, "sipreg listening on ", " (udp+tcp)")
}

/// `sipreg admin on 127.0.0.1:PORT (http)` → the admin API address.
pub fn parse_admin_line(line: &str) -> Option<SocketAddr> {
    parse_line(line, "sipreg admin on ", " (http)")
}

/// `PREFIX127.0.0.1:PORTSUFFIX` → 127.0.0.1:PORT (port not 0).
fn parse_line(line: &str, prefix: &str, suffix: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = line
        .strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()?;
    (addr.ip() == Ipv4Addr::LOCALHOST && addr.port() != 0).then_some(addr)
}

/// Sends `sig` to the child (by its own PID) and waits up to `timeout`;
/// SIGKILLs it and returns `None` if it does not exit.
fn signal_and_wait(child: &mut Child, sig: libc::c_int, timeout: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child, sig);
    wait_until(child, timeout)
}

/// A plain HTTP/1.1 GET (`Connection: close`): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin API");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}
