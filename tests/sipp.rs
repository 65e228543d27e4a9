//! Interop: sipp's own REGISTER-with-digest scenario against the real binary.
//!
//! `tests/sipp/register_digest.xml` is a UAC scenario: REGISTER, expect 401 with a
//! digest challenge, REGISTER again with `[authentication]`, expect 200 listing the
//! binding with `;expires=`. Every "call" is a distinct user taken from an injection
//! file written at test time. The test asserts sipp's exit code (0 = every call
//! succeeded) and the cumulative counters in its statistics file.
//!
//! sipp comes from the Debian package `sip-tester` (`.ci/run` installs it). Without
//! sipp the tests are skipped, unless the environment variable `CI` is set: in CI a
//! missing sipp is a failure.
//!
//! Everything stays on 127.0.0.1. Every process is bounded in time and killed by its
//! own PID if it overruns.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shared password sipreg is started with (`--password`, GB28181 style).
const PASSWORD: &str = "secret";
/// How long sipreg may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sipreg may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// sipp's own global timeout (`-timeout`); it then fails (`-timeout_error`).
const SIPP_TIMEOUT_S: u64 = 60;
/// Hard limit after which the test kills sipp itself.
const SIPP_KILL_AFTER: Duration = Duration::from_secs(SIPP_TIMEOUT_S + 30);

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/register_digest.xml")
}

/// True when sipp can run. False (skip) only when sipp is missing outside CI;
/// panics when sipp is missing and `CI` is set.
fn sipp_available() -> bool {
    let found = Command::new("sipp")
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "sipp is not installed but CI is set: the interop test must run in CI \
             (install the Debian package sip-tester, as .ci/run does)"
        );
    }
    eprintln!(
        "SKIPPED: sipp is not installed (apt-get install sip-tester); \
         set CI=1 to make this a failure"
    );
    false
}

/// A scratch directory under the system temp dir, kept when the test fails.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "sipreg-sipp-{tag}-{}-{nanos:09}",
            std::process::id()
        ));
        fs::create_dir_all(&path).expect("create the scratch directory");
        Scratch { path, keep: false }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep || thread::panicking() {
            eprintln!("sipp test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Sends SIGTERM to one process, by its PID.
fn sigterm(pid: u32) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {pid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` until `deadline`; kills it (by PID) and reaps it on overrun.
/// Returns its status, or `None` when it had to be killed.
fn wait_until(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The sipreg binary, started on loopback with ephemeral ports; stopped with
/// SIGTERM by `stop`, killed on drop if still running.
struct Sipreg {
    child: Option<Child>,
    port: u16,
    stderr_path: PathBuf,
}

impl Sipreg {
    fn start(scratch: &Scratch) -> Sipreg {
        let stderr_path = scratch.file("sipreg.stderr");
        let stderr = File::create(&stderr_path).expect("create sipreg's stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sipreg"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--realm",
                "sipreg",
                "--password",
                PASSWORD,
                "--threads",
                "2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn sipreg");

        // Read stdout on a thread: the first line carries the port, the rest is
        // drained so the pipe can never fill up and block the server.
        let stdout = child.stdout.take().expect("sipreg stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut server = Sipreg {
            child: Some(child),
            port: 0,
            stderr_path,
        };
        let first = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let what = match other {
                    Ok(None) => "sipreg closed its stdout without printing a line".to_owned(),
                    Ok(Some(Err(e))) => format!("reading sipreg's stdout failed: {e}"),
                    Err(_) => format!("sipreg printed no line within {STARTUP_TIMEOUT:?}"),
                    Ok(Some(Ok(_))) => unreachable!(),
                };
                // Give an exiting process a moment, to report its status.
                thread::sleep(Duration::from_millis(200));
                let status = server
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "{what} (exit status: {status:?}); want \
                     \"sipreg listening on 127.0.0.1:PORT (udp+tcp)\"\n\
                     --- sipreg stderr ---\n{}",
                    server.stderr_tail()
                );
            }
        };
        server.port = parse_listening_line(&first).unwrap_or_else(|| {
            panic!(
                "unexpected first stdout line from sipreg: {first:?}\n\
                 (want \"sipreg listening on 127.0.0.1:PORT (udp+tcp)\")\n\
                 --- sipreg stderr ---\n{}",
                server.stderr_tail()
            )
        });
        server
    }

    fn stderr_tail(&self) -> String {
        tail(&read_lossy(&self.stderr_path), 4000)
    }

    /// SIGTERM, then wait; `Err` describes a server that did not exit cleanly.
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sipreg had already exited: {status}"));
        }
        sigterm(child.id());
        match wait_until(&mut child, SHUTDOWN_TIMEOUT) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("sipreg exited with {status} after SIGTERM")),
            None => Err(format!(
                "sipreg did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM (killed)"
            )),
        }
    }
}

impl Drop for Sipreg {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sipreg listening on 127.0.0.1:PORT (udp+tcp)` → PORT.
fn parse_listening_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("sipreg listening on 127.0.0.1:")?
        .strip_suffix(" (udp+tcp)")?;
    rest.parse().ok().filter(|&port| port != 0)
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}

fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... {} more bytes]", &text[..end], text.len() - end)
}

fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes before]\n{}", &text[start..])
}

/// The injection file: `SEQUENTIAL`, then per line
/// `user;password;[authentication username=user password=password]`.
///
/// sipp 3.6 does not expand `[field0]` nested inside `[authentication ...]`, so
/// the whole keyword comes from the file (the form sipp's documentation gives for
/// per-call credentials); fields 0 and 1 are the user and the password.
fn write_users(path: &Path, prefix: &str, count: usize) -> Vec<String> {
    let mut csv = String::from("SEQUENTIAL\n");
    let mut users = Vec::with_capacity(count);
    for i in 1..=count {
        let user = format!("{prefix}{i:04}");
        writeln!(
            csv,
            "{user};{PASSWORD};[authentication username={user} password={PASSWORD}]"
        )
        .unwrap();
        users.push(user);
    }
    fs::write(path, csv).expect("write the injection file");
    users
}

/// Cumulative counters from the last row of sipp's `-trace_stat` file.
#[derive(Debug)]
struct SippStats {
    successful: u64,
    failed: u64,
    created: u64,
    retransmissions: u64,
    row: Vec<(String, String)>,
}

fn parse_stats(path: &Path) -> Result<SippStats, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty statistics file")?
        .split(';')
        .collect();
    let last: Vec<&str> = lines
        .next_back()
        .ok_or("statistics file has no data row")?
        .split(';')
        .collect();
    let row: Vec<(String, String)> = header
        .iter()
        .zip(last.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |name: &str| -> Result<u64, String> {
        let (_, v) = row
            .iter()
            .find(|(k, _)| k == name)
            .ok_or_else(|| format!("no column {name} in the statistics file"))?;
        v.trim()
            .parse()
            .map_err(|e| format!("column {name} = {v:?}: {e}"))
    };
    Ok(SippStats {
        successful: get("SuccessfulCall(C)")?,
        failed: get("FailedCall(C)")?,
        created: get("TotalCallCreated")?,
        retransmissions: get("Retransmissions(C)")?,
        row,
    })
}

/// One sipp transport configuration.
struct Run {
    /// Tag for files and user names.
    tag: &'static str,
    /// sipp `-t` mode.
    transport: &'static str,
    /// Contact `transport=` parameter.
    contact_transport: &'static str,
    calls: usize,
}

