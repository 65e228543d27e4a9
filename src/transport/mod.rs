//! The I/O shell: one mio event loop per worker thread, owning that worker's
//! SO_REUSEPORT UDP socket, TCP listener and TCP connections. It reads, hands
//! bytes to the sans-IO [`Registrar`], sends what comes back, and forwards
//! expiry timers to the timer thread. Nothing here knows SIP semantics.
//!
//! Every queue here has a bound and a counter (`/metrics`): the kernel's UDP
//! receive buffer (`--udp-rcvbuf`, `udp_rcvbuf_bytes`), the TCP connections
//! and their buffers (see [`tcp`]), the per-worker command queue for
//! server-originated requests ([`COMMAND_QUEUE`], `worker_commands_dropped_total`)
//! and the timer queue, where a full queue makes the worker wait rather than
//! lose an expiry (`timer_queue_waits_total`).

mod mmsg;
pub mod socket;
mod tcp;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::gb28181::{Dest, Outbox};
use crate::registrar::limits::RateLimiter;
use crate::registrar::txcache::TxCache;
use crate::registrar::{Handled, Inbound, Now, Output, Registrar, TimerEvent, WorkerCtx};
use crate::registry::{ConnRef, Transport};
use crate::stats::WorkerStats;
use crate::timer::{now_ms, TimerCmd};
use socket::WorkerSockets;
use tcp::Connections;
pub use tcp::Limits as TcpLimits;

const UDP: Token = Token(0);
const LISTENER: Token = Token(1);
const WAKER: Token = Token(2);
/// Connection tokens start here.
const FIRST_CONN: usize = 3;
/// Connections accepted per wake-up before the worker serves its other
/// sockets; the rest of the backlog is accepted on the next loop turn, so a
/// connection flood cannot starve UDP.
const ACCEPT_BUDGET: usize = 128;
/// How often idle and slowloris connections are looked for.
const SWEEP_INTERVAL_MS: u64 = 1000;

/// Settings a worker needs beyond the registrar.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub id: u16,
    /// `--tcp-max-connections`, `--tcp-max-per-source` and the TCP timeouts.
    pub tcp: TcpLimits,
    /// `--rate-limit` requests per second per source IP (0: off) and burst.
    pub rate_limit: u32,
    pub rate_burst: u32,
}

/// A worker thread's whole state.
pub struct Worker {
    cfg: WorkerConfig,
    poll: Poll,
    udp: mio::net::UdpSocket,
    listener: mio::net::TcpListener,
    conns: Connections,
    registrar: Arc<Registrar>,
    stats: Arc<WorkerStats>,
    transactions: TxCache,
    limiter: Option<RateLimiter>,
    out: Output,
    rx: mmsg::RxBatch,
    tx: mmsg::TxBatch,
    timers: Sender<TimerCmd<TimerEvent>>,
    commands: Receiver<WorkerCmd>,
    shutdown: Arc<AtomicBool>,
    /// The listener may hold connections not yet accepted (budget spent).
    accept_pending: bool,
    /// An accept failed for lack of descriptors or memory (logged once).
    accept_failed: bool,
}

/// Bytes another thread (the GB28181 platform) wants sent on this worker's
/// socket or one of its connections.
#[derive(Debug)]
pub struct WorkerCmd {
    pub dest: Dest,
    pub bytes: Vec<u8>,
}

/// Commands a worker may have queued before others wait (bounded, counted).
pub const COMMAND_QUEUE: usize = 4096;

/// Routes server-originated requests to the worker owning each flow: a TCP
/// connection's own worker, or worker 0 for UDP (every worker's socket is
/// bound to the same address, so any of them sends from the right port).
pub struct WorkerOutbox {
    /// Each worker's command queue (bounded by [`COMMAND_QUEUE`]), its waker,
    /// and its counters (for the drops).
    pub workers: Vec<(Sender<WorkerCmd>, Arc<Waker>, Arc<WorkerStats>)>,
}

impl Outbox for WorkerOutbox {
    fn send(&self, dest: Dest, bytes: Vec<u8>) {
        let index = match dest {
            Dest::Tcp(c) => usize::from(c.worker),
            Dest::Udp(_) => 0,
        };
        let Some((tx, waker, stats)) = self.workers.get(index) else {
            return;
        };
        match tx.try_send(WorkerCmd { dest, bytes }) {
            Ok(()) => {
                let _ = waker.wake();
            }
            Err(e) => {
                // Counted, and logged only the first time: a full queue
                // under a flood would otherwise log once per request.
                if stats.commands_dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    log::warn!(
                        "worker {index} command queue: {e}; request dropped \
                         (further drops counted in sipreg_worker_commands_dropped_total)"
                    );
                }
            }
        }
    }
}

