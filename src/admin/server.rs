//! The admin thread: one `mio` loop owning the `--http` listener and its
//! connections. It frames requests with [`http::frame`], answers them with
//! [`api::handle`] and writes the answers back, all non-blocking.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (beyond that a new one gets
//! a 503 and is closed), one request processed at a time per connection (the
//! next pipelined one waits until the previous answer is written, so a client
//! that does not read its answers stops being read from), head and body
//! limits from [`http`], and connections closed when idle or when a request
//! takes too long to arrive.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::api::{self, reason, ApiError};
use super::http::{self, FrameError, Framed, Framing};
use super::AdminState;
use crate::timer::now_ms;

/// Simultaneous admin connections by default.
pub const MAX_CONNECTIONS: usize = 256;
/// A kept-alive connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// A request whose first byte arrived this long ago and is still incomplete
/// is abandoned (slow-loris).
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// The admin thread's bounds; [`Limits::default`] is what `--http` serves
/// with, tests shorten the timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout_ms: u64,
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            idle_timeout_ms: IDLE_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
        }
    }
}

/// After answering and shutting down our side, how long unread input is
/// drained before the socket is closed (closing with unread input would send
/// a RST that can destroy the answer in flight).
const LINGER_MS: u64 = 2_000;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Starts the admin thread on an already bound listener (so a bind error is
/// reported at start-up by the caller). Returns the thread and a waker: set
/// `shutdown`, then `wake()`, then join.
pub fn spawn(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<(JoinHandle<()>, Arc<Waker>)> {
    spawn_with(listener, state, shutdown, Limits::default())
}

/// [`spawn`] with other bounds.
pub fn spawn_with(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: Arc<AtomicBool>,
    limits: Limits,
) -> io::Result<(JoinHandle<()>, Arc<Waker>)> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut conns = Vec::with_capacity(limits.max_connections);
    conns.resize_with(limits.max_connections, || None);
    let server = Server {
        poll,
        listener,
        conns,
        free: (0..limits.max_connections).rev().collect(),
        limits,
        state,
        shutdown,
    };
    let handle = std::thread::Builder::new()
        .name("sipreg-admin".into())
        .spawn(move || server.run())?;
    Ok((handle, waker))
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    /// Slot `i` is token `FIRST_CONN + i`.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    limits: Limits,
    state: Arc<AdminState>,
    shutdown: Arc<AtomicBool>,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut last_sweep = now_ms();
        // Sweep often enough that a timeout is enforced within half its length.
        let shortest = self
            .limits
            .idle_timeout_ms
            .min(self.limits.request_timeout_ms);
        let tick_ms = (shortest / 2).clamp(10, 1000);
        while !self.shutdown.load(Ordering::Acquire) {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(tick_ms)))
            {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("admin: poll failed: {e}");
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.drive(t.wrapping_sub(FIRST_CONN)),
                }
            }
            let now = now_ms();
            if now.saturating_sub(last_sweep) >= tick_ms {
                last_sweep = now;
                self.sweep(now);
                // An accept that failed (EMFILE) leaves the queue non-empty
                // with no new edge; retry it here.
                self.accept();
            }
        }
        log::debug!("admin: stopped");
    }

    /// Accepts until `WouldBlock` (STYLE habit 1).
    fn accept(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("admin: accept failed: {e}");
                    return;
                }
            };
            let Some(slot) = self.free.pop() else {
                // Best effort: one non-blocking write, then close.
                log::debug!(
                    "admin: refusing {peer}: {} connections open",
                    self.limits.max_connections
                );
                let mut busy = Vec::new();
                let how = Framing {
                    head_only: false,
                    keep_alive: false,
                    http10: false,
                };
                http::write_response(&mut busy, &ApiError::TooManyConnections.response(), how);
                let _ = stream.write(&busy);
                continue;
            };
            let _ = stream.set_nodelay(true);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(FIRST_CONN + slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("admin: cannot register {peer}: {e}");
                self.free.push(slot);
                continue;
            }
            self.conns[slot] = Some(Conn::new(stream, now_ms()));
        }
    }

    fn drive(&mut self, slot: usize) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        if !conn.drive(&self.state, now_ms()) {
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(slot);
        }
    }

    /// Closes idle, too slow and lingering connections.
    fn sweep(&mut self, now: u64) {
        for slot in 0..self.conns.len() {
            let expired = self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.expired(now, &self.limits));
            if expired {
                self.close(slot);
            }
        }
    }
}

