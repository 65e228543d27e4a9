//! TCP connections of one worker: per-connection read and write buffers, stream
//! framing (RFC 3261 §18.3), RFC 5626 keep-alive pings, and the bounds that keep
//! a slow or hostile peer from holding resources: connections per worker and
//! per source IP, read- and write-buffer caps, an idle timeout and a
//! partial-message (slowloris) timeout. Every bound that bites is counted in
//! [`WorkerStats`] (`tcp_rejected_total`, `tcp_closed_total`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::sip::frame::MAX_STREAM_MESSAGE;
use crate::sip::{frame_resume, Frame, ScanError};
use crate::stats::{TcpClose, TcpReject, WorkerStats};

/// Most unframed bytes kept for one connection: one maximal message plus a read.
/// Reading stops once more than a maximal message is buffered, and the framer
/// refuses anything that large, so the buffer never grows past this.
pub const MAX_READ_BUFFER: usize = MAX_STREAM_MESSAGE + READ_CHUNK;
/// Most unsent bytes kept for a peer that does not read its answers.
pub const MAX_WRITE_BUFFER: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
/// A buffer that grew past this for one large message is given back once it
/// empties, so idle connections cost little memory (8192 connections with
/// maximal buffers would otherwise hold over half a gigabyte).
const KEEP_CAPACITY: usize = 16 * 1024;

/// The per-worker bounds (`--tcp-*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections this worker holds at most.
    pub max_connections: usize,
    /// Connections one source IP holds at most on this worker.
    pub max_per_source: u32,
    /// A connection nothing was read from for this long is closed.
    pub idle_timeout_ms: u64,
    /// A message begun this long ago and still incomplete closes its connection.
    pub message_timeout_ms: u64,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    rbuf: Vec<u8>,
    /// How much of `rbuf` the framer already knows holds no header end, so a
    /// trickled header section is scanned once, not once per read.
    scanned: usize,
    wbuf: Vec<u8>,
    last_active_ms: u64,
    /// When the first byte of the incomplete message at the front of `rbuf`
    /// arrived; `None` when `rbuf` holds no message begun (empty, or only
    /// the CR/LF of a keep-alive).
    partial_since_ms: Option<u64>,
    /// Close once the write buffer drains (framing lost or peer finished).
    closing: bool,
    want_write: bool,
}

/// A slab of connections addressed by mio token.
pub struct Connections {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    first_token: usize,
    limits: Limits,
    live: usize,
    /// Open connections per source IP; an entry goes when its count reaches
    /// zero, so the map holds at most `max_connections` entries.
    per_source: HashMap<IpAddr, u32>,
    stats: Arc<WorkerStats>,
}

impl Connections {
    pub fn new(first_token: usize, limits: Limits, stats: Arc<WorkerStats>) -> Self {
        Connections {
            slots: Vec::new(),
            free: Vec::new(),
            first_token,
            limits,
            live: 0,
            per_source: HashMap::new(),
            stats,
        }
    }

    /// Takes ownership of an accepted stream, or refuses it over a cap. A
    /// refused stream is reset (linger 0) rather than closed gracefully: it
    /// is closed at once, so the accept backlog keeps draining, and a flood
    /// of refused connections leaves no TIME_WAIT state behind.
    pub fn insert(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        id: u64,
        now_ms: u64,
        registry: &Registry,
    ) -> Option<Token> {
        let from_source = self.per_source.get(&peer.ip()).copied().unwrap_or(0);
        let refused = if self.live >= self.limits.max_connections {
            Some(TcpReject::PerWorker)
        } else if from_source >= self.limits.max_per_source {
            Some(TcpReject::PerSource)
        } else {
            None
        };
        if let Some(why) = refused {
            log::debug!("refusing TCP connection from {peer}: {}", why.label());
            WorkerStats::inc(&self.stats.tcp_rejected[why as usize]);
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return None;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let token = Token(self.first_token + index);
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
            log::debug!("register TCP {peer}: {e}");
            self.free.push(index);
            return None;
        }
        let _ = stream.set_nodelay(true);
        self.slots[index] = Some(Conn {
            stream,
            peer,
            id,
            rbuf: Vec::new(),
            scanned: 0,
            wbuf: Vec::new(),
            last_active_ms: now_ms,
            partial_since_ms: None,
            closing: false,
            want_write: false,
        });
        self.live += 1;
        *self.per_source.entry(peer.ip()).or_insert(0) += 1;
        WorkerStats::inc(&self.stats.tcp_accepted);
        self.stats
            .tcp_open
            .store(self.live as u64, Ordering::Relaxed);
        Some(token)
    }

