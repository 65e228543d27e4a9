//! Wiring the threads together, in one place: load credentials, bind every
//! socket first (fail fast, with the step and address that failed), then start
//! the timer thread and one worker per socket pair.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::auth::{CredentialStore, LoadError, NonceSecret};
use crate::config::Config;
use crate::registrar::{Policy, Registrar};
use crate::registry::{Expiry, Registry};
use crate::stats::{TimerStats, WorkerStats};
use crate::timer::{self, TimerCmd};
use crate::transport::socket::{self, SocketError};
use crate::transport::{ExpiryItem, Worker, WorkerConfig};

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
        }
    }
}

impl std::error::Error for StartError {}

/// A running server.
pub struct Running {
    pub local_addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub worker_stats: Vec<Arc<WorkerStats>>,
    pub timer_stats: Arc<TimerStats>,
    shutdown: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    workers: Vec<JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
    timer_tx: Sender<TimerCmd<ExpiryItem>>,
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

    let registry = Arc::new(Registry::new());
    let policy = Policy {
        min_expires: cfg.min_expires,
        max_expires: cfg.max_expires,
        default_expires: cfg.default_expires,
        max_contacts: cfg.max_contacts,
        domain: cfg.domain.clone(),
        no_auth: cfg.no_auth,
        nonce_ttl_secs: u64::from(cfg.nonce_ttl),
    };
    let registrar = Arc::new(Registrar::new(
        policy,
        registry.clone(),
        credentials,
        secret,
    ));

    let (timer_tx, timer_rx) = crossbeam_channel::bounded(TIMER_QUEUE);
    let timer_stats = Arc::new(TimerStats::default());
    let fire_registry = registry.clone();
    let fire_stats = timer_stats.clone();
    let timer = timer::spawn("sipreg-timer", timer_rx, move |item: ExpiryItem| {
        WorkerStats::inc(&fire_stats.events_fired);
        match fire_registry.expire(&item.aor, item.generation, timer::now_ms()) {
            Expiry::Stale => {
                WorkerStats::inc(&fire_stats.events_stale);
                None
            }
            Expiry::Gone { removed } => {
                fire_stats
                    .expirations
                    .fetch_add(removed as u64, Ordering::Relaxed);
                None
            }
            Expiry::Partial {
                removed,
                next_ms,
                generation,
            } => {
                fire_stats
                    .expirations
                    .fetch_add(removed as u64, Ordering::Relaxed);
                Some((
                    next_ms,
                    ExpiryItem {
                        aor: item.aor,
                        generation,
                    },
                ))
            }
        }
    })
    .map_err(|e| StartError::Thread("timer", e))?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let mut running = Running {
        local_addr,
        registry,
        worker_stats: Vec::new(),
        timer_stats,
        shutdown: shutdown.clone(),
        wakers: Vec::new(),
        workers: Vec::new(),
        timer: Some(timer),
        timer_tx: timer_tx.clone(),
    };
    for (i, sockets) in sockets.into_iter().enumerate() {
        let stats = Arc::new(WorkerStats::default());
        let wcfg = WorkerConfig {
            id: i as u16,
            tcp_idle_timeout_ms: u64::from(cfg.tcp_idle_timeout) * 1000,
            max_connections: MAX_CONNECTIONS_PER_WORKER,
        };
        let (worker, waker) = Worker::new(
            wcfg,
            sockets,
            registrar.clone(),
            stats.clone(),
            timer_tx.clone(),
            shutdown.clone(),
        )
        .map_err(StartError::Poll)?;
        let handle = std::thread::Builder::new()
            .name(format!("sipreg-worker-{i}"))
            .spawn(move || worker.run())
            .map_err(|e| StartError::Thread("worker", e))?;
        running.worker_stats.push(stats);
        running.wakers.push(waker);
        running.workers.push(handle);
    }
    Ok(running)
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
        let _ = self.timer_tx.send(TimerCmd::Shutdown);
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}
