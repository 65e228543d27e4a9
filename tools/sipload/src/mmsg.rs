//! Every `unsafe` block of sipload lives here (STYLE.md habit 11): Linux
//! `recvmmsg`/`sendmmsg` batching, `ppoll` with a sub-millisecond timeout, the
//! SIGINT/SIGTERM flag and `getrusage`. Batching follows quinn-udp's shape:
//! stack arrays of `mmsghdr`/`iovec` built per call, at most [`BATCH`] each.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::SockAddr;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 32;

/// What `recv_batch` learned about one datagram.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecvMeta {
    /// Bytes stored in the slot.
    pub len: usize,
    /// The datagram was larger than the slot (`MSG_TRUNC`).
    pub truncated: bool,
    /// Source address (`None` for an unknown address family).
    pub from: Option<SocketAddr>,
    /// Kernel receive time (CLOCK_REALTIME since the epoch) when the socket
    /// has [`enable_rx_timestamps`] on.
    pub rx_time: Option<Duration>,
}

/// Control-message space per datagram: one `SCM_TIMESTAMPNS` (a timespec)
/// with room to spare; u64 elements keep it aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;

/// Asks the kernel to stamp each received datagram with its arrival time
/// (`SO_TIMESTAMPNS`), so latency is exact even when the loop reads late.
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `SCM_TIMESTAMPNS` time in a received message's control data.
fn rx_timestamp(hdr: &libc::msghdr) -> Option<Duration> {
    if hdr.msg_control.is_null()
        || (hdr.msg_controllen as u64) < mem::size_of::<libc::cmsghdr>() as u64
    {
        return None;
    }
    // SAFETY: msg_control/msg_controllen describe the control buffer the
    // kernel filled (checked non-null and large enough for one header above).
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR only return headers inside the buffer.
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: an SCM_TIMESTAMPNS message carries one timespec; it may be
            // unaligned inside the buffer, hence read_unaligned.
            let ts = unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>()) };
            return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
        }
        // SAFETY: `cmsg` is a valid header inside `hdr`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    None
}

/// One datagram to send; `to` is `None` on a connected socket.
#[derive(Clone, Copy)]
pub struct Datagram<'a> {
    pub data: &'a [u8],
    pub to: Option<&'a SockAddr>,
}

/// Receives up to `min(BATCH, meta.len(), buf.len() / slot)` datagrams from a
/// non-blocking socket into consecutive `slot`-sized pieces of `buf`.
/// Returns how many arrived; `WouldBlock` when none did.
pub fn recv_batch(
    fd: RawFd,
    buf: &mut [u8],
    slot: usize,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    assert!(slot > 0, "recv_batch: zero slot size");
    let n = BATCH.min(meta.len()).min(buf.len() / slot);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero bytes are a valid value for these plain C structs
    // (null pointers, zero lengths).
    let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above; sockaddr_storage is plain bytes.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { mem::zeroed() };
    let mut control = [[0u64; CONTROL_WORDS]; BATCH];
    for (i, chunk) in buf.chunks_exact_mut(slot).take(n).enumerate() {
        iov[i].iov_base = chunk.as_mut_ptr().cast();
        iov[i].iov_len = slot;
        hdrs[i].msg_hdr.msg_iov = &mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_control = control[i].as_mut_ptr().cast();
        hdrs[i].msg_hdr.msg_controllen = mem::size_of_val(&control[i]) as _;
    }
    // SAFETY: `hdrs[..n]` point at `iov[..n]`, `addrs[..n]` and `control[..n]`, which outlive the
    // call, and each iovec covers a distinct `slot`-byte piece of `buf` that we
    // borrow mutably for the duration. MSG_DONTWAIT keeps the call non-blocking.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let h = &hdrs[i];
        let len = h.msg_len as usize;
        meta[i] = RecvMeta {
            len: len.min(slot),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > slot,
            from: sockaddr_to_std(&addrs[i], h.msg_hdr.msg_namelen),
            rx_time: rx_timestamp(&h.msg_hdr),
        };
    }
    Ok(got)
}