/// Unique connection ids across workers (tokens are reused, ids never).
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl Worker {
    /// Registers the sockets with a fresh poll; returns the worker and a waker
    /// that interrupts its wait (for shutdown).
    pub fn new(
        cfg: WorkerConfig,
        mut sockets: WorkerSockets,
        registrar: Arc<Registrar>,
        stats: Arc<WorkerStats>,
        timers: Sender<TimerCmd<TimerEvent>>,
        commands: Receiver<WorkerCmd>,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut sockets.udp, UDP, Interest::READABLE)?;
        poll.registry()
            .register(&mut sockets.tcp, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        stats
            .udp_rcvbuf
            .store(sockets.udp_rcvbuf as u64, Ordering::Relaxed);
        Ok((
            Worker {
                cfg,
                poll,
                udp: sockets.udp,
                listener: sockets.tcp,
                conns: Connections::new(FIRST_CONN, cfg.tcp, stats.clone()),
                registrar,
                stats,
                transactions: TxCache::new(),
                limiter: (cfg.rate_limit > 0)
                    .then(|| RateLimiter::new(cfg.rate_limit, cfg.rate_burst)),
                out: Output::default(),
                rx: mmsg::RxBatch::new(),
                tx: mmsg::TxBatch::default(),
                timers,
                commands,
                shutdown,
                accept_pending: false,
                accept_failed: false,
            },
            waker,
        ))
    }

    /// Runs until the shutdown flag is set.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut last_sweep = now_ms();
        while !self.shutdown.load(Ordering::Acquire) {
            // With connections left in the backlog, only look for events.
            let wait = if self.accept_pending {
                Duration::ZERO
            } else {
                Duration::from_millis(500)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.cfg.id);
                    break;
                }
            }
            if events.is_empty() && !self.accept_pending {
                // Belt and braces for the edge-triggered batch reads: a quiet
                // interval re-checks the UDP queue once.
                self.drain_udp();
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.drain_udp(),
                    LISTENER => self.accept(),
                    WAKER => self.run_commands(),
                    token => self.conn_event(token, ev.is_readable(), ev.is_writable()),
                }
            }
            if self.accept_pending {
                self.accept();
            }
            let now = now_ms();
            if now.saturating_sub(last_sweep) >= SWEEP_INTERVAL_MS {
                last_sweep = now;
                self.conns.sweep(now, self.poll.registry());
                self.accept();
            }
        }
        log::debug!("worker {} stopped", self.cfg.id);
    }

    /// Reads every queued datagram (STYLE habit 1: until WouldBlock).
    /// Reads every queued datagram in `recvmmsg` batches and sends the answers
    /// of each batch with one `sendmmsg`. mio registers sockets edge-triggered
    /// and every datagram queued later raises a new edge, so a batch shorter
    /// than `BATCH` means the queue was empty: no extra call just to see
    /// `EAGAIN` (STYLE habit 1, one system call cheaper per wake-up).
    fn drain_udp(&mut self) {
        let fd = self.udp.as_raw_fd();
        loop {
            let n = match self.rx.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    log::trace!("udp recv: {e}");
                    continue;
                }
            };
            for i in 0..n {
                let (bytes, from) = self.rx.get(i);
                let Some(source) = from else {
                    continue;
                };
                let inb = Inbound {
                    bytes,
                    source,
                    transport: Transport::Udp,
                    conn: None,
                };
                let mut ctx = WorkerCtx {
                    stats: &self.stats,
                    transactions: &mut self.transactions,
                    limiter: self.limiter.as_mut(),
                };
                let handled = process(&self.registrar, &mut ctx, &mut self.out, &self.timers, &inb);
                if let Handled::Reply(_) = handled {
                    self.tx.push(&self.out.reply, source);
                }
            }
            let failed = self.tx.flush(fd);
            if failed > 0 {
                self.stats
                    .udp_send_errors
                    .fetch_add(failed as u64, Ordering::Relaxed);
            }
            if n < mmsg::BATCH {
                return;
            }
        }
    }

    fn run_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd.dest {
                Dest::Udp(to) => {
                    if let Err(e) = self.udp.send_to(&cmd.bytes, to) {
                        log::debug!("udp send to {to}: {e}");
                    }
                }
                Dest::Tcp(conn) => {
                    let token = Token(conn.token as usize);
                    if !self
                        .conns
                        .send(token, conn.id, &cmd.bytes, self.poll.registry())
                    {
                        log::debug!("connection {} gone; request dropped", conn.id);
                    }
                }
            }
        }
    }

    /// Accepts up to [`ACCEPT_BUDGET`] connections. Connections over a cap
    /// are accepted and closed at once (counted in `tcp_rejected_total`):
    /// leaving them in the backlog would fill it, and the well-behaved peers
    /// behind them would time out instead.
    fn accept(&mut self) {
        self.accept_pending = false;
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
                    let _ = self
                        .conns
                        .insert(stream, peer, id, now_ms(), self.poll.registry());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the sweep retries once a second
                    // (the edge has been consumed, so no event would). The
                    // caps cannot refuse what cannot be accepted, so the
                    // operator hears of it once.
                    if !self.accept_failed {
                        self.accept_failed = true;
                        log::warn!(
                            "worker {}: cannot accept TCP connections: {e} \
                             (is the open-file limit below --threads x --tcp-max-connections?)",
                            self.cfg.id
                        );
                    }
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    fn conn_event(&mut self, token: Token, readable: bool, writable: bool) {
        let registry = self.poll.registry();
        if writable {
            self.conns.flush(token, registry);
        }
        if !readable {
            return;
        }
        let worker = self.cfg.id;
        let (registrar, stats, timers) = (&self.registrar, &self.stats, &self.timers);
        let (transactions, out) = (&mut self.transactions, &mut self.out);
        let limiter = &mut self.limiter;
        self.conns.read(
            token,
            now_ms(),
            registry,
            |bytes, peer, (token, id), wbuf| {
                let inb = Inbound {
                    bytes,
                    source: peer,
                    transport: Transport::Tcp,
                    conn: Some(ConnRef { worker, token, id }),
                };
                let mut ctx = WorkerCtx {
                    stats,
                    transactions,
                    limiter: limiter.as_mut(),
                };
                if let Handled::Reply(_) = process(registrar, &mut ctx, out, timers, &inb) {
                    wbuf.extend_from_slice(&out.reply);
                }
            },
        );
    }
}

