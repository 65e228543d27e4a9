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
use crate::registrar::{Policy, Registrar, TimerEvent};
use crate::registry::{Expiry, Registry};
use crate::stats::{GbStats, TimerStats, WorkerStats};
use crate::timer::{self, TimerCmd};
use crate::transport::socket::{self, SocketError};
use crate::transport::{Worker, WorkerConfig, WorkerOutbox, COMMAND_QUEUE};

/// Pending timer commands the workers may queue before they wait for the
/// timer thread (back-pressure instead of unbounded memory).
const TIMER_QUEUE: usize = 1 << 18;
/// TCP connections per worker.
const MAX_CONNECTIONS_PER_WORKER: usize = 16 * 1024;

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
    let secret = NonceSecret::random().map_err(StartError::Secret)?;
    let (local_addr, sockets) =
        socket::bind_all(cfg.listen, cfg.threads).map_err(StartError::Socket)?;
    // The admin listener too is bound before any thread starts (fail fast).
    let http = std::net::TcpListener::bind(cfg.http).map_err(|e| StartError::Http(cfg.http, e))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| StartError::Http(cfg.http, e))?;

    let registry = Arc::new(Registry::new());
    let policy = Policy {
        min_expires: cfg.min_expires,
        max_expires: cfg.max_expires,
        default_expires: cfg.default_expires,
        max_contacts: cfg.max_contacts,
        domain: cfg.domain.clone(),
        no_auth: cfg.no_auth,
        nonce_ttl_secs: u64::from(cfg.nonce_ttl),
        redirect_auth: cfg.redirect_auth,
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
        timer::spawn("sipreg-timer", timer_rx, move |event: TimerEvent| {
            WorkerStats::inc(&stats.events_fired);
            on_timer(&registry, &registrar, &platform, &stats, event)
        })
        .map_err(|e| StartError::Thread("timer", e))?
    };

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
    };
    let mut outbox = WorkerOutbox {
        workers: Vec::new(),
    };
    for (i, sockets) in sockets.into_iter().enumerate() {
        let stats = Arc::new(WorkerStats::default());
        let wcfg = WorkerConfig {
            id: i as u16,
            tcp_idle_timeout_ms: u64::from(cfg.tcp_idle_timeout) * 1000,
            max_connections: MAX_CONNECTIONS_PER_WORKER,
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
        outbox.workers.push((cmd_tx, waker.clone()));
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
    });
    let (admin, admin_waker) =
        admin::spawn(http, admin_state, shutdown).map_err(|e| StartError::Thread("admin", e))?;
    running.admin = Some(admin);
    running.wakers.push(admin_waker);
    Ok(running)
}

/// The timer thread's dispatch: binding expiry here, GB28181 timers in the
/// platform. Returns a timer to re-arm, if any.
fn on_timer(
    registry: &Registry,
    registrar: &Registrar,
    platform: &Platform,
    stats: &TimerStats,
    event: TimerEvent,
) -> Option<(u64, TimerEvent)> {
    let now = timer::now_ms();
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
        let _ = self.timer_tx.send(TimerCmd::Shutdown);
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}
