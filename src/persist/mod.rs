//! State that survives a restart (`--state FILE`): the device table saved as a
//! snapshot every `--state-interval` seconds and on shutdown, loaded at start.
//!
//! - [`format`]: the versioned, checksummed file format, pure.
//! - [`save`]: writes `FILE.tmp`, fsyncs it, renames it over `FILE` and fsyncs
//!   the directory, so a crash at any instant leaves the old or the new
//!   snapshot whole, never a mix.
//! - [`load`]: restores the devices whose bindings are still live (deadlines
//!   moved onto the new monotonic clock) and hands back the timers to re-arm;
//!   a file that cannot be read or decoded is renamed aside (never deleted)
//!   and the server starts empty.
//! - [`Saver`]: the background thread of periodic saves.
//!
//! Saving never stalls a worker for long: the keys are copied out first (one
//! shard read-locked at a time), then each device is encoded under its own
//! shard's read lock, one at a time, and the file is written only while no
//! lock is held (STYLE habit 12).

pub mod format;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::registrar::TimerEvent;
use crate::registry::Registry;
use crate::stats::PersistStats;
use format::{Clock, FormatError};

/// Encoded bytes gathered before each write: big enough that the write
/// syscalls are few, small enough to be no memory concern.
const WRITE_CHUNK: usize = 1 << 20;

/// Why a save or a load failed.
#[derive(Debug)]
pub enum PersistError {
    /// A file-system step failed: which step, on which path.
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    Format(FormatError),
}