/// One admin connection.
struct Conn {
    stream: TcpStream,
    /// Received bytes not yet consumed by a request.
    rbuf: Vec<u8>,
    /// The answer being written, from `written` on.
    wbuf: Vec<u8>,
    written: usize,
    /// Close (after a lingering drain) once `wbuf` is written.
    closing: bool,
    /// Our side is shut down; input is read and discarded until EOF.
    lingering_since: Option<u64>,
    last_io_ms: u64,
    /// When the first byte of the request being read arrived.
    request_started_ms: Option<u64>,
    sent_continue: bool,
}

impl Conn {
    fn new(stream: TcpStream, now: u64) -> Conn {
        Conn {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            written: 0,
            closing: false,
            lingering_since: None,
            last_io_ms: now,
            request_started_ms: None,
            sent_continue: false,
        }
    }

    fn expired(&self, now: u64, limits: &Limits) -> bool {
        if let Some(since) = self.lingering_since {
            return now.saturating_sub(since) >= LINGER_MS;
        }
        let slow = self
            .request_started_ms
            .is_some_and(|t| now.saturating_sub(t) >= limits.request_timeout_ms);
        slow || now.saturating_sub(self.last_io_ms) >= limits.idle_timeout_ms
    }

    /// Makes all the progress the socket allows: writes the pending answer,
    /// answers the next complete request, reads more. Returns once a read or
    /// a write would block (edge-triggered readiness needs that), or `false`
    /// when the connection should be closed.
    fn drive(&mut self, state: &AdminState, now: u64) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            while self.written < self.wbuf.len() {
                match self.stream.write(&self.wbuf[self.written..]) {
                    Ok(0) => return false,
                    Ok(n) => {
                        self.written += n;
                        self.last_io_ms = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            self.wbuf.clear();
            self.written = 0;

            if self.lingering_since.is_some() {
                return self.drain(&mut chunk);
            }
            if self.closing {
                let _ = self.stream.shutdown(Shutdown::Write);
                self.lingering_since = Some(now);
                self.rbuf = Vec::new();
                return self.drain(&mut chunk);
            }

            match http::frame(&self.rbuf) {
                Ok(Framed::Complete(req)) => {
                    let resp = api::handle(state, req.method, req.path, req.query, req.body, now);
                    log::debug!(
                        "admin: {} {} -> {} {}",
                        req.method,
                        req.path,
                        resp.status,
                        reason(resp.status)
                    );
                    let how = Framing {
                        head_only: req.method == "HEAD",
                        keep_alive: req.keep_alive,
                        http10: req.http10,
                    };
                    http::write_response(&mut self.wbuf, &resp, how);
                    self.closing = !req.keep_alive;
                    let used = req.len;
                    self.rbuf.drain(..used);
                    self.request_started_ms = (!self.rbuf.is_empty()).then_some(now);
                    self.sent_continue = false;
                    continue;
                }
                Ok(Framed::Partial { expect_continue }) => {
                    if expect_continue && !self.sent_continue {
                        self.sent_continue = true;
                        self.wbuf
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        continue;
                    }
                }
                Err(e) => {
                    self.refuse(e);
                    continue;
                }
            }

            // The framer bounds a pending request to head + body limits, so
            // the buffer cannot grow past them here.
            debug_assert!(self.rbuf.len() <= http::MAX_HEAD + http::MAX_BODY + chunk.len());
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    self.request_started_ms.get_or_insert(now);
                    self.last_io_ms = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Answers a request that cannot be framed, then closes.
    fn refuse(&mut self, e: FrameError) {
        log::debug!("admin: refusing a request: {}", e.message());
        let how = Framing {
            head_only: false,
            keep_alive: false,
            http10: false,
        };
        http::write_response(&mut self.wbuf, &e.response(), how);
        self.closing = true;
        self.rbuf.clear();
    }

    /// Discards input after our answer until the peer closes (then `false`).
    fn drain(&mut self, chunk: &mut [u8]) -> bool {
        loop {
            match self.stream.read(chunk) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}