    fn index(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(self.first_token)
    }

    /// Reads what is available, hands each complete message to `on_message`
    /// (which appends any answer to the write buffer it is given), answers
    /// CRLF CRLF pings with CRLF, then writes. Reads until `WouldBlock`
    /// (mio is edge-triggered), framing whenever the read buffer is full, so
    /// a peer that pipelines more than one buffer of requests is served in
    /// full rather than stalled.
    pub fn read(
        &mut self,
        token: Token,
        now_ms: u64,
        registry: &Registry,
        mut on_message: impl FnMut(&[u8], SocketAddr, (u32, u64), &mut Vec<u8>),
    ) {
        let Some(index) = self.index(token) else {
            return;
        };
        let Some(Some(conn)) = self.slots.get_mut(index) else {
            return;
        };
        let ids = (u32::try_from(token.0).unwrap_or(u32::MAX), conn.id);
        let mut chunk = [0u8; READ_CHUNK];
        let mut close = None;
        let mut peer_done = false;
        loop {
            // Fill: until the kernel has nothing more, or more than a
            // maximal message is buffered (then it must frame or fail).
            let mut drained = false;
            while conn.rbuf.len() <= MAX_STREAM_MESSAGE {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => {
                        peer_done = true;
                        break;
                    }
                    Ok(n) => conn.rbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        peer_done = true;
                        break;
                    }
                }
            }
            debug_assert!(
                conn.rbuf.len() <= MAX_READ_BUFFER,
                "read buffer over its cap"
            );
            conn.last_active_ms = now_ms;

