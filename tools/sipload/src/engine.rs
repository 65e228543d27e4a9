//! The I/O shell: worker threads that own their devices and sockets, pace
//! flow starts (open or closed loop), batch sends and receives, match answers
//! to transactions by branch (device + generation) and CSeq, retransmit per
//! RFC 3261 §17.1.2.2 and count everything.
//!
//! Devices are split over threads by index (`idx % threads`), and over a
//! thread's sockets by local index, so one response is handled by exactly one
//! thread without any locking.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::mem;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

use sipreg::sip::{frame, scan, Frame, StartLine, Via};

use crate::cli::{Config, Load, Scenario, Transport};
use crate::flow::{Device, Kind, Leg, Outcome, Step};
use crate::mmsg::{self, Datagram, RecvMeta, BATCH};
use crate::msg::{parse_branch, Ctx, Users, Writer};
use crate::stats::{progress_line, sum_live, LiveSlot, Report, Series, Stats, Warmup};

/// RFC 3261 §17.1.1.1 timer values.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Timer F: a non-INVITE client transaction gives up after 64·T1.
const TIMER_F: Duration = Duration::from_secs(32);
/// Retransmission intervals: T1 doubling up to T2 (Timer E).
const INTERVALS: [Duration; 4] = [T1, Duration::from_secs(1), Duration::from_secs(2), T2];
/// Receive slot: larger answers are counted as truncated.
const RX_SLOT: usize = 4096;
/// How often pending legs are checked against Timer F.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Longest sleep in the loop, so counters and the stop flag stay fresh.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// Retransmission timers: one FIFO per interval. Every entry in a queue was
/// pushed with the same delay, so each queue is sorted by deadline and firing
/// is a pop from the front. An entry whose device moved on (another
/// generation) is a no-op (STYLE.md habit 9: cancel by generation).
#[derive(Default)]
struct Timers {
    queues: [VecDeque<(Instant, u32, u32)>; 4],
}

impl Timers {
    fn push(&mut self, level: usize, now: Instant, local: u32, gen: u32) {
        let level = level.min(INTERVALS.len() - 1);
        self.queues[level].push_back((now + INTERVALS[level], local, gen));
    }

    fn next_due(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|e| e.0))
            .min()
    }

    fn pop_due(&mut self, now: Instant) -> Option<(u32, u32)> {
        for q in &mut self.queues {
            if q.front().is_some_and(|e| e.0 <= now) {
                return q.pop_front().map(|(_, l, g)| (l, g));
            }
        }
        None
    }

    fn clear(&mut self) {
        for q in &mut self.queues {
            q.clear();
        }
    }
}

/// Weighted choice of flow kinds (xorshift; deterministic per thread).
struct Mix {
    cumulative: Vec<(u64, Kind)>,
    total: u64,
    state: u64,
}

impl Mix {
    fn new(weights: &[(Kind, u32)], seed: u64) -> Self {
        let mut total = 0;
        let mut cumulative = Vec::new();
        for &(k, w) in weights.iter().filter(|w| w.1 > 0) {
            total += u64::from(w);
            cumulative.push((total, k));
        }
        Mix {
            cumulative,
            total,
            state: seed | 1,
        }
    }

    fn next(&mut self) -> Kind {
        if self.cumulative.len() == 1 {
            return self.cumulative[0].1;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let r = self.state % self.total;
        self.cumulative
            .iter()
            .find(|&&(c, _)| r < c)
            .map_or(Kind::Options, |&(_, k)| k)
    }
}

struct UdpTx {
    sock: UdpSocket,
    local: SocketAddr,
    /// Queued requests back to back; `ends[i]` is where request `i` ends.
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Requests already sent from the front of the queue.
    sent: usize,
}

struct TcpConn {
    stream: TcpStream,
    local: SocketAddr,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    open: bool,
}

enum Io {
    Udp(Vec<UdpTx>),
    Tcp(Vec<TcpConn>),
}

impl Io {
    fn len(&self) -> usize {
        match self {
            Io::Udp(v) => v.len(),
            Io::Tcp(v) => v.len(),
        }
    }
}

/// How one phase starts flows.
#[derive(Clone, Copy)]
struct Phase {
    load: Load,
    /// Most flows this thread starts.
    limit: u64,
    /// No new flows after this.
    start_until: Instant,
    /// Outstanding flows are abandoned (timeouts) after this.
    hard_end: Instant,
}

struct Worker<'a> {
    cfg: &'a Config,
    /// The worker's own copy: with `--expires-until` its `expires` counts down.
    ctx: Ctx,
    tid: u32,
    threads: u32,
    devices: Vec<Device>,
    idle: VecDeque<u32>,
    io: Io,
    timers: Timers,
    stats: Stats,
    writer: Writer,
    mix: Mix,
    outstanding: usize,
    live: &'a LiveSlot,
    stop: &'a AtomicBool,
    rx: Vec<u8>,
    meta: [RecvMeta; BATCH],
    last_event: Instant,
    pollfds: Vec<libc::pollfd>,
    /// One reading of both clocks, to map kernel (CLOCK_REALTIME) receive
    /// timestamps onto `Instant`s.
    clock_base: (Instant, Duration),
}

