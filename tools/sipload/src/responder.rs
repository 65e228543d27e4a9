//! The bare responder: one UDP socket, one thread, every request answered
//! with a minimal valid `200 OK` (RFC 3261 §8.2.6: Via/From/To/Call-ID/CSeq
//! copied, a To-tag added, Content-Length 0) by sipreg's scanner and response
//! writer. No state, no auth: the ceiling one core can reach for
//! request → response over UDP, to put the registrar's cost in proportion.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use sipreg::sip::{scan, Method, ResponseWriter, StartLine};

use crate::mmsg::{self, Datagram, RecvMeta, BATCH};

/// Largest datagram read; bigger ones are counted as bad and dropped.
const SLOT: usize = 8192;
/// RFC 3261 §8.2.6.2: the same To-tag for a retransmission; a constant is the
/// simplest tag that is always the same.
const TO_TAG: &[u8] = b"sipload";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponderStats {
    pub requests: u64,
    pub responses: u64,
    /// Datagrams that did not scan, were truncated or were not requests.
    pub dropped: u64,
    pub send_errors: u64,
}

/// Binds the responder's socket (non-blocking, large buffers).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let step = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("responder {what} {addr}: {e}"))
    };
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| step("socket", e))?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&addr.into()).map_err(|e| step("bind", e))?;
    s.set_nonblocking(true)
        .map_err(|e| step("set_nonblocking", e))?;
    Ok(s.into())
}

/// Answers requests on `sock` until `stop` is set or `until` passes.
pub fn serve(
    sock: &UdpSocket,
    use_mmsg: bool,
    stop: &AtomicBool,
    until: Option<Instant>,
) -> io::Result<ResponderStats> {
    let fd = sock.as_raw_fd();
    let mut stats = ResponderStats::default();
    let mut rx = vec![0u8; BATCH * SLOT];
    let mut meta = [RecvMeta::default(); BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1024)).collect();
    let mut dests: Vec<SockAddr> = Vec::with_capacity(BATCH);
    let mut pfd = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    loop {
        if stop.load(Ordering::Relaxed) || until.is_some_and(|u| Instant::now() >= u) {
            return Ok(stats);
        }
        let got = if use_mmsg {
            mmsg::recv_batch(fd, &mut rx, SLOT, &mut meta)
        } else {
            sock.recv_from(&mut rx[..SLOT]).map(|(len, from)| {
                meta[0] = RecvMeta {
                    len,
                    truncated: false,
                    from: Some(from),
                    rx_time: None,
                };
                1
            })
        };
        let n = match got {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                mmsg::poll(&mut pfd, Duration::from_millis(100))?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // ICMP errors from an earlier send to a vanished client.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };

        dests.clear();
        let mut k = 0;
        for (j, m) in meta[..n].iter().enumerate() {
            let Some(from) = m.from else {
                stats.dropped += 1;
                continue;
            };
            if m.truncated {
                stats.dropped += 1;
                continue;
            }
            let data = &rx[j * SLOT..j * SLOT + m.len];
            let Ok(msg) = scan(data) else {
                stats.dropped += 1;
                continue;
            };
            let StartLine::Request(rl) = msg.start else {
                stats.dropped += 1;
                continue;
            };
            stats.requests += 1;
            // RFC 3261 §17.1.1.3: ACK gets no response.
            if rl.method == Method::Ack {
                continue;
            }
            ResponseWriter::start(&mut outs[k], &msg, 200, b"OK", from, TO_TAG).finish(b"");
            dests.push(SockAddr::from(from));
            k += 1;
        }
        if k == 0 {
            continue;
        }
        if use_mmsg {
            let mut dg = [Datagram {
                data: &[],
                to: None,
            }; BATCH];
            for j in 0..k {
                dg[j] = Datagram {
                    data: &outs[j],
                    to: Some(&dests[j]),
                };
            }
            let mut sent = 0;
            while sent < k {
                match mmsg::send_batch(fd, &dg[sent..k]) {
                    Ok(0) => break,
                    Ok(s) => sent += s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let mut out = [libc::pollfd {
                            fd,
                            events: libc::POLLOUT,
                            revents: 0,
                        }];
                        mmsg::poll(&mut out, Duration::from_millis(10))?;
                    }
                    Err(_) => {
                        stats.send_errors += 1;
                        sent += 1;
                    }
                }
            }
            stats.responses += sent as u64;
        } else {
            for j in 0..k {
                match dests[j].as_socket() {
                    Some(to) if sock.send_to(&outs[j], to).is_ok() => stats.responses += 1,
                    _ => stats.send_errors += 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipreg::sip::HeaderId;

    #[test]
    fn answers_a_request_with_a_valid_200() {
        let sock = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                serve(
                    &sock,
                    true,
                    &stop,
                    Some(Instant::now() + Duration::from_secs(10)),
                )
            });
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let req = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1.2;rport\r\nFrom: <sip:a@127.0.0.1>;tag=x\r\nTo: <sip:127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";
            c.send_to(req, addr).unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = c.recv_from(&mut buf).unwrap();
            let m = scan(&buf[..n]).unwrap();
            assert!(matches!(m.start, StartLine::Response(st) if st.code == 200));
            assert_eq!(m.call_id(), b"c1");
            assert_eq!(m.cseq().seq, 7);
            assert!(m.value(HeaderId::To).unwrap().ends_with(b";tag=sipload"));
            let via = m.value(HeaderId::Via).unwrap();
            let port = c.local_addr().unwrap().port().to_string();
            assert!(
                via.windows(port.len()).any(|w| w == port.as_bytes()),
                "rport filled"
            );
            assert_eq!(m.value(HeaderId::ContentLength), Some(&b"0"[..]));
            // Garbage is dropped, not answered.
            c.send_to(b"hello", addr).unwrap();
            c.send_to(req, addr).unwrap();
            let (n2, _) = c.recv_from(&mut buf).unwrap();
            assert!(scan(&buf[..n2]).is_ok());
            stop.store(true, Ordering::Relaxed);
            let st = h.join().unwrap().unwrap();
            assert_eq!(st.requests, 2);
            assert_eq!(st.responses, 2);
            assert_eq!(st.dropped, 1);
        });
    }
}