            // `scanned` is relative to the front of what is left to frame:
            // it restarts at 0 whenever something is consumed.
            let mut pos = 0;
            while !conn.closing && pos < conn.rbuf.len() {
                match frame_resume(&conn.rbuf[pos..], &mut conn.scanned) {
                    Ok(Frame::Message(n)) => {
                        on_message(&conn.rbuf[pos..pos + n], conn.peer, ids, &mut conn.wbuf);
                        pos += n;
                        conn.scanned = 0;
                    }
                    // RFC 5626 §4.4.1: answer the ping with a pong.
                    Ok(Frame::Ping(n)) => {
                        conn.wbuf.extend_from_slice(b"\r\n");
                        pos += n;
                        conn.scanned = 0;
                    }
                    Ok(Frame::Skip(n)) => {
                        pos += n;
                        conn.scanned = 0;
                    }
                    Ok(Frame::NeedMore) => break,
                    Err(e) => {
                        // Framing is lost: answer what can be answered (a 400
                        // or 513 when the head is readable), then close.
                        on_message(&conn.rbuf[pos..], conn.peer, ids, &mut conn.wbuf);
                        pos = conn.rbuf.len();
                        conn.scanned = 0;
                        conn.closing = true;
                        close = Some(match e {
                            ScanError::MessageTooLarge => TcpClose::ReadBuffer,
                            _ => TcpClose::Framing,
                        });
                    }
                }
            }
            conn.rbuf.drain(..pos);
            conn.partial_since_ms = if begun(&conn.rbuf) {
                // A message still incomplete after something before it was
                // consumed began in this read; otherwise it keeps its start.
                match conn.partial_since_ms {
                    Some(t) if pos == 0 => Some(t),
                    _ => Some(now_ms),
                }
            } else {
                None
            };
            if conn.rbuf.is_empty() && conn.rbuf.capacity() > KEEP_CAPACITY {
                conn.rbuf = Vec::new();
            }
            // Send what is ready before judging the write buffer, so a peer
            // that reads as fast as it pipelines is never over the cap.
            if write_pending(conn).is_err() {
                peer_done = true;
                break;
            }
            if conn.wbuf.len() > MAX_WRITE_BUFFER {
                close = Some(TcpClose::WriteBuffer);
                break;
            }
            if drained || peer_done || conn.closing {
                break;
            }
        }
        if let Some(TcpClose::WriteBuffer) = close {
            log::debug!("closing {}: peer does not read its answers", conn.peer);
            self.close_counted(index, TcpClose::WriteBuffer, registry);
            return;
        }
        if let Some(why) = close {
            // Counted now; the connection goes once its answer is written.
            WorkerStats::inc(&self.stats.tcp_closed[why as usize]);
        }
        if peer_done {
            conn.closing = true;
        }
        self.flush(token, registry);
    }

    /// Writes pending bytes; asks for WRITABLE while some remain; closes a
    /// connection marked closing once everything is written.
    pub fn flush(&mut self, token: Token, registry: &Registry) {
        let Some(index) = self.index(token) else {
            return;
        };
        let Some(Some(conn)) = self.slots.get_mut(index) else {
            return;
        };
        let failed = write_pending(conn).is_err();
        if failed || (conn.closing && conn.wbuf.is_empty()) {
            self.close(index, registry);
            return;
        }
        let want_write = !conn.wbuf.is_empty();
        if want_write != conn.want_write {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry
                .reregister(&mut conn.stream, token, interest)
                .is_ok()
            {
                conn.want_write = want_write;
            }
        }
    }

    /// Queues `bytes` on the connection if it is still the one with `id`
    /// (tokens are reused); returns whether it was. A peer whose unsent bytes
    /// would pass the write-buffer cap is closed instead.
    pub fn send(&mut self, token: Token, id: u64, bytes: &[u8], registry: &Registry) -> bool {
        let Some(index) = self.index(token) else {
            return false;
        };
        match self.slots.get_mut(index) {
            Some(Some(conn)) if conn.id == id => {
                if conn.wbuf.len() + bytes.len() > MAX_WRITE_BUFFER {
                    log::debug!("closing {}: peer does not read", conn.peer);
                    self.close_counted(index, TcpClose::WriteBuffer, registry);
                    return false;
                }
                conn.wbuf.extend_from_slice(bytes);
            }
            _ => return false,
        }
        self.flush(token, registry);
        true
    }

    fn close_counted(&mut self, index: usize, why: TcpClose, registry: &Registry) {
        WorkerStats::inc(&self.stats.tcp_closed[why as usize]);
        self.close(index, registry);
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        let Some(mut conn) = self.slots.get_mut(index).and_then(Option::take) else {
            return;
        };
        let _ = registry.deregister(&mut conn.stream);
        self.free.push(index);
        self.live -= 1;
        let ip = conn.peer.ip();
        if let Some(n) = self.per_source.get_mut(&ip) {
            debug_assert!(*n > 0, "per-source count of an open connection is zero");
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
        self.stats
            .tcp_open
            .store(self.live as u64, Ordering::Relaxed);
    }

    /// Closes connections idle for the idle timeout, and those whose
    /// message begun is older than the message timeout; counts each. One
    /// pass over the slab, called about once a second, so the timers cost
    /// nothing per packet.
    pub fn sweep(&mut self, now_ms: u64, registry: &Registry) {
        for index in 0..self.slots.len() {
            let Some(Some(conn)) = self.slots.get(index) else {
                continue;
            };
            let why = if now_ms.saturating_sub(conn.last_active_ms) >= self.limits.idle_timeout_ms {
                TcpClose::Idle
            } else if conn
                .partial_since_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= self.limits.message_timeout_ms)
            {
                log::debug!("closing {}: message incomplete too long", conn.peer);
                TcpClose::MessageTimeout
            } else {
                continue;
            };
            self.close_counted(index, why, registry);
        }
    }
}

/// Writes as much of the write buffer as the kernel takes now. `Err` when
/// the connection is broken.
fn write_pending(conn: &mut Conn) -> Result<(), ()> {
    let mut written = 0;
    let mut result = Ok(());
    while written < conn.wbuf.len() {
        match conn.stream.write(&conn.wbuf[written..]) {
            Ok(0) => {
                result = Err(());
                break;
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                result = Err(());
                break;
            }
        }
    }
    conn.wbuf.drain(..written);
    if conn.wbuf.is_empty() && conn.wbuf.capacity() > KEEP_CAPACITY {
        conn.wbuf = Vec::new();
    }
    result
}

/// True when `rbuf` holds the start of a message, not just the CR/LF of an
/// RFC 5626 keep-alive (which the framer keeps until it can tell a ping from
/// a pong). Only the first bytes are looked at in practice: the framer
/// consumes leading line ends, so anything else stops the scan at once.
fn begun(rbuf: &[u8]) -> bool {
    rbuf.iter().any(|&b| b != b'\r' && b != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_bytes_are_not_a_message_begun() {
        assert!(!begun(b""));
        assert!(!begun(b"\r"));
        assert!(!begun(b"\r\n\r"));
        assert!(begun(b"REG"));
        assert!(begun(b"\r\nR"));
    }
}
