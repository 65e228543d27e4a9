//! Creating the per-worker sockets: one UDP socket and one TCP listener per
//! worker, all bound to the same address with `SO_REUSEPORT` so the kernel
//! spreads datagrams and connections across workers without a shared lock.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Which step of making a socket failed, for a start-up error that says so.
#[derive(Debug)]
pub enum SocketError {
    Create {
        kind: &'static str,
        err: io::Error,
    },
    Option {
        kind: &'static str,
        option: &'static str,
        err: io::Error,
    },
    Bind {
        kind: &'static str,
        addr: SocketAddr,
        err: io::Error,
    },
    Listen {
        addr: SocketAddr,
        err: io::Error,
    },
}

impl std::fmt::Display for SocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketError::Create { kind, err } => write!(f, "cannot create {kind} socket: {err}"),
            SocketError::Option { kind, option, err } => {
                write!(f, "cannot set {option} on {kind} socket: {err}")
            }
            SocketError::Bind { kind, addr, err } => write!(f, "cannot bind {kind} {addr}: {err}"),
            SocketError::Listen { addr, err } => write!(f, "cannot listen on TCP {addr}: {err}"),
        }
    }
}

impl std::error::Error for SocketError {}

impl SocketError {
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, SocketError::Bind { err, .. } if err.kind() == io::ErrorKind::AddrInUse)
    }
}

fn new_socket(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    kind: &'static str,
) -> Result<Socket, SocketError> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))
        .map_err(|err| SocketError::Create { kind, err })?;
    let opt = |option: &'static str, r: io::Result<()>| {
        r.map_err(|err| SocketError::Option { kind, option, err })
    };
    opt("SO_REUSEADDR", s.set_reuse_address(true))?;
    opt("SO_REUSEPORT", s.set_reuse_port(true))?;
    opt("O_NONBLOCK", s.set_nonblocking(true))?;
    Ok(s)
}

/// A bound UDP socket and its receive buffer as the kernel reports it.
///
/// `rcvbuf` is the `--udp-rcvbuf` request (0: leave the kernel default).
/// Registration storms arrive in bursts, and a datagram the kernel drops costs
/// the client a retransmission, hence a large default; the kernel silently
/// caps the request at `net.core.rmem_max`, so the effective size is read back
/// rather than assumed.
pub fn udp(addr: SocketAddr, rcvbuf: usize) -> Result<(mio::net::UdpSocket, usize), SocketError> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP, "UDP")?;
    let opt = |r: io::Result<()>| {
        r.map_err(|err| SocketError::Option {
            kind: "UDP",
            option: "SO_RCVBUF",
            err,
        })
    };
    if rcvbuf > 0 {
        // setsockopt takes an int; anything larger is capped by the kernel anyway.
        opt(s.set_recv_buffer_size(rcvbuf.min(i32::MAX as usize)))?;
    }
    let effective = s.recv_buffer_size().map_err(|err| SocketError::Option {
        kind: "UDP",
        option: "SO_RCVBUF (read back)",
        err,
    })?;
    s.bind(&addr.into()).map_err(|err| SocketError::Bind {
        kind: "UDP",
        addr,
        err,
    })?;
    Ok((mio::net::UdpSocket::from_std(s.into()), effective))
}

/// Whether the kernel granted less receive buffer than `asked`. Linux doubles
/// the request (the extra half is its bookkeeping overhead) and reports the
/// doubled figure, so a full grant reads back as at least twice the request.
pub fn rcvbuf_capped(asked: usize, effective: usize) -> bool {
    let full = if cfg!(target_os = "linux") {
        asked.saturating_mul(2)
    } else {
        asked
    };
    asked > 0 && effective < full
}

pub fn tcp(addr: SocketAddr) -> Result<mio::net::TcpListener, SocketError> {
    let s = new_socket(addr, Type::STREAM, Protocol::TCP, "TCP")?;
    s.bind(&addr.into()).map_err(|err| SocketError::Bind {
        kind: "TCP",
        addr,
        err,
    })?;
    s.listen(1024)
        .map_err(|err| SocketError::Listen { addr, err })?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// One worker's sockets.
pub struct WorkerSockets {
    pub udp: mio::net::UdpSocket,
    /// The UDP receive buffer as the kernel reports it (`SO_RCVBUF`).
    pub udp_rcvbuf: usize,
    pub tcp: mio::net::TcpListener,
}

/// Binds `count` UDP sockets (each asking for `udp_rcvbuf` bytes of receive
/// buffer, 0: kernel default) and TCP listeners on `addr`. With port 0 the
/// first UDP socket picks the port and every other socket joins it; the
/// attempt is retried when that port turns out to be taken for TCP. Logs the
/// effective receive buffer once, and warns if the kernel capped it.
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
    udp_rcvbuf: usize,
) -> Result<(SocketAddr, Vec<WorkerSockets>), SocketError> {
    let (local, sockets) = bind_with_retries(addr, count, udp_rcvbuf)?;
    if let Some(first) = sockets.first() {
        let effective = first.udp_rcvbuf;
        if rcvbuf_capped(udp_rcvbuf, effective) {
            log::warn!(
                "UDP receive buffer capped at {effective} bytes (asked --udp-rcvbuf {udp_rcvbuf}); \
                 raise net.core.rmem_max to at least {udp_rcvbuf} to get it"
            );
        } else {
            log::info!(
                "UDP receive buffer {effective} bytes per worker socket (as reported by SO_RCVBUF)"
            );
        }
    }
    Ok((local, sockets))
}

fn bind_with_retries(
    addr: SocketAddr,
    count: usize,
    udp_rcvbuf: usize,
) -> Result<(SocketAddr, Vec<WorkerSockets>), SocketError> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        match try_bind_all(addr, count, udp_rcvbuf) {
            Ok(r) => return Ok(r),
            Err(e) if e.is_addr_in_use() && addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(SocketError::Bind {
        kind: "TCP",
        addr,
        err: io::Error::from(io::ErrorKind::AddrInUse),
    }))
}

fn try_bind_all(
    addr: SocketAddr,
    count: usize,
    udp_rcvbuf: usize,
) -> Result<(SocketAddr, Vec<WorkerSockets>), SocketError> {
    let first = udp(addr, udp_rcvbuf)?;
    let local = first.0.local_addr().map_err(|err| SocketError::Bind {
        kind: "UDP",
        addr,
        err,
    })?;
    let mut out = Vec::with_capacity(count);
    let mut first = Some(first);
    for _ in 0..count {
        let (udp, udp_rcvbuf) = match first.take() {
            Some(s) => s,
            None => udp(local, udp_rcvbuf)?,
        };
        out.push(WorkerSockets {
            udp,
            udp_rcvbuf,
            tcp: tcp(local)?,
        });
    }
    Ok((local, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcvbuf_capped_compares_with_the_doubled_request_on_linux() {
        assert!(!rcvbuf_capped(0, 212_992), "0 asks for nothing");
        assert!(!rcvbuf_capped(65_536, 131_072));
        assert!(rcvbuf_capped(8 << 20, 8 << 20), "granted half of it");
        assert!(rcvbuf_capped(8 << 20, 425_984));
    }

    #[test]
    fn udp_reads_back_the_effective_receive_buffer() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (_s, default) = udp(addr, 0).unwrap();
        assert!(default > 0);
        // A small request is below any sane rmem_max: granted in full.
        let (_s, small) = udp(addr, 32 * 1024).unwrap();
        assert!(!rcvbuf_capped(32 * 1024, small), "{small}");
    }
}
