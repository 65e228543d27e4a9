//! Running sipp (`sip-tester`) with its traces in a scratch directory, and
//! reading the cumulative counters of its `-trace_stat` file.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::peers::{head, read_lossy, tail, Peer, Scratch};

/// Cumulative counters from the last row of sipp's `-trace_stat` file.
#[derive(Debug)]
pub struct SippStats {
    pub successful: u64,
    pub failed: u64,
    pub created: u64,
    pub row: Vec<(String, String)>,
}

impl SippStats {
    /// The counter in column `name`.
    pub fn get(&self, name: &str) -> Result<u64, String> {
        let (_, v) = self
            .row
            .iter()
            .find(|(k, _)| k == name)
            .ok_or_else(|| format!("no column {name} in the statistics file"))?;
        v.trim()
            .parse()
            .map_err(|e| format!("column {name} = {v:?}: {e}"))
    }

    /// The non-zero cumulative counters, for failure reports.
    pub fn nonzero(&self) -> String {
        self.row
            .iter()
            .filter(|(k, v)| k.ends_with("(C)") && v.trim().parse::<u64>().is_ok_and(|n| n > 0))
            .map(|(k, v)| format!("{k}={}", v.trim()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn parse_stats(path: &Path) -> Result<SippStats, String> {
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
    let mut stats = SippStats {
        successful: 0,
        failed: 0,
        created: 0,
        row: header
            .iter()
            .zip(last.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    stats.successful = stats.get("SuccessfulCall(C)")?;
    stats.failed = stats.get("FailedCall(C)")?;
    stats.created = stats.get("TotalCallCreated")?;
    Ok(stats)
}

/// The options of a sipp client (UAC) here: `TARGET -sf SCENARIO`, `-t
/// TRANSPORT`, the local side on loopback (no `-p`: sipp picks a free port
/// itself), `-m CALLS`, each expected answer within 5 s (over TCP nothing is
/// retransmitted); then `extra`.
pub fn client_args(
    target: SocketAddr,
    scenario: &Path,
    transport: &str,
    calls: usize,
    extra: &[&str],
) -> Vec<OsString> {
    let mut args = vec![target.to_string().into(), "-sf".into(), scenario.into()];
    let calls = calls.to_string();
    let common = [
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-bind_local",
        "-m",
        &calls,
    ];
    args.extend(
        common
            .into_iter()
            .chain(["-recv_timeout", "5s"])
            .map(OsString::from),
    );
    args.extend(extra.iter().map(OsString::from));
    args
}

/// One sipp process with its files in the scratch directory, all named after
/// its role: `ROLE.stat.csv`, `ROLE.screen.log`, `ROLE.errors.log`,
/// `ROLE.messages.log`, `ROLE.out` (stdout + stderr). Killed on drop.
pub struct Sipp {
    pub role: &'static str,
    peer: Peer,
    kill_after: Duration,
    started: Instant,
    /// From the spawn to the exit, once [`Sipp::wait`] returned.
    pub elapsed: Duration,
    pub stat: PathBuf,
    pub screen: PathBuf,
    pub errors: PathBuf,
    pub messages: PathBuf,
    pub out: PathBuf,
}

impl Sipp {
    /// Spawns `sipp ARGS` plus the bounding and tracing options common to
    /// every role. `timeout_s` is sipp's own global timeout (`-timeout`, then
    /// `-timeout_error`); `kill_slack` later the test kills it by its PID.
    pub fn spawn(
        scratch: &Scratch,
        role: &'static str,
        args: Vec<OsString>,
        timeout_s: u64,
        kill_slack: Duration,
    ) -> Sipp {
        let stat = scratch.file(&format!("{role}.stat.csv"));
        let screen = scratch.file(&format!("{role}.screen.log"));
        let errors = scratch.file(&format!("{role}.errors.log"));
        let messages = scratch.file(&format!("{role}.messages.log"));
        let out = scratch.file(&format!("{role}.out"));
        let os = |s: &str| OsString::from(s);
        let mut all = args;
        all.extend([
            os("-timeout"),
            os(&format!("{timeout_s}s")),
            os("-timeout_error"),
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
        ]);
        let mut cmd = Command::new("sipp");
        cmd.args(&all).current_dir(&scratch.path);
        Sipp {
            role,
            peer: Peer::spawn(role, cmd, &out),
            kill_after: Duration::from_secs(timeout_s) + kill_slack,
            started: Instant::now(),
            elapsed: Duration::ZERO,
            stat,
            screen,
            errors,
            messages,
            out,
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.peer.running()
    }

    /// Waits for the exit, killing the process (by PID) once its deadline passes.
    pub fn wait(&mut self) {
        if !self.peer.waited() {
            let left = self.kill_after.saturating_sub(self.started.elapsed());
            self.peer.wait(left);
            self.elapsed = self.started.elapsed();
        }
    }

    /// Waits, then wants exit 0 and exactly `calls` calls created, all
    /// successful, none failed.
    pub fn check_calls(&mut self, calls: u64) -> Result<SippStats, String> {
        self.wait();
        let stats = parse_stats(&self.stat)?;
        if self.peer.exit_code() != Some(0)
            || stats.successful != calls
            || stats.failed != 0
            || stats.created != calls
        {
            return Err(format!(
                "want exit 0 and {calls} calls created, {calls} successful, 0 failed; \
                 got exit {}, {} created, {} successful, {} failed",
                self.peer.status_text(),
                stats.created,
                stats.successful,
                stats.failed
            ));
        }
        Ok(stats)
    }

    /// Everything sipp left behind, for a failure report.
    pub fn report(&self) -> String {
        let mut r = format!(
            "=== sipp {} === exit {} after {:.1?}\n{}\n",
            self.role,
            self.peer.status_text(),
            self.elapsed,
            self.peer.command_line()
        );
        match parse_stats(&self.stat) {
            Ok(s) => {
                let _ = writeln!(r, "counters: {}", s.nonzero());
            }
            Err(e) => {
                let _ = writeln!(r, "statistics: {e}");
            }
        }
        if self.errors.exists() {
            let _ = writeln!(
                r,
                "--- {} unexpected messages / errors ---\n{}",
                self.role,
                head(&read_lossy(&self.errors), 4000)
            );
        }
        let _ = writeln!(
            r,
            "--- {} messages ---\n{}",
            self.role,
            head(&read_lossy(&self.messages), 6000)
        );
        let _ = writeln!(
            r,
            "--- {} screen ---\n{}",
            self.role,
            head(&read_lossy(&self.screen), 3000)
        );
        let _ = writeln!(
            r,
            "--- {} stdout/stderr (end) ---\n{}",
            self.role,
            tail(&read_lossy(&self.out), 2000)
        );
        r
    }
}