/// Registers `run.calls` distinct users through sipp against a fresh sipreg and
/// asserts they all succeeded.
fn sipp_register(run: Run) {
    if !sipp_available() {
        return;
    }
    let mut scratch = Scratch::new(run.tag);
    let users_csv = scratch.file("users.csv");
    let users = write_users(&users_csv, &format!("{}user", run.tag), run.calls);
    assert_eq!(users.len(), run.calls);

    let mut server = Sipreg::start(&scratch);
    let target = format!("127.0.0.1:{}", server.port);

    let stat = scratch.file("stat.csv");
    let screen = scratch.file("screen.log");
    let errors = scratch.file("errors.log");
    let messages = scratch.file("messages.log");
    let sipp_out = scratch.file("sipp.out");
    let os = |s: &str| OsString::from(s);
    let args: Vec<OsString> = vec![
        os(&target),
        os("-sf"),
        scenario().into(),
        os("-inf"),
        users_csv.clone().into(),
        // [ctransport] in the scenario: the Contact's transport parameter.
        os("-key"),
        os("ctransport"),
        os(run.contact_transport),
        os("-t"),
        os(run.transport),
        // Local side on loopback only; no -p, so sipp picks a free port itself.
        os("-i"),
        os("127.0.0.1"),
        os("-bind_local"),
        os("-m"),
        os(&run.calls.to_string()),
        os("-r"),
        os("500"),
        os("-l"),
        os("200"),
        os("-timeout"),
        os(&format!("{SIPP_TIMEOUT_S}s")),
        os("-timeout_error"),
        // Each expected answer within 5 s (over TCP nothing is retransmitted).
        os("-recv_timeout"),
        os("5s"),
        // On an unexpected answer abort the call, but send no BYE to a registrar.
        os("-default_behaviors"),
        os("all,-bye"),
        os("-nostdin"),
        os("-trace_stat"),
        os("-stf"),
        stat.clone().into(),
        os("-fd"),
        os("1"),
        os("-trace_screen"),
        os("-screen_file"),
        screen.clone().into(),
        os("-trace_err"),
        os("-error_file"),
        errors.clone().into(),
        os("-trace_msg"),
        os("-message_file"),
        messages.clone().into(),
    ];
    let command_line = format!(
        "sipp {}",
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("{command_line}");

    let out = File::create(&sipp_out).expect("create sipp's output file");
    let err = out.try_clone().expect("clone sipp's output file");
    let started = Instant::now();
    let mut sipp = Command::new("sipp")
        .args(&args)
        .current_dir(&scratch.path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn sipp");
    let status = wait_until(&mut sipp, SIPP_KILL_AFTER);
    let elapsed = started.elapsed();
    let stats = parse_stats(&stat);
    let shutdown = server.stop();

    let diagnose = |what: &str| -> String {
        let mut report = format!(
            "{what}\nsipp exit: {}, after {elapsed:.1?}\n{command_line}\n",
            status.map_or_else(|| "killed (overran)".to_owned(), |s| s.to_string())
        );
        match &stats {
            Ok(s) => {
                let nonzero: Vec<String> = s
                    .row
                    .iter()
                    .filter(|(k, v)| {
                        k.ends_with("(C)") && v.trim().parse::<u64>().is_ok_and(|n| n > 0)
                    })
                    .map(|(k, v)| format!("{k}={}", v.trim()))
                    .collect();
                let _ = writeln!(report, "sipp counters: {}", nonzero.join(" "));
            }
            Err(e) => {
                let _ = writeln!(report, "sipp statistics: {e}");
            }
        }
        let _ = writeln!(
            report,
            "--- sipp screen ---\n{}",
            head(&read_lossy(&screen), 6000)
        );
        if errors.exists() {
            let _ = writeln!(
                report,
                "--- sipp unexpected messages ---\n{}",
                head(&read_lossy(&errors), 6000)
            );
        }
        let _ = writeln!(
            report,
            "--- sipp messages (first exchanges) ---\n{}",
            head(&read_lossy(&messages), 5000)
        );
        let _ = writeln!(
            report,
            "--- sipp stdout/stderr (end) ---\n{}",
            tail(&read_lossy(&sipp_out), 3000)
        );
        let _ = writeln!(report, "--- sipreg stderr ---\n{}", server.stderr_tail());
        let _ = write!(report, "files: {}", scratch.path.display());
        report
    };

    let stats = match &stats {
        Ok(s) => s,
        Err(_) => panic!("{}", diagnose("sipp left no usable statistics")),
    };
    if status.map(|s| s.code()) != Some(Some(0))
        || stats.successful != run.calls as u64
        || stats.failed != 0
        || stats.created != run.calls as u64
    {
        scratch.keep = true;
        panic!(
            "{}",
            diagnose(&format!(
                "sipp over {}: want exit 0, {} successful and 0 failed calls; \
                 got {} successful, {} failed, {} created",
                run.transport, run.calls, stats.successful, stats.failed, stats.created
            ))
        );
    }
    eprintln!(
        "sipp over {}: {} users registered with digest auth in {elapsed:.1?} \
         ({} retransmissions)",
        run.transport, stats.successful, stats.retransmissions
    );
    if let Err(e) = shutdown {
        scratch.keep = true;
        panic!("{e}\n--- sipreg stderr ---\n{}", server.stderr_tail());
    }
}

/// Issue 3, point 7: 1 000 distinct users register over UDP with digest auth,
/// zero failed calls.
#[test]
fn sipp_register_digest_udp_1000_users() {
    sipp_register(Run {
        tag: "udp",
        transport: "u1",
        contact_transport: "udp",
        calls: 1000,
    });
}

/// The same scenario over one TCP connection (`-t t1`), 200 users.
#[test]
fn sipp_register_digest_tcp_200_users() {
    sipp_register(Run {
        tag: "tcp",
        transport: "t1",
        contact_transport: "tcp",
        calls: 200,
    });
}

#[test]
fn listening_line_is_parsed() {
    assert_eq!(
        parse_listening_line("sipreg listening on 127.0.0.1:5060 (udp+tcp)"),
        Some(5060)
    );
    assert_eq!(
        parse_listening_line("sipreg listening on 127.0.0.1:0 (udp+tcp)"),
        None
    );
    assert_eq!(parse_listening_line("listening on 127.0.0.1:5060"), None);
}
