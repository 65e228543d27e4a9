//! The I/O shell: one mio event loop per worker thread, owning that worker's
//! SO_REUSEPORT UDP socket, TCP listener and TCP connections. It reads, hands
//! bytes to the sans-IO [`Registrar`], sends what comes back, and forwards
//! expiry timers to the timer thread. Nothing here knows SIP semantics.

mod mmsg;
pub mod socket;
mod tcp;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
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

const UDP: Token = Token(0);
const LISTENER: Token = Token(1);
const WAKER: Token = Token(2);
/// Connection tokens start here.
const FIRST_CONN: usize = 3;

/// Settings a worker needs beyond the registrar.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub id: u16,
    pub tcp_idle_timeout_ms: u64,
    /// Most simultaneous TCP connections this worker accepts.
    pub max_connections: usize,
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
    pub workers: Vec<(Sender<WorkerCmd>, Arc<Waker>)>,
}

impl Outbox for WorkerOutbox {
    fn send(&self, dest: Dest, bytes: Vec<u8>) {
        let index = match dest {
            Dest::Tcp(c) => usize::from(c.worker),
            Dest::Udp(_) => 0,
        };
        let Some((tx, waker)) = self.workers.get(index) else {
            return;
        };
        match tx.try_send(WorkerCmd { dest, bytes }) {
            Ok(()) => {
                let _ = waker.wake();
            }
            Err(e) => log::warn!("worker {index} command queue: {e}; request dropped"),
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
        Ok((
            Worker {
                cfg,
                poll,
                udp: sockets.udp,
                listener: sockets.tcp,
                conns: Connections::new(FIRST_CONN, cfg.max_connections),
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
            },
            waker,
        ))
    }

    /// Runs until the shutdown flag is set.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut last_sweep = now_ms();
        while !self.shutdown.load(Ordering::Acquire) {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.cfg.id);
                    break;
                }
            }
            if events.is_empty() {
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
            let now = now_ms();
            if now.saturating_sub(last_sweep) >= 1000 {
                last_sweep = now;
                let closed =
                    self.conns
                        .close_idle(now, self.cfg.tcp_idle_timeout_ms, self.poll.registry());
                self.stats
                    .tcp_closed_idle
                    .fetch_add(closed as u64, Ordering::Relaxed);
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
            self.tx.flush(fd);
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

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
                    if self
                        .conns
                        .insert(stream, peer, id, now_ms(), self.poll.registry())
                        .is_some()
                    {
                        WorkerStats::inc(&self.stats.tcp_accepted);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("accept: {e}");
                    return;
                }
            }
        }
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
        // Blocks only if the timer thread is far behind: back-pressure beats
        // losing an expiry.
        let cmd = TimerCmd::At {
            deadline_ms: t.deadline_ms,
            item: t.event,
        };
        if timers.send(cmd).is_err() {
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
