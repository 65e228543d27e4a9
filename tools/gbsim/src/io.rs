//! The socket shell: one thread per device, a UDP socket or a TCP connection
//! to the server, blocking reads with a timeout up to the device's next timer.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipreg::sip::{frame, Frame};

use crate::device::{Device, DeviceParams, Out};
use crate::msg::Transport;
use crate::stats::Stats;

/// Longest sleep between checks of the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long a device waits at the end for answers to what it sent (the
/// un-REGISTER, the last keep-alive).
const GRACE: Duration = Duration::from_secs(2);

/// When and how a device thread ends.
#[derive(Clone)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub start_at: Instant,
    pub deadline: Option<Instant>,
    pub unregister: bool,
}

impl Control {
    fn over(&self, now: Instant) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| now >= d)
    }

    /// Sleeps until `start_at`, waking for a stop; false when stopped first.
    fn wait_start(&self) -> bool {
        loop {
            let now = Instant::now();
            if self.over(now) {
                return false;
            }
            if now >= self.start_at {
                return true;
            }
            std::thread::sleep((self.start_at - now).min(POLL));
        }
    }
}

/// Read timeout until the device's next timer, bounded by [`POLL`].
fn timeout(dev: &Device, now: Instant) -> Duration {
    dev.next_wake(now)
        .map_or(POLL, |w| w.saturating_duration_since(now).min(POLL))
        .max(Duration::from_millis(1))
}

pub fn run_device(p: DeviceParams, stats: Arc<Stats>, ctl: Control) {
    if !ctl.wait_start() {
        return;
    }
    let id = p.id.clone();
    let result = match p.transport {
        Transport::Udp => run_udp(p, stats.clone(), &ctl),
        Transport::Tcp => run_tcp(p, stats.clone(), &ctl),
    };
    if let Err(e) = result {
        stats.error(format!("{id}: {e}"));
    }
}

fn run_udp(p: DeviceParams, stats: Arc<Stats>, ctl: &Control) -> std::io::Result<()> {
    let sock = UdpSocket::bind(("127.0.0.1", 0))?;
    let local = sock.local_addr()?;
    let mut dev = Device::new(p, local, stats, Instant::now());
    let mut buf = vec![0u8; 65_536];
    let mut out: Out = Vec::new();
    let send = |sock: &UdpSocket, out: &mut Out| {
        for (to, bytes) in out.drain(..) {
            let _ = sock.send_to(&bytes, to);
        }
    };
    dev.on_tick(Instant::now(), &mut out);
    send(&sock, &mut out);
    loop {
        let now = Instant::now();
        if ctl.over(now) {
            break;
        }
        sock.set_read_timeout(Some(timeout(&dev, now)))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                dev.on_packet(Instant::now(), &buf[..n], from, &mut out);
                send(&sock, &mut out);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // ICMP port unreachable from an earlier send: keep going.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
        dev.on_tick(Instant::now(), &mut out);
        send(&sock, &mut out);
    }
    let end = Instant::now() + GRACE;
    dev.close(Instant::now(), ctl.unregister, &mut out);
    send(&sock, &mut out);
    while !dev.idle() && Instant::now() < end {
        sock.set_read_timeout(Some(timeout(&dev, Instant::now())))?;
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            dev.on_packet(Instant::now(), &buf[..n], from, &mut out);
        }
        dev.on_tick(Instant::now(), &mut out);
        send(&sock, &mut out);
    }
    dev.abandon();
    Ok(())
}

/// A TCP connection with the bytes read but not yet framed.
struct Stream {
    tcp: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
}

impl Stream {
    fn send(&mut self, out: &mut Out) -> std::io::Result<()> {
        for (_, bytes) in out.drain(..) {
            self.tcp.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Reads once (up to the timeout) and hands every complete message to the
    /// device. `Ok(false)` when the server closed the connection.
    fn pump(&mut self, dev: &mut Device, out: &mut Out, wait: Duration) -> std::io::Result<bool> {
        self.tcp.set_read_timeout(Some(wait))?;
        let mut chunk = [0u8; 16 * 1024];
        match self.tcp.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(true)
            }
            Err(e) => return Err(e),
        }
        loop {
            match frame(&self.buf) {
                Ok(Frame::NeedMore) => break,
                Ok(Frame::Ping(n)) => {
                    self.buf.drain(..n);
                    self.tcp.write_all(b"\r\n")?;
                }
                Ok(Frame::Skip(n)) => {
                    self.buf.drain(..n);
                }
                Ok(Frame::Message(n)) => {
                    let msg: Vec<u8> = self.buf.drain(..n).collect();
                    dev.on_packet(Instant::now(), &msg, self.peer, out);
                    self.send(out)?;
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!("unframable stream: {e:?}"),
                    ))
                }
            }
        }
        Ok(true)
    }
}

fn run_tcp(p: DeviceParams, stats: Arc<Stats>, ctl: &Control) -> std::io::Result<()> {
    let tcp = TcpStream::connect_timeout(&p.server, Duration::from_secs(3))?;
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr()?;
    let mut s = Stream {
        peer: p.server,
        tcp,
        buf: Vec::new(),
    };
    let mut dev = Device::new(p, local, stats, Instant::now());
    let mut out: Out = Vec::new();
    dev.on_tick(Instant::now(), &mut out);
    s.send(&mut out)?;
    loop {
        let now = Instant::now();
        if ctl.over(now) {
            break;
        }
        let wait = timeout(&dev, now);
        if !s.pump(&mut dev, &mut out, wait)? {
            return Err(std::io::Error::new(
                ErrorKind::ConnectionAborted,
                "server closed the TCP connection",
            ));
        }
        dev.on_tick(Instant::now(), &mut out);
        s.send(&mut out)?;
    }
    let end = Instant::now() + GRACE;
    dev.close(Instant::now(), ctl.unregister, &mut out);
    s.send(&mut out)?;
    while !dev.idle() && Instant::now() < end {
        let wait = timeout(&dev, Instant::now());
        if !s.pump(&mut dev, &mut out, wait)? {
            break;
        }
        dev.on_tick(Instant::now(), &mut out);
        s.send(&mut out)?;
    }
    dev.abandon();
    Ok(())
}