/// Runs a load test as configured; `stop` ends the start phase early.
pub fn run(cfg: &Config, stop: &AtomicBool) -> io::Result<Report> {
    let users = match &cfg.credentials {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("reading --credentials {}: {e}", path.display()),
                )
            })?;
            Users::parse_credentials(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("--credentials {}: {e}", path.display()),
                )
            })?
        }
        None => Users::Prefix {
            prefix: cfg.user_prefix.clone(),
            password: cfg.password.clone(),
        },
    };
    let devices = users.limit().unwrap_or(cfg.devices);
    if devices > u32::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many devices",
        ));
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id()) << 32;
    let ctx = Ctx {
        users: Arc::new(users),
        domain: cfg.domain.clone(),
        transport: cfg.transport,
        run_id: (seed ^ seed >> 32) as u32,
        expires: cfg.expires,
    };

    // Open every socket before any thread starts (fail fast, naming the step).
    let threads = cfg.threads.min(devices).max(1);
    let mut ios = Vec::with_capacity(threads);
    for t in 0..threads {
        let k = cfg.sockets / threads + usize::from(t < cfg.sockets % threads);
        ios.push(open_io(cfg, k.max(1))?);
    }
    let sockets: usize = ios.iter().map(Io::len).sum();

    let live: Vec<LiveSlot> = (0..threads).map(|_| LiveSlot::default()).collect();
    let barrier = Barrier::new(threads + 1);
    let cpu0 = mmsg::process_cpu_seconds();
    let (results, warm_s) = std::thread::scope(|s| -> io::Result<_> {
        let mut handles = Vec::new();
        for (t, io) in ios.into_iter().enumerate() {
            let (ctx, live, barrier) = (&ctx, &live[t], &barrier);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("sipload-{t}"))
                    .spawn_scoped(s, move || {
                        let local: Vec<Device> = (t..devices)
                            .step_by(threads)
                            .map(|i| Device::new(i as u32))
                            .collect();
                        let mut w = Worker::new(
                            cfg,
                            ctx,
                            t as u32,
                            threads as u32,
                            local,
                            io,
                            live,
                            stop,
                            seed,
                        );
                        w.run(barrier)
                    })
                    .map_err(|e| io::Error::new(e.kind(), format!("spawning worker {t}: {e}")))?,
            );
        }
        let w0 = Instant::now();
        if cfg.scenario.needs_warmup() && !cfg.quiet {
            eprintln!("warming up: registering {devices} devices");
        }
        barrier.wait();
        let warm_s = w0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let mut last = (t0, sum_live(&live));
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            if !cfg.quiet && now - last.0 >= Duration::from_secs(1) {
                let totals = sum_live(&live);
                eprintln!("{}", progress_line(now - t0, totals, last.1, now - last.0));
                last = (now, totals);
            }
        }
        let mut results = Vec::new();
        for h in handles {
            results.push(
                h.join()
                    .map_err(|_| io::Error::other("a worker thread panicked"))?,
            );
        }
        Ok((results, warm_s))
    })?;
    let client_cpu_s = mmsg::process_cpu_seconds() - cpu0;

    let mut stats = Stats::default();
    let mut warm = Warmup::default();
    let mut t0 = None::<Instant>;
    let mut end = None::<Instant>;
    for r in &results {
        stats.merge(&r.stats);
        if let Some(w) = r.warmup {
            warm.devices += w.devices;
            warm.registered += w.registered;
        }
        t0 = Some(t0.map_or(r.t0, |t: Instant| t.min(r.t0)));
        end = Some(end.map_or(r.last_event, |e: Instant| e.max(r.last_event)));
    }
    warm.seconds = warm_s;
    let duration_s = match (t0, end) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Report {
        scenario: match &cfg.scenario {
            Scenario::Mixed(w) => format!(
                "mixed({})",
                w.iter()
                    .map(|(k, n)| format!("{}={n}", k.name()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            s => s.name().to_string(),
        },
        transport: cfg.transport.name(),
        load: match cfg.load {
            Load::Rate(r) => format!("open loop {r}/s"),
            Load::Window(w) => format!("closed loop window {w}"),
        },
        threads,
        sockets,
        mmsg: cfg.mmsg && cfg.transport == Transport::Udp,
        devices,
        duration_s,
        client_cpu_s,
        warmup: cfg.scenario.needs_warmup().then_some(warm),
        stats,
    })
}

fn open_io(cfg: &Config, k: usize) -> io::Result<Io> {
    let domain = Domain::for_address(cfg.target);
    let bind: SocketAddr = if cfg.target.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    // A non-loopback target (explicitly allowed) needs the unspecified address.
    let bind = if crate::cli::is_loopback(cfg.target.ip()) {
        bind
    } else {
        SocketAddr::new(
            if cfg.target.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            0,
        )
    };
    match cfg.transport {
        Transport::Udp => {
            let mut v = Vec::with_capacity(k);
            for i in 0..k {
                let step = |what: &str, e: io::Error| {
                    io::Error::new(
                        e.kind(),
                        format!("udp socket {i}: {what} ({}): {e}", cfg.target),
                    )
                };
                let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
                    .map_err(|e| step("socket", e))?;
                // Bigger buffers absorb bursts from a batched server; failure
                // to enlarge them is not fatal.
                let _ = s.set_recv_buffer_size(4 << 20);
                let _ = s.set_send_buffer_size(4 << 20);
                s.bind(&bind.into()).map_err(|e| step("bind", e))?;
                // Connected: the kernel skips a route lookup per datagram and
                // drops anything not from the target.
                s.connect(&cfg.target.into())
                    .map_err(|e| step("connect", e))?;
                s.set_nonblocking(true)
                    .map_err(|e| step("set_nonblocking", e))?;
                let sock: UdpSocket = s.into();
                if cfg.mmsg {
                    mmsg::enable_rx_timestamps(sock.as_raw_fd())
                        .map_err(|e| step("SO_TIMESTAMPNS", e))?;
                }
                let local = sock.local_addr().map_err(|e| step("local_addr", e))?;
                v.push(UdpTx {
                    sock,
                    local,
                    buf: Vec::with_capacity(64 * 1024),
                    ends: Vec::with_capacity(1024),
                    sent: 0,
                });
            }
            Ok(Io::Udp(v))
        }
        Transport::Tcp => {
            let mut v = Vec::with_capacity(k);
            for i in 0..k {
                let step = |what: &str, e: io::Error| {
                    io::Error::new(
                        e.kind(),
                        format!("tcp connection {i}: {what} ({}): {e}", cfg.target),
                    )
                };
                let stream = TcpStream::connect_timeout(&cfg.target, Duration::from_secs(5))
                    .map_err(|e| step("connect", e))?;
                stream
                    .set_nodelay(true)
                    .map_err(|e| step("set_nodelay", e))?;
                stream
                    .set_nonblocking(true)
                    .map_err(|e| step("set_nonblocking", e))?;
                let local = stream.local_addr().map_err(|e| step("local_addr", e))?;
                v.push(TcpConn {
                    stream,
                    local,
                    out: Vec::with_capacity(64 * 1024),
                    out_pos: 0,
                    inbuf: Vec::with_capacity(128 * 1024),
                    open: true,
                });
            }
            Ok(Io::Tcp(v))
        }
    }
}

/// The Expires that makes a binding registered at `now` end at `until` (Unix
/// time): whole seconds rounded up, so every binding of a `--expires-until` run
/// ends in the same second, `[until, until + 1 s)` on the registrar's clock
/// (plus the request's transit). At least 1: 0 would unregister.
pub fn expires_until(until: Duration, now: SystemTime) -> u32 {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let left = until.saturating_sub(now).as_secs_f64().ceil();
    (left as u32).max(1)
}

/// Thread `tid`'s share of `total` when split over `threads`.
fn share(total: u64, tid: u64, threads: u64) -> u64 {
    total / threads + u64::from(tid < total % threads)
}

/// What one worker hands back.
struct WorkerResult {
    stats: Stats,
    warmup: Option<Warmup>,
    t0: Instant,
    last_event: Instant,
}

impl<'a> Worker<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: &'a Config,
        ctx: &'a Ctx,
        tid: u32,
        threads: u32,
        devices: Vec<Device>,
        io: Io,
        live: &'a LiveSlot,
        stop: &'a AtomicBool,
        seed: u64,
    ) -> Self {
        let idle = (0..devices.len() as u32).collect();
        Worker {
            cfg,
            ctx: ctx.clone(),
            tid,
            threads,
            devices,
            idle,
            io,
            timers: Timers::default(),
            stats: Stats::default(),
            writer: Writer::default(),
            mix: Mix::new(
                &cfg.scenario.weights(),
                seed ^ (u64::from(tid) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            outstanding: 0,
            live,
            stop,
            rx: vec![0; BATCH * RX_SLOT],
            meta: [RecvMeta::default(); BATCH],
            last_event: Instant::now(),
            pollfds: Vec::new(),
            clock_base: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
        }
    }

    fn share(&self, total: u64) -> u64 {
        share(total, u64::from(self.tid), u64::from(self.threads))
    }

    fn run(&mut self, barrier: &Barrier) -> WorkerResult {
        let cfg = self.cfg;
        let (tid, threads) = (u64::from(self.tid), u64::from(self.threads));
        let window = |w: usize| Load::Window((share(w as u64, tid, threads) as usize).max(1));
        let mut warmup = None;
        if cfg.scenario.needs_warmup() {
            // Register every device once, unmeasured, so the measured phase is
            // refreshes (RFC 3261 §10.2.1: a refresh reuses Call-ID, CSeq + 1).
            let saved = mem::replace(&mut self.mix, Mix::new(&[(Kind::Register, 1)], 1));
            let now = Instant::now();
            let w = match cfg.load {
                Load::Window(w) => w,
                Load::Rate(_) => 256 * self.threads as usize,
            };
            let phase = Phase {
                load: window(w),
                limit: self.devices.len() as u64,
                start_until: now + cfg.warmup_timeout,
                hard_end: now + cfg.warmup_timeout + cfg.drain,
            };
            self.run_phase(phase, now);
            let s = mem::take(&mut self.stats);
            warmup = Some(Warmup {
                devices: self.devices.len() as u64,
                registered: s.completed,
                seconds: 0.0,
            });
            self.mix = saved;
            self.live.publish(&self.stats);
        }
        barrier.wait();
        self.stats.series = cfg.series.map(Series::new);
        let t0 = Instant::now();
        let load = match cfg.load {
            Load::Rate(r) => Load::Rate(r / f64::from(self.threads)),
            Load::Window(w) => window(w),
        };
        let phase = Phase {
            load,
            limit: cfg.count.map_or(u64::MAX, |c| self.share(c)),
            start_until: t0 + cfg.duration,
            hard_end: t0 + cfg.duration + cfg.drain,
        };
        self.last_event = t0;
        self.run_phase(phase, t0);
        self.live.publish(&self.stats);
        WorkerResult {
            stats: mem::take(&mut self.stats),
            warmup,
            t0,
            last_event: self.last_event,
        }
    }

    fn run_phase(&mut self, phase: Phase, t0: Instant) {
        let mut attempts: u64 = 0;
        let mut next_sweep = t0 + SWEEP_EVERY;
        loop {
            let now = Instant::now();
            self.receive(now);
            self.fire_timers(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
            // Reading a large batch takes a while: new flows are stamped with
            // the time they are actually sent, not the time the loop woke.
            let now = Instant::now();
            let starting = now < phase.start_until
                && attempts < phase.limit
                && !self.stop.load(Ordering::Relaxed);
            if starting {
                match phase.load {
                    Load::Rate(r) => {
                        let due = ((now - t0).as_secs_f64() * r) as u64 + 1;
                        let due = due.min(phase.limit);
                        while attempts < due {
                            attempts += 1;
                            if !self.start_flow(now) {
                                self.stats.skipped_starts += 1;
                            }
                        }
                    }
                    Load::Window(w) => {
                        while self.outstanding < w && attempts < phase.limit && self.start_flow(now)
                        {
                            attempts += 1;
                        }
                    }
                }
            }
            self.flush();
            self.live.publish(&self.stats);

            if !starting || attempts >= phase.limit {
                if self.outstanding == 0 {
                    break;
                }
                if now >= phase.hard_end {
                    self.abandon_all();
                    break;
                }
            }

            // Sleep until the next start, timer or phase edge, or input.
            let mut until = now + MAX_WAIT;
            if let Some(b) = self.cfg.batch {
                until = until.min(now + b);
            }
            if starting {
                if let (Load::Rate(r), None) = (phase.load, self.cfg.batch) {
                    let next = t0 + Duration::from_secs_f64(attempts as f64 / r);
                    until = until.min(next.max(now + self.cfg.tick));
                }
                until = until.min(phase.start_until);
            } else {
                until = until.min(phase.hard_end);
            }
            if let Some(t) = self.timers.next_due() {
                until = until.min(t);
            }
            let wait = until.saturating_duration_since(now);
            if !wait.is_zero() {
                self.wait(wait);
            }
        }
        self.timers.clear();
    }

    /// A kernel receive time as an `Instant`, never later than `now` (the
    /// datagram was read at `now`) — a clock step during the run cannot
    /// produce negative latencies or times in the future.
    fn instant_of(&self, realtime: Duration, now: Instant) -> Instant {
        let (i0, r0) = self.clock_base;
        let t = if realtime >= r0 {
            i0 + (realtime - r0)
        } else {
            i0.checked_sub(r0 - realtime).unwrap_or(i0)
        };
        t.min(now)
    }

    /// Starts a flow on the next idle device; `false` when all are busy.
    fn start_flow(&mut self, now: Instant) -> bool {
        let Some(l) = self.idle.pop_front() else {
            return false;
        };
        let kind = self.mix.next();
        self.devices[l as usize].begin(kind, now);
        self.stats.started += 1;
        self.outstanding += 1;
        self.last_event = now;
        self.send_leg(l, now, false);
        true
    }

    /// Queues the request of device `l`'s current leg and, over UDP, arms its
    /// retransmission timer.
    fn send_leg(&mut self, l: u32, now: Instant, retransmission: bool) {
        if let Some(until) = self.cfg.expires_until {
            self.ctx.expires = expires_until(until, SystemTime::now());
        }
        let dev = &self.devices[l as usize];
        let n = self.io.len();
        let sock = l as usize % n;
        match &mut self.io {
            Io::Udp(socks) => {
                let s = &mut socks[sock];
                self.writer
                    .write_request(&mut s.buf, &self.ctx, dev, s.local);
                s.ends.push(s.buf.len());
                let level = dev.pending.map_or(0, |p| usize::from(p.retrans));
                // RFC 3261 §17.1.2.2 Timer E: T1, then doubling up to T2.
                self.timers.push(level, now, l, dev.gen);
            }
            Io::Tcp(conns) => {
                let c = &mut conns[sock];
                self.writer
                    .write_request(&mut c.out, &self.ctx, dev, c.local);
            }
        }
        if retransmission {
            self.stats.retransmissions += 1;
        } else {
            self.stats.messages_sent += 1;
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((l, gen)) = self.timers.pop_due(now) {
            let dev = &mut self.devices[l as usize];
            let Some(p) = dev.pending.as_mut() else {
                continue;
            };
            if dev.gen != gen {
                continue;
            }
            if now - p.leg_start >= TIMER_F {
                // No more retransmissions; the sweep declares the timeout.
                continue;
            }
            p.retrans = p.retrans.saturating_add(1);
            self.send_leg(l, now, true);
        }
    }

    /// Timer F (64·T1) for every transport: legs without a final answer.
    fn sweep(&mut self, now: Instant) {
        if self.outstanding == 0 {
            return;
        }
        for l in 0..self.devices.len() {
            let dev = &mut self.devices[l];
            if dev.pending.is_some_and(|p| now - p.leg_start >= TIMER_F) {
                dev.abandon();
                self.stats.timeouts += 1;
                self.outstanding -= 1;
                self.idle.push_back(l as u32);
            }
        }
    }

    /// The run is over: whatever is still outstanding timed out.
    fn abandon_all(&mut self) {
        for l in 0..self.devices.len() {
            let dev = &mut self.devices[l];
            if dev.pending.is_some() {
                dev.abandon();
                self.stats.timeouts += 1;
                self.idle.push_back(l as u32);
            }
        }
        self.outstanding = 0;
    }

    fn handle_response(&mut self, buf: &[u8], now: Instant) {
        let Ok(msg) = scan(buf) else {
            self.stats.bad_responses += 1;
            return;
        };
        let StartLine::Response(status) = msg.start else {
            // A request from the server (e.g. a GB28181 query): not ours to answer.
            self.stats.bad_responses += 1;
            return;
        };
        // RFC 3261 §17.1.3: the top Via's branch names the client transaction.
        let Some((idx, gen)) = msg
            .top_via()
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch())
            .and_then(parse_branch)
        else {
            self.stats.bad_responses += 1;
            return;
        };
        if idx % self.threads != self.tid {
            self.stats.bad_responses += 1;
            return;
        }
        let l = idx / self.threads;
        let Some(dev) = self.devices.get_mut(l as usize) else {
            self.stats.bad_responses += 1;
            return;
        };
        let Some(p) = dev.pending else {
            self.stats.duplicates += 1;
            return;
        };
        if dev.gen != gen || msg.cseq().seq != dev.cseq {
            // An answer to an earlier leg's retransmission.
            self.stats.duplicates += 1;
            return;
        }
        let code = status.code;
        self.stats.status(code);
        if code < 200 {
            return;
        }
        let leg_latency = now.saturating_duration_since(p.leg_start);
        self.stats.leg_done(p.leg, leg_latency);
        // The next leg starts now (the loop's clock), not at the receive stamp.
        let send_at = Instant::now().max(now);
        match dev.on_final(code, &msg, &self.ctx.users, send_at) {
            Step::Next(next) => {
                if let Some(pp) = dev.pending.as_mut() {
                    pp.waited = p.waited + leg_latency;
                }
                if next == Leg::Auth && p.leg != Leg::Challenge {
                    self.stats.rechallenges += 1;
                }
                self.send_leg(l, send_at, false);
            }
            Step::Done(outcome) => {
                match outcome {
                    Outcome::Ok => {
                        let latency = p.waited + leg_latency;
                        self.stats.flow_ok(p.kind, latency);
                        if let Some(series) = self.stats.series.as_mut() {
                            series.record(p.flow_start, latency);
                        }
                    }
                    Outcome::Failed(f) => self.stats.flow_failed(f),
                }
                self.outstanding -= 1;
                self.idle.push_back(l);
                self.last_event = now;
            }
        }
    }

    fn receive(&mut self, now: Instant) {
        match &self.io {
            Io::Udp(_) => self.receive_udp(now),
            Io::Tcp(_) => self.receive_tcp(now),
        }
    }

    fn receive_udp(&mut self, now: Instant) {
        let mut rx = mem::take(&mut self.rx);
        let n = self.io.len();
        for i in 0..n {
            loop {
                let Io::Udp(socks) = &self.io else { return };
                let sock = &socks[i].sock;
                let got = if self.cfg.mmsg {
                    mmsg::recv_batch(sock.as_raw_fd(), &mut rx, RX_SLOT, &mut self.meta)
                } else {
                    sock.recv(&mut rx[..RX_SLOT]).map(|len| {
                        self.meta[0] = RecvMeta {
                            len,
                            truncated: false,
                            from: None,
                            rx_time: None,
                        };
                        1
                    })
                };
                match got {
                    Ok(k) => {
                        for j in 0..k {
                            let m = self.meta[j];
                            if m.truncated {
                                self.stats.bad_responses += 1;
                                continue;
                            }
                            let off = j * RX_SLOT;
                            let at = m.rx_time.map_or(now, |t| self.instant_of(t, now));
                            self.handle_response(&rx[off..off + m.len], at);
                        }
                        if k < BATCH && self.cfg.mmsg {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // e.g. ECONNREFUSED from an ICMP port-unreachable.
                        self.stats.io_errors += 1;
                        break;
                    }
                }
            }
        }
        self.rx = rx;
    }

    fn receive_tcp(&mut self, now: Instant) {
        let n = self.io.len();
        for i in 0..n {
            let Io::Tcp(conns) = &mut self.io else { return };
            let c = &mut conns[i];
            if !c.open {
                continue;
            }
            let mut inbuf = mem::take(&mut c.inbuf);
            let mut closed = false;
            loop {
                let len = inbuf.len();
                if inbuf.capacity() - len < 16 * 1024 {
                    inbuf.reserve(64 * 1024);
                }
                let cap = inbuf.capacity();
                inbuf.resize(cap, 0);
                match c.stream.read(&mut inbuf[len..]) {
                    Ok(0) => {
                        inbuf.truncate(len);
                        closed = true;
                        break;
                    }
                    Ok(k) => inbuf.truncate(len + k),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        inbuf.truncate(len);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => inbuf.truncate(len),
                    Err(_) => {
                        inbuf.truncate(len);
                        closed = true;
                        break;
                    }
                }
            }
            // RFC 3261 §18.3: Content-Length frames messages on a stream.
            let mut pos = 0;
            let mut broken = false;
            while pos < inbuf.len() {
                match frame(&inbuf[pos..]) {
                    Ok(Frame::Message(k)) => {
                        self.handle_response(&inbuf[pos..pos + k], now);
                        pos += k;
                    }
                    Ok(Frame::Ping(k) | Frame::Skip(k)) => pos += k,
                    Ok(Frame::NeedMore) => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            inbuf.drain(..pos);
            let Io::Tcp(conns) = &mut self.io else { return };
            let c = &mut conns[i];
            c.inbuf = inbuf;
            if closed || broken {
                c.open = false;
                self.stats.io_errors += 1;
            }
        }
    }

    fn flush(&mut self) {
        let mmsg_on = self.cfg.mmsg;
        match &mut self.io {
            Io::Udp(socks) => {
                for s in socks.iter_mut() {
                    self.stats.io_errors += flush_udp(s, mmsg_on);
                }
            }
            Io::Tcp(conns) => {
                for c in conns.iter_mut() {
                    if !c.open {
                        c.out.clear();
                        c.out_pos = 0;
                        continue;
                    }
                    while c.out_pos < c.out.len() {
                        match c.stream.write(&c.out[c.out_pos..]) {
                            Ok(k) => c.out_pos += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                c.open = false;
                                self.stats.io_errors += 1;
                                break;
                            }
                        }
                    }
                    if c.out_pos == c.out.len() {
                        c.out.clear();
                        c.out_pos = 0;
                    }
                }
            }
        }
    }

    fn wait(&mut self, timeout: Duration) {
        self.pollfds.clear();
        // Batch mode sleeps through arrivals (their kernel timestamps keep the
        // latency exact) and only wakes early to finish a blocked send.
        let batch = self.cfg.batch.is_some() && self.cfg.mmsg;
        match &self.io {
            Io::Udp(socks) => {
                for s in socks {
                    let mut events = if batch { 0 } else { libc::POLLIN };
                    if s.sent < s.ends.len() {
                        events |= libc::POLLOUT;
                    }
                    self.pollfds.push(libc::pollfd {
                        fd: s.sock.as_raw_fd(),
                        events,
                        revents: 0,
                    });
                }
            }
            Io::Tcp(conns) => {
                for c in conns.iter().filter(|c| c.open) {
                    let mut events = libc::POLLIN;
                    if c.out_pos < c.out.len() {
                        events |= libc::POLLOUT;
                    }
                    self.pollfds.push(libc::pollfd {
                        fd: c.stream.as_raw_fd(),
                        events,
                        revents: 0,
                    });
                }
            }
        }
        self.pollfds.retain(|p| p.events != 0);
        if self.pollfds.is_empty() {
            std::thread::sleep(timeout);
        } else if mmsg::poll(&mut self.pollfds, timeout).is_err() {
            self.stats.io_errors += 1;
        }
    }
}

/// Sends what `s` has queued; returns how many send errors occurred.
/// Requests that would block stay queued for the next round.
fn flush_udp(s: &mut UdpTx, use_mmsg: bool) -> u64 {
    let mut errors = 0;
    let fd = s.sock.as_raw_fd();
    let start_of = |ends: &[usize], i: usize| if i == 0 { 0 } else { ends[i - 1] };
    // A failed send (a queued ICMP error reported on this call) is retried
    // once before the request is dropped; it will be retransmitted anyway.
    let mut retried = false;
    while s.sent < s.ends.len() {
        let result = if use_mmsg {
            let n = (s.ends.len() - s.sent).min(BATCH);
            let mut dg = [Datagram {
                data: &[],
                to: None,
            }; BATCH];
            for (j, d) in dg.iter_mut().enumerate().take(n) {
                let i = s.sent + j;
                d.data = &s.buf[start_of(&s.ends, i)..s.ends[i]];
            }
            mmsg::send_batch(fd, &dg[..n])
        } else {
            let i = s.sent;
            s.sock
                .send(&s.buf[start_of(&s.ends, i)..s.ends[i]])
                .map(|_| 1)
        };
        match result {
            Ok(0) => break,
            Ok(k) => {
                s.sent += k;
                retried = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                errors += 1;
                if retried {
                    s.sent += 1;
                }
                retried = !retried;
            }
        }
    }
    if s.sent == s.ends.len() {
        s.buf.clear();
        s.ends.clear();
        s.sent = 0;
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_until_counts_down_to_one_second() {
        let t = |s: f64| UNIX_EPOCH + Duration::from_secs_f64(s);
        let until = Duration::from_secs(1_000_060);
        assert_eq!(expires_until(until, t(1_000_000.0)), 60);
        // rounded up: the binding ends in [until, until + 1 s)
        assert_eq!(expires_until(until, t(1_000_000.2)), 60);
        assert_eq!(expires_until(until, t(1_000_000.9)), 60);
        assert_eq!(expires_until(until, t(1_000_001.0)), 59);
        // past the deadline: 1, never 0 (which would unregister)
        assert_eq!(expires_until(until, t(1_000_100.0)), 1);
    }

    #[test]
    fn timers_fire_in_deadline_order_per_level() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.push(0, now, 1, 1);
        t.push(3, now, 2, 1);
        t.push(0, now + Duration::from_millis(10), 3, 1);
        t.push(9, now, 4, 1); // clamps to T2
        assert_eq!(t.next_due(), Some(now + T1));
        assert_eq!(t.pop_due(now + Duration::from_millis(499)), None);
        assert_eq!(t.pop_due(now + T1), Some((1, 1)));
        assert_eq!(t.pop_due(now + T1), None);
        assert_eq!(t.pop_due(now + Duration::from_millis(510)), Some((3, 1)));
        assert_eq!(t.next_due(), Some(now + T2));
        assert_eq!(t.pop_due(now + T2), Some((2, 1)));
        assert_eq!(t.pop_due(now + T2), Some((4, 1)));
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn retransmission_schedule_stays_inside_timer_f() {
        // T1, 2T1, 4T1, then T2 repeatedly (0.5, 1.5, 3.5, 7.5, …, 31.5 s):
        // ten retransmissions fit before Timer F at 64·T1.
        let mut elapsed = Duration::ZERO;
        let mut retransmissions = 0;
        loop {
            elapsed += INTERVALS[retransmissions.min(3)];
            if elapsed >= TIMER_F {
                break;
            }
            retransmissions += 1;
        }
        assert_eq!(retransmissions, 10);
        assert_eq!(elapsed - INTERVALS[3], Duration::from_millis(31_500));
    }

    #[test]
    fn mix_follows_weights() {
        let mut m = Mix::new(
            &[(Kind::Register, 1), (Kind::Refresh, 8), (Kind::Options, 1)],
            42,
        );
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            match m.next() {
                Kind::Register => counts[0] += 1,
                Kind::Refresh => counts[1] += 1,
                Kind::Options => counts[2] += 1,
                k => panic!("unexpected {k:?}"),
            }
        }
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((78_000..82_000).contains(&counts[1]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
        let mut one = Mix::new(&[(Kind::Options, 0), (Kind::Keepalive, 3)], 1);
        assert_eq!(one.next(), Kind::Keepalive);
    }
}