/// Runs one message through the registrar, counts the result and forwards the
/// expiry timers it produced. Shared by the UDP and TCP paths.
fn process(
    registrar: &Registrar,
    ctx: &mut WorkerCtx<'_>,
    out: &mut Output,
    timers: &Sender<TimerCmd<TimerEvent>>,
    inb: &Inbound<'_>,
) -> Handled {
    let handled = registrar.handle(inb, now(), ctx, out);
    let stats = ctx.stats;
    match handled {
        Handled::Reply(code) => stats.response(code),
        Handled::Dropped(why) => stats.drop(why),
        Handled::Absorbed => {}
    }
    for t in out.timers.drain(..) {
        let cmd = TimerCmd::At {
            deadline_ms: t.deadline_ms,
            item: t.event,
        };
        // Waits only if the timer thread is far behind: back-pressure beats
        // losing an expiry, and the wait is counted.
        let sent = match timers.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(cmd)) => {
                WorkerStats::inc(&stats.timer_queue_waits);
                timers.send(cmd).map_err(|_| ())
            }
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        if sent.is_err() {
            log::warn!("timer thread gone; timer not scheduled");
        }
    }
    handled
}

fn now() -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Now {
        mono_ms: now_ms(),
        unix_secs: wall.as_secs(),
        unix_millis: wall.subsec_millis() as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_command_queue_drops_and_counts() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let stats = Arc::new(WorkerStats::default());
        let (tx, rx) = crossbeam_channel::bounded(2);
        let outbox = WorkerOutbox {
            workers: vec![(tx, waker, stats.clone())],
        };
        let to = Dest::Udp("127.0.0.1:5060".parse().unwrap());
        for _ in 0..5 {
            outbox.send(to, b"MESSAGE".to_vec());
        }
        assert_eq!(rx.len(), 2, "the queue holds its bound");
        assert_eq!(crate::stats::read(&stats.commands_dropped), 3);
        // A destination on a worker that does not exist is ignored, not a panic.
        let far = ConnRef {
            worker: 9,
            token: 3,
            id: 1,
        };
        outbox.send(Dest::Tcp(far), Vec::new());
        assert_eq!(crate::stats::read(&stats.commands_dropped), 3);
    }
}
