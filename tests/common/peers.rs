//! External programs the interop tests drive (sipp, baresip): whether they are
//! installed, a scratch directory for their files, child processes bounded in
//! time, and excerpts of their logs for failure reports.
//!
//! The skip rule: a missing program skips the test, unless the environment
//! variable `CI` is set, in which case it is a failure.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// True when sipp can run; see [`available`].
pub fn sipp_available() -> bool {
    available("sipp", "-v", "sip-tester", ", as .ci/run does")
}

/// True when baresip can run; see [`available`].
pub fn baresip_available() -> bool {
    available("baresip", "-h", "baresip", "")
}

/// True when `program probe` can be started. False (skip) only when it is
/// missing outside CI; panics when it is missing and `CI` is set. `package` is
/// the Debian package that provides it, `ci_note` is appended to the hint.
pub fn available(program: &str, probe: &str, package: &str, ci_note: &str) -> bool {
    let found = Command::new(program)
        .arg(probe)
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
            "{program} is not installed but CI is set: the interop test must run in CI \
             (install the Debian package {package}{ci_note})"
        );
    }
    eprintln!(
        "SKIPPED: {program} is not installed (apt-get install {package}); \
         set CI=1 to make this a failure"
    );
    false
}

/// A scratch directory under the system temp dir, kept when the test fails.
pub struct Scratch {
    pub path: PathBuf,
    pub keep: bool,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
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

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Keeps the files and fails the test with `report` and where they are.
    #[track_caller]
    pub fn fail(&mut self, report: &str) -> ! {
        self.keep = true;
        panic!("{report}\nfiles: {}", self.path.display());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep || thread::panicking() {
            eprintln!("interop test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Sends `signal` to the child, by its own PID (nothing if it was reaped).
pub fn signal(child: &mut Child, signal: libc::c_int) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own
    // child, which has not been reaped yet, so the PID cannot have been reused.
    unsafe { libc::kill(pid, signal) };
}

/// Waits for `child` up to `timeout`; kills it (by PID) and reaps it on
/// overrun. Returns its status, or `None` when it had to be killed.
pub fn wait_until(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// One external program, its stdout and stderr in a log file; waited for
/// with deadlines, killed on drop if still running.
pub struct Peer {
    child: Option<Child>,
    command_line: String,
    /// `None` while running (or never waited for), `Some(None)` when killed
    /// after overrunning, `Some(Some(status))` when it exited.
    status: Option<Option<ExitStatus>>,
}

impl Peer {
    /// Spawns `cmd` with stdin closed and stdout + stderr appended to `log`,
    /// printing `[label] PROGRAM ARGS` first.
    pub fn spawn(label: &str, mut cmd: Command, log: &Path) -> Peer {
        let command_line = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("[{label}] {command_line}");
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command_line}: {e}"));
        Peer {
            child: Some(child),
            command_line,
            status: None,
        }
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the exit up to `timeout`, then kills by PID.
    pub fn wait(&mut self, timeout: Duration) {
        if let Some(mut child) = self.child.take() {
            self.status = Some(wait_until(&mut child, timeout));
        }
    }

    /// SIGTERM, then [`Peer::wait`].
    pub fn terminate(&mut self, timeout: Duration) {
        if let Some(child) = self.child.as_mut() {
            signal(child, libc::SIGTERM);
        }
        self.wait(timeout);
    }

    /// True once [`Peer::wait`] (or [`Peer::terminate`]) returned.
    pub fn waited(&self) -> bool {
        self.status.is_some()
    }

    /// The exit code, once it exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.flatten().and_then(|s| s.code())
    }

    /// True once it exited by itself with status 0.
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(Some(s)) if s.success())
    }

    pub fn status_text(&self) -> String {
        match self.status {
            None => "(still running)".to_owned(),
            Some(None) => "killed (overran)".to_owned(),
            Some(Some(s)) => s.to_string(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A file's content, lossily decoded; a short `<PATH: ERROR>` when unreadable.
pub fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}

/// The first `max` bytes of `text` (at a char boundary), and how much was cut.
pub fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... {} more bytes]", &text[..end], text.len() - end)
}

/// The last `max` bytes of `text` (at a char boundary), and how much was cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes before]\n{}", &text[start..])
}