impl std::fmt::Display for PersistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersistError::Io { step, path, source } => {
                write!(f, "cannot {step} {}: {source}", path.display())
            }
            PersistError::Format(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PersistError {}

fn io<'p>(step: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> PersistError + 'p {
    move |source| PersistError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            mono_ms: crate::timer::now_ms(),
            unix_ms: unix_ms(),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The temporary file a save writes before renaming it over `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// What a save wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub devices: u64,
    pub bytes: u64,
}

/// How hard a save may use its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Workers are serving: after each batch of devices, sleep as long as the
    /// batch took, so the save uses at most half of a core and a worker
    /// sharing that core waits for at most one batch.
    ShareTheCore,
    /// Nothing else runs (the save at shutdown): full speed.
    FullSpeed,
}

/// Devices encoded between two pauses of [`Pace::ShareTheCore`] (about a
/// millisecond of work).
const BATCH: usize = 2048;

/// Writes a snapshot of `registry` to `path` atomically.
pub fn save(registry: &Registry, path: &Path, pace: Pace) -> Result<Saved, PersistError> {
    let clock = Clock::now();
    let tmp = temp_path(path);
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = Vec::with_capacity(WRITE_CHUNK + 4096);
    let mut bytes = 0u64;
    let mut flush = |buf: &mut Vec<u8>, crc: Option<&mut crc32fast::Hasher>| {
        if let Some(crc) = crc {
            crc.update(buf);
        }
        bytes += buf.len() as u64;
        let r = file.write_all(buf);
        buf.clear();
        r
    };
    format::push_header(&mut buf, clock.unix_ms);
    let mut devices = 0u64;
    let mut batch_started = Instant::now();
    for (i, aor) in registry.keys().into_iter().enumerate() {
        if pace == Pace::ShareTheCore && i % BATCH == BATCH - 1 {
            std::thread::sleep(batch_started.elapsed());
            batch_started = Instant::now();
        }
        registry.read(&aor, |d| {
            // Gone since the keys were copied: nothing to save.
            if let Some(d) = d {
                format::push_device(&mut buf, &aor, d, clock);
                devices += 1;
            }
        });
        if buf.len() >= WRITE_CHUNK {
            flush(&mut buf, Some(&mut crc)).map_err(io("write", &tmp))?;
        }
    }
    flush(&mut buf, Some(&mut crc)).map_err(io("write", &tmp))?;
    format::push_trailer(&mut buf, devices, crc);
    flush(&mut buf, None).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    // The rename itself is durable only once the directory is.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory of", path))?;
    Ok(Saved { devices, bytes })
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet: a first start.
    Missing,
    Restored {
        /// Records in the file.
        records: u64,
        /// Devices put back in the table (the others had expired).
        devices: u64,
        bindings: u64,
    },
    /// The file could not be used; it was renamed to `moved_to` (or could not
    /// be moved, `moved_to` is `None`) and the table starts empty.
    Refused {
        reason: PersistError,
        moved_to: Option<PathBuf>,
    },
}

/// Loads `path` into `registry` (expected empty); `arm` receives each timer to
/// schedule (binding expiry, GB28181 keep-alive timeout) as
/// `(monotonic deadline, event)`.
pub fn load(path: &Path, registry: &Registry, mut arm: impl FnMut(u64, TimerEvent)) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return refuse(path, io("read", path)(e)),
    };
    let snapshot = match format::open(&bytes) {
        Ok(s) => s,
        Err(e) => return refuse(path, PersistError::Format(e)),
    };
    // Decode everything before touching the table, so a bad record deep in
    // the file leaves the table empty rather than half restored.
    let clock = Clock::now();
    let mut restored = Vec::new();
    let records = match snapshot.decode(clock, |d| restored.push(d)) {
        Ok(n) => n,
        Err(e) => return refuse(path, PersistError::Format(e)),
    };
    drop(bytes);
    let (mut devices, mut bindings) = (0u64, 0u64);
    for d in restored {
        bindings += d.bindings.len() as u64;
        let Some(put) = registry.restore(&d.aor, d.bindings, d.gb) else {
            continue;
        };
        devices += 1;
        if let Some(deadline) = put.next_expiry_ms {
            arm(
                deadline,
                TimerEvent::Expiry {
                    aor: put.aor.clone(),
                    generation: put.generation,
                },
            );
        }
        if let Some(deadline) = put.keepalive_deadline_ms {
            arm(
                deadline,
                TimerEvent::KeepaliveTimeout {
                    aor: put.aor,
                    generation: put.keepalive_generation,
                },
            );
        }
    }
    Loaded::Restored {
        records,
        devices,
        bindings,
    }
}

/// Keeps an unusable snapshot for the operator under a new name.
fn refuse(path: &Path, reason: PersistError) -> Loaded {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{}", unix_ms() / 1000));
    let aside = PathBuf::from(aside);
    let moved_to = std::fs::rename(path, &aside).ok().map(|()| aside);
    Loaded::Refused { reason, moved_to }
}

/// The thread that saves every interval; [`Saver::stop`] ends it.
pub struct Saver {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Saver {
    pub fn spawn(
        registry: Arc<Registry>,
        path: PathBuf,
        interval: Duration,
        stats: Arc<PersistStats>,
    ) -> std::io::Result<Saver> {
        let (stop, stopped): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("sipreg-state".into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {
                        save_counted(&registry, &path, &stats, Pace::ShareTheCore)
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })?;
        Ok(Saver { stop, thread })
    }

    /// Ends the thread, letting a save in progress finish.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Saves, counts and logs the outcome; a failed save leaves the previous
/// snapshot in place, so it is a warning, not a reason to stop serving.
pub fn save_counted(registry: &Registry, path: &Path, stats: &PersistStats, pace: Pace) {
    let started = Instant::now();
    match save(registry, path, pace) {
        Ok(saved) => {
            let took = started.elapsed();
            stats.saves.fetch_add(1, Relaxed);
            stats.last_save_devices.store(saved.devices, Relaxed);
            stats.last_save_bytes.store(saved.bytes, Relaxed);
            stats
                .last_save_micros
                .store(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
            log::debug!(
                "state saved to {}: {} devices, {} bytes in {:.1} ms",
                path.display(),
                saved.devices,
                saved.bytes,
                took.as_secs_f64() * 1e3
            );
        }
        Err(e) => {
            stats.save_failures.fetch_add(1, Relaxed);
            log::warn!("state not saved (the previous snapshot stays): {e}");
        }
    }
}
