//! TCP connections of one worker: per-connection read and write buffers, stream
//! framing (RFC 3261 §18.3), RFC 5626 keep-alive pings, idle close. Buffers are
//! bounded so a slow or hostile peer cannot grow them without limit.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::sip::frame::MAX_STREAM_MESSAGE;
use crate::sip::{frame, Frame};

/// Most unframed bytes kept for one connection: one maximal message plus a read.
const MAX_READ_BUFFER: usize = MAX_STREAM_MESSAGE + READ_CHUNK;
/// Most unsent response bytes kept for a peer that does not read.
const MAX_WRITE_BUFFER: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    last_active_ms: u64,
    /// Close once the write buffer drains (framing lost or peer finished).
    closing: bool,
    want_write: bool,
}

/// A slab of connections addressed by mio token.
pub struct Connections {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    first_token: usize,
    max: usize,
    live: usize,
}

impl Connections {
    pub fn new(first_token: usize, max: usize) -> Self {
        Connections {
            slots: Vec::new(),
            free: Vec::new(),
            first_token,
            max,
            live: 0,
        }
    }

    /// Takes ownership of an accepted stream; refuses (closes) it over the cap.
    pub fn insert(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        id: u64,
        now_ms: u64,
        registry: &Registry,
    ) -> Option<Token> {
        if self.live >= self.max {
            log::debug!("refusing TCP connection from {peer}: {} open", self.live);
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
            wbuf: Vec::new(),
            last_active_ms: now_ms,
            closing: false,
            want_write: false,
        });
        self.live += 1;
        Some(token)
    }

    fn index(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(self.first_token)
    }

    /// Reads what is available, hands each complete message to `on_message`
    /// (which appends any answer to the write buffer it is given), answers
    /// CRLF CRLF pings with CRLF, then writes.
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
        let mut peer_done = false;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    peer_done = true;
                    break;
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&chunk[..n]);
                    if conn.rbuf.len() > MAX_READ_BUFFER {
                        // The framer refuses anything this large; stop reading.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    peer_done = true;
                    break;
                }
            }
        }
        conn.last_active_ms = now_ms;
        let ids = (u32::try_from(token.0).unwrap_or(u32::MAX), conn.id);
        let mut pos = 0;
        while !conn.closing && pos < conn.rbuf.len() {
            match frame(&conn.rbuf[pos..]) {
                Ok(Frame::Message(n)) => {
                    on_message(&conn.rbuf[pos..pos + n], conn.peer, ids, &mut conn.wbuf);
                    pos += n;
                }
                // RFC 5626 §4.4.1: answer the ping with a pong.
                Ok(Frame::Ping(n)) => {
                    conn.wbuf.extend_from_slice(b"\r\n");
                    pos += n;
                }
                Ok(Frame::Skip(n)) => pos += n,
                Ok(Frame::NeedMore) => break,
                Err(_) => {
                    // Framing is lost: answer what can be answered (a 400 or
                    // 513 when the head is readable), then close.
                    on_message(&conn.rbuf[pos..], conn.peer, ids, &mut conn.wbuf);
                    pos = conn.rbuf.len();
                    conn.closing = true;
                }
            }
        }
        conn.rbuf.drain(..pos);
        if conn.wbuf.len() > MAX_WRITE_BUFFER {
            log::debug!("closing {}: peer does not read its answers", conn.peer);
            self.close(index, registry);
            return;
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
        let mut written = 0;
        let mut failed = false;
        while written < conn.wbuf.len() {
            match conn.stream.write(&conn.wbuf[written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        conn.wbuf.drain(..written);
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
    /// (tokens are reused); returns whether it was.
    pub fn send(&mut self, token: Token, id: u64, bytes: &[u8], registry: &Registry) -> bool {
        let Some(index) = self.index(token) else {
            return false;
        };
        match self.slots.get_mut(index) {
            Some(Some(conn)) if conn.id == id => conn.wbuf.extend_from_slice(bytes),
            _ => return false,
        }
        self.flush(token, registry);
        true
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(mut conn) = self.slots.get_mut(index).and_then(Option::take) {
            let _ = registry.deregister(&mut conn.stream);
            self.free.push(index);
            self.live -= 1;
        }
    }

    /// Closes connections idle for `timeout_ms`; returns how many.
    pub fn close_idle(&mut self, now_ms: u64, timeout_ms: u64, registry: &Registry) -> usize {
        let idle: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| now_ms.saturating_sub(c.last_active_ms) >= timeout_ms)
                    .map(|_| i)
            })
            .collect();
        for &i in &idle {
            self.close(i, registry);
        }
        idle.len()
    }
}
