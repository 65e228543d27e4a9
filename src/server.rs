//! Wiring the threads together, in one place: load credentials, bind every
//! socket first (fail fast, with the step and address that failed), then start
//! the timer thread and one worker per socket pair.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::admin::{self, AdminState};
use crate::auth::{CredentialStore, LoadError, NonceSecret};
use crate::config::Config;
use crate::gb28181::platform::DEFAULT_PLATFORM_ID;
use crate::gb28181::{Platform, PlatformConfig};
use crate::persist::{self, Loaded, Saver};
use crate::registrar::{Policy, Registrar, TimerEvent};
use crate::registry::{Expiry, Registry};
use crate::stats::{GbStats, PersistStats, TimerStats, WorkerStats};
use crate::timer::{self, TimerCmd};
use crate::transport::socket::{self, SocketError};
use crate::transport::{TcpLimits, Worker, WorkerConfig, WorkerOutbox, COMMAND_QUEUE};

/// Pending timer commands the workers may queue before they wait for the
/// timer thread (back-pressure instead of unbounded memory).
const TIMER_QUEUE: usize = 1 << 18;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Credentials(LoadError),
    Secret(std::io::Error),
    Socket(SocketError),
    Poll(std::io::Error),
    Thread(&'static str, std::io::Error),
    /// Binding the `--http` admin listener failed.
    Http(SocketAddr, std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Credentials(e) => write!(f, "{e}"),
            StartError::Secret(e) => {
                write!(f, "cannot read /dev/urandom for the nonce secret: {e}")
            }
            StartError::Socket(e) => write!(f, "{e}"),
            StartError::Poll(e) => write!(f, "cannot create the event loop: {e}"),
            StartError::Thread(what, e) => write!(f, "cannot start the {what} thread: {e}"),
            StartError::Http(addr, e) => {
                write!(f, "cannot listen for the admin API on {addr}: {e}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// A running server.
pub struct Running {
    pub local_addr: SocketAddr,
    /// Where the admin API listens (`--http`, with the real port if it was 0).
    pub http_addr: SocketAddr,
    admin: Option<JoinHandle<()>>,
    pub registry: Arc<Registry>,
    pub worker_stats: Vec<Arc<WorkerStats>>,
    pub timer_stats: Arc<TimerStats>,
    pub gb_stats: Arc<GbStats>,
    pub platform: Arc<Platform>,
    shutdown: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    workers: Vec<JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
    timer_tx: Sender<TimerCmd<TimerEvent>>,
    /// `--state`: the snapshot path and its periodic saver.
    state: Option<(std::path::PathBuf, Saver)>,
    pub persist_stats: Arc<PersistStats>,
}

pub fn start(cfg: &Config) -> Result<Running, StartError> {
    let realm = cfg.realm.as_bytes();
    let mut credentials = match &cfg.users {
        Some(path) => CredentialStore::load(path, realm).map_err(StartError::Credentials)?,
        None => CredentialStore::new(realm),
    };
    if let Some(pw) = &cfg.password {
        credentials = credentials.with_password(pw.as_bytes());
    }
    // Challenges in the configured order, strongest first (RFC 8760 §2.4).
    let algorithms: Vec<crate::auth::Algorithm> = cfg
        .digest_algorithms
        .iter()
        .map(|a| match a {
            crate::config::DigestAlgorithm::Sha256 => crate::auth::Algorithm::Sha256,
            crate::config::DigestAlgorithm::Md5 => crate::auth::Algorithm::Md5,
        })
        .collect();
    credentials = credentials.with_algorithms(&algorithms);
    // A file user without an HA1 for the first algorithm offered fails with
    // every client that knows that algorithm (it answers the first challenge
    // it supports): say so once, rather than let it look like a bad password.
    if let Some(&first) = algorithms.first() {
        let stranded = credentials.users_without(first);
        if stranded > 0 {
            log::warn!(
                "credentials file: {stranded} user(s) without a {first} HA1; clients that \
                 answer the {first} challenge cannot authenticate as them{}",
                if algorithms.len() == 1 {
                    ", and no other algorithm is offered"
                } else {
                    " (add the HA1, or offer another algorithm first with --digest-algorithms)"
                }
            );
        }
    }
    let secret = NonceSecret::random().map_err(StartError::Secret)?;
    let (local_addr, sockets) = socket::bind_all(cfg.listen, cfg.threads, cfg.udp_rcvbuf as usize)
        .map_err(StartError::Socket)?;
    // The admin listener too is bound before any thread starts (fail fast).
    let http = std::net::TcpListener::bind(cfg.http).map_err(|e| StartError::Http(cfg.http, e))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| StartError::Http(cfg.http, e))?;

    let registry = Arc::new(Registry::with_capacity(cfg.expected_devices));
    let policy = Policy {
        min_expires: cfg.min_expires,
        max_expires: cfg.max_expires,
        default_expires: cfg.default_expires,
        max_contacts: cfg.max_contacts,
        domain: cfg.domain.clone(),
        no_auth: cfg.no_auth,
        nonce_ttl_secs: u64::from(cfg.nonce_ttl),
        redirect_auth: cfg.redirect_auth,
        one_time_nonces: cfg.one_time_nonces,
        auth_guard: crate::auth::GuardConfig {
            limit: cfg.auth_fail_limit,
            window_ms: u64::from(cfg.auth_fail_window) * 1000,
            lockout_ms: u64::from(cfg.auth_lockout) * 1000,
        },
        expires_jitter_pct: cfg.expires_jitter,
        expected_devices: cfg.expected_devices,
    };
    let (timer_tx, timer_rx) = crossbeam_channel::bounded(TIMER_QUEUE);
    let gb_stats = Arc::new(GbStats::default());
    let platform = Arc::new(Platform::new(
        PlatformConfig {
            platform_id: cfg
                .platform_id
                .clone()
                .unwrap_or_else(|| DEFAULT_PLATFORM_ID.to_string()),
            keepalive_timeout_ms: u64::from(cfg.keepalive_timeout) * 1000,
            query_timeout_ms: u64::from(cfg.query_timeout) * 1000,
            listen: local_addr,
        },
        registry.clone(),
        gb_stats.clone(),
        timer_tx.clone(),
    ));
    let registrar = Arc::new(
        Registrar::new(policy, registry.clone(), credentials, secret)
            .with_platform(platform.clone()),
    );

    let timer_stats = Arc::new(TimerStats::default());
    let timer = {
        let (registry, stats, platform) = (registry.clone(), timer_stats.clone(), platform.clone());
        let registrar = registrar.clone();
        timer::spawn("sipreg-timer", timer_rx, move |event: TimerEvent, now| {
            WorkerStats::inc(&stats.events_fired);
            on_timer(&registry, &registrar, &platform, &stats, event, now)
        })
        .map_err(|e| StartError::Thread("timer", e))?
    };

    let persist_stats = Arc::new(PersistStats::default());
    if let Some(path) = &cfg.state {
        restore(path, &registry, &timer_tx, &persist_stats);
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    let mut running = Running {
        local_addr,
        http_addr,
        admin: None,
        registry,
        worker_stats: Vec::new(),
        timer_stats,
        gb_stats,
        platform: platform.clone(),
        shutdown: shutdown.clone(),
        wakers: Vec::new(),
        workers: Vec::new(),
        timer: Some(timer),
        timer_tx: timer_tx.clone(),
        state: None,
        persist_stats: persist_stats.clone(),
    };
    let mut outbox = WorkerOutbox {
        workers: Vec::new(),
    };
    for (i, sockets) in sockets.into_iter().enumerate() {
        let stats = Arc::new(WorkerStats::default());
        let wcfg = WorkerConfig {
            id: i as u16,
            tcp: TcpLimits {
                max_connections: cfg.tcp_max_connections as usize,
                max_per_source: cfg.tcp_max_per_source,
                idle_timeout_ms: u64::from(cfg.tcp_idle_timeout) * 1000,
                message_timeout_ms: u64::from(cfg.tcp_message_timeout) * 1000,
            },
            rate_limit: cfg.rate_limit,
            rate_burst: cfg.rate_burst,
        };
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
        let (worker, waker) = Worker::new(
            wcfg,
            sockets,
            registrar.clone(),
            stats.clone(),
            timer_tx.clone(),
            cmd_rx,
            shutdown.clone(),
        )
        .map_err(StartError::Poll)?;
        let handle = std::thread::Builder::new()
            .name(format!("sipreg-worker-{i}"))
            .spawn(move || worker.run())
            .map_err(|e| StartError::Thread("worker", e))?;
        outbox.workers.push((cmd_tx, waker.clone(), stats.clone()));
        running.worker_stats.push(stats);
        running.wakers.push(waker);
        running.workers.push(handle);
    }
    let outbox: Arc<dyn crate::gb28181::Outbox> = Arc::new(outbox);
    platform.set_outbox(outbox.clone());
    registrar.invites.set_outbox(outbox);
    let admin_state = Arc::new(AdminState {
        registry: running.registry.clone(),
        worker_stats: running.worker_stats.clone(),
        timer_stats: running.timer_stats.clone(),
        gb_stats: running.gb_stats.clone(),
        queries: platform.clone(),
        persist: persist_stats.clone(),
        nonce_counts: registrar.nonce_counts.clone(),
    });
    let (admin, admin_waker) =
        admin::spawn(http, admin_state, shutdown).map_err(|e| StartError::Thread("admin", e))?;
    running.admin = Some(admin);
    running.wakers.push(admin_waker);
    if let Some(path) = &cfg.state {
        let interval = std::time::Duration::from_secs(u64::from(cfg.state_interval));
        let saver = Saver::spawn(
            running.registry.clone(),
            path.clone(),
            interval,
            persist_stats,
        )
        .map_err(|e| StartError::Thread("state", e))?;
        running.state = Some((path.clone(), saver));
    }
    Ok(running)
}

/// Loads the snapshot at `path` before any worker runs, re-arming the timers
/// of what it restores, and says in one line what happened.
fn restore(
    path: &std::path::Path,
    registry: &Registry,
    timer_tx: &Sender<TimerCmd<TimerEvent>>,
    stats: &PersistStats,
) {
    let loaded = persist::load(path, registry, |deadline_ms, item| {
        // The timer thread is running and drains the queue, so a full queue
        // only slows the load down.
        let _ = timer_tx.send(TimerCmd::At { deadline_ms, item });
    });
    match loaded {
        Loaded::Missing => log::info!(
            "state file {} does not exist yet: starting with an empty table",
            path.display()
        ),
        Loaded::Restored {
            records,
            devices,
            bindings,
        } => {
            stats.restored_devices.store(devices, Ordering::Relaxed);
            log::info!(
                "state restored from {}: {devices} devices with {bindings} live bindings ({} of {records} saved devices had expired)",
                path.display(),
                records - devices
            );
        }
        Loaded::Refused { reason, moved_to } => log::error!(
            "state file {} is unusable ({reason}); {}; starting with an empty table",
            path.display(),
            match &moved_to {
                Some(p) => format!("kept aside as {}", p.display()),
                None =>
                    "it could not be moved aside and will be overwritten by the next save".into(),
            }
        ),
    }
}

/// The timer thread's dispatch at `now` (the slice's clock reading): binding
/// expiry here, GB28181 timers in the platform. Returns a timer to re-arm, if
/// any: a device's expiry event that found live bindings goes back in at the
/// earliest of their deadlines.
fn on_timer(
    registry: &Registry,
    registrar: &Registrar,
    platform: &Platform,
    stats: &TimerStats,
    event: TimerEvent,
    now: u64,
) -> Option<(u64, TimerEvent)> {
    let (aor, generation) = match event {
        TimerEvent::Expiry { aor, generation } => (aor, generation),
        TimerEvent::InviteRetransmit { .. } | TimerEvent::InviteTimeout { .. } => {
            return registrar.invites.on_timer(&event, now)
        }
        _ => return platform.on_timer(&event, now),
    };
    match registry.expire(&aor, generation, now) {
        Expiry::Stale => {
            WorkerStats::inc(&stats.events_stale);
            None
        }
        Expiry::Gone { removed } => {
            stats
                .expirations
                .fetch_add(removed as u64, Ordering::Relaxed);
            None
        }
        Expiry::Partial {
            removed,
            next_ms,
            generation,
        } => {
            stats
                .expirations
                .fetch_add(removed as u64, Ordering::Relaxed);
            Some((next_ms, TimerEvent::Expiry { aor, generation }))
        }
    }
}

impl Running {
    /// Stops the workers and the timer thread and waits for them.
    pub fn stop(mut self) {
        self.shutdown.store(true, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(a) = self.admin.take() {
            let _ = a.join();
        }
        // Every worker has stopped, so this last snapshot misses nothing.
        if let Some((path, saver)) = self.state.take() {
            saver.stop();
            persist::save_counted(
                &self.registry,
                &path,
                &self.persist_stats,
                persist::Pace::FullSpeed,
            );
        }
        let _ = self.timer_tx.send(TimerCmd::Shutdown);
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}