/// Sends `msgs` with as few `sendmmsg` calls as possible. Returns how many were
/// sent; fewer than `msgs.len()` means the socket would block (or an error hit
/// a later datagram). An error on the very first datagram is returned.
pub fn send_batch(fd: RawFd, msgs: &[Datagram<'_>]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < msgs.len() {
        let chunk = &msgs[sent..msgs.len().min(sent + BATCH)];
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, m) in chunk.iter().enumerate() {
            // sendmmsg only reads through iov_base; the cast to *mut is what the
            // C signature asks for.
            iov[i].iov_base = m.data.as_ptr() as *mut libc::c_void;
            iov[i].iov_len = m.data.len();
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            if let Some(to) = m.to {
                hdrs[i].msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                hdrs[i].msg_hdr.msg_namelen = to.len();
            }
        }
        // SAFETY: `hdrs[..chunk.len()]` point at `iov` entries and addresses that
        // live until the call returns; every iovec covers a live `&[u8]`, which
        // the kernel only reads. MSG_DONTWAIT keeps the call non-blocking.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if sent == 0 { Err(err) } else { Ok(sent) };
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            break;
        }
    }
    Ok(sent)
}

fn sockaddr_to_std(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(s.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, the kernel
            // wrote at least that many bytes, and sockaddr_storage is aligned for
            // every sockaddr type.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `ppoll` over `fds` for at most `timeout` (microsecond resolution, unlike
/// `poll`'s milliseconds, so pacing can wake every ~100 µs). An interrupted
/// wait returns `Ok(0)`.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
    // pollfd structs; `ts` lives across the call; a null sigmask means "keep
    // the current mask".
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            ptr::null(),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Installs SIGINT/SIGTERM handlers that set the returned flag.
pub fn stop_flag_on_signals() -> &'static AtomicBool {
    let handler = on_stop_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only performs an atomic store, which is
        // async-signal-safe; installing it has no other preconditions.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
    &STOP
}

/// User + system CPU seconds this process has used (`getrusage(RUSAGE_SELF)`).
pub fn process_cpu_seconds() -> f64 {
    let mut ru = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a writable rusage; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct (and zeroed()
    // already made every byte valid).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(b.as_raw_fd()).unwrap();
        let to = SockAddr::from(b.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..40).map(|i| format!("msg {i}").into_bytes()).collect();
        let msgs: Vec<Datagram<'_>> = payloads
            .iter()
            .map(|p| Datagram {
                data: p,
                to: Some(&to),
            })
            .collect();
        assert_eq!(send_batch(a.as_raw_fd(), &msgs).unwrap(), 40);

        let mut buf = vec![0u8; BATCH * 64];
        let mut meta = [RecvMeta::default(); BATCH];
        let mut got = Vec::new();
        let mut fds = [libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        while got.len() < 40 {
            poll(&mut fds, Duration::from_secs(1)).unwrap();
            let n = recv_batch(b.as_raw_fd(), &mut buf, 64, &mut meta).unwrap();
            for (i, m) in meta[..n].iter().enumerate() {
                assert!(!m.truncated);
                assert_eq!(m.from, Some(a.local_addr().unwrap()));
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                let t = m.rx_time.expect("kernel timestamp");
                assert!(
                    t <= now && now - t < Duration::from_secs(5),
                    "{t:?} vs {now:?}"
                );
                got.push(buf[i * 64..i * 64 + m.len].to_vec());
            }
        }
        assert_eq!(got, payloads);
        assert!(matches!(
            recv_batch(b.as_raw_fd(), &mut buf, 64, &mut meta),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
    }

    #[test]
    fn cpu_seconds_is_positive_and_monotonic() {
        let a = process_cpu_seconds();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_seconds() >= a);
    }
}
