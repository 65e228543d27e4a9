//! Creating the per-worker sockets: one UDP socket and one TCP listener per
//! worker, all bound to the same address with `SO_REUSEPORT` so the kernel
//! spreads datagrams and connections across workers without a shared lock.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer asked for each UDP socket: registration storms arrive in
/// bursts, and a datagram dropped by the kernel costs a client retransmission.
pub const UDP_RCVBUF: usize = 4 << 20;

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

pub fn udp(addr: SocketAddr) -> Result<mio::net::UdpSocket, SocketError> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP, "UDP")?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(UDP_RCVBUF);
    s.bind(&addr.into()).map_err(|err| SocketError::Bind {
        kind: "UDP",
        addr,
        err,
    })?;
    Ok(mio::net::UdpSocket::from_std(s.into()))
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
    pub tcp: mio::net::TcpListener,
}

/// Binds `count` UDP sockets and TCP listeners on `addr`. With port 0 the first
/// UDP socket picks the port and every other socket joins it; the attempt is
/// retried when that port turns out to be taken for TCP.
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
) -> Result<(SocketAddr, Vec<WorkerSockets>), SocketError> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        match try_bind_all(addr, count) {
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
) -> Result<(SocketAddr, Vec<WorkerSockets>), SocketError> {
    let first = udp(addr)?;
    let local = first.local_addr().map_err(|err| SocketError::Bind {
        kind: "UDP",
        addr,
        err,
    })?;
    let mut out = Vec::with_capacity(count);
    let mut first = Some(first);
    for _ in 0..count {
        let udp = match first.take() {
            Some(s) => s,
            None => udp(local)?,
        };
        out.push(WorkerSockets {
            udp,
            tcp: tcp(local)?,
        });
    }
    Ok((local, out))
}
