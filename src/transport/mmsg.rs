//! `recvmmsg`/`sendmmsg` batching for a worker's UDP socket (Linux): one
//! system call reads up to [`BATCH`] datagrams and one sends their answers,
//! instead of a `recvfrom` and a `sendto` per request plus a final `recvfrom`
//! that only reports `EAGAIN`. The structure follows quinn-udp (stack arrays of
//! `mmsghdr`, a batch of 32); none of its QUIC socket options are used. All the
//! server's `unsafe` code is in this module.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use socket2::SockAddr;

use crate::sip::MAX_UDP_MESSAGE;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Bytes per receive slot: any UDP payload fits, so nothing is truncated.
const SLOT: usize = MAX_UDP_MESSAGE + 1;

/// Received datagrams: `BATCH` slots of one preallocated buffer (2 MiB).
pub struct RxBatch {
    buf: Box<[u8]>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
}

impl Default for RxBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RxBatch {
    pub fn new() -> Self {
        RxBatch {
            buf: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            lens: [0; BATCH],
            from: [None; BATCH],
        }
    }

    /// Reads what is queued, up to `BATCH` datagrams; `WouldBlock` when none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero bytes are valid values for these plain C structs
        // (null pointers, zero lengths, an unspecified address family).
        let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { mem::zeroed() };
        for (i, slot) in self.buf.chunks_exact_mut(SLOT).enumerate() {
            iov[i].iov_base = slot.as_mut_ptr().cast();
            iov[i].iov_len = SLOT;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen =
                mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: each header points at its own iovec and address slot, and
        // each iovec at a distinct SLOT-byte piece of `self.buf`; all of them
        // outlive the call and are borrowed mutably for it. MSG_DONTWAIT keeps
        // the call from blocking.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            self.lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
            // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes
            // into `addrs[i]`, a `sockaddr_storage`, which SockAddr takes by
            // value.
            let addr = unsafe { SockAddr::new(addrs[i], hdrs[i].msg_hdr.msg_namelen) };
            self.from[i] = addr.as_socket();
        }
        Ok(got)
    }

    /// Datagram `i` of the last [`RxBatch::recv`] and where it came from.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * SLOT;
        (&self.buf[start..start + self.lens[i]], self.from[i])
    }
}

/// Answers waiting to go out in one `sendmmsg`; buffers keep their capacity.
#[derive(Default)]
pub struct TxBatch {
    bufs: Vec<Vec<u8>>,
    to: Vec<SockAddr>,
    len: usize,
}

impl TxBatch {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a copy of `bytes` for `to`.
    pub fn push(&mut self, bytes: &[u8], to: SocketAddr) {
        if self.len == self.bufs.len() {
            self.bufs.push(Vec::new());
            self.to.push(SockAddr::from(to));
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        b.extend_from_slice(bytes);
        self.to[self.len] = SockAddr::from(to);
        self.len += 1;
    }

    /// Sends everything queued, `BATCH` per call, and empties the queue. A
    /// datagram the kernel refuses (full buffer, unreachable peer) is dropped:
    /// the client retransmits and the transaction cache answers again.
    /// Returns how many were dropped, for the caller to count.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut sent = 0;
        let mut failed = 0;
        while sent < self.len {
            let chunk = (self.len - sent).min(BATCH);
            // SAFETY: all-zero bytes are valid values for these C structs.
            let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
            for i in 0..chunk {
                let b = &self.bufs[sent + i];
                let to = &self.to[sent + i];
                iov[i].iov_base = b.as_ptr() as *mut libc::c_void;
                iov[i].iov_len = b.len();
                hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
                hdrs[i].msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                hdrs[i].msg_hdr.msg_namelen = to.len();
            }
            // SAFETY: each header points at its own iovec and address; the
            // iovecs point at buffers in `self.bufs` and the addresses at
            // `self.to`, all unchanged and alive for the call; the kernel only
            // reads them (and writes `msg_len`).
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    chunk as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::trace!("sendmmsg: {err}; dropping one answer");
                // Skip the datagram that failed and carry on with the rest.
                sent += 1;
                failed += 1;
                continue;
            }
            sent += n as usize;
        }
        self.len = 0;
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_round_trip_with_addresses() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let mut rx = RxBatch::new();
        assert_eq!(
            rx.recv(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(
                format!("hello {i}").as_bytes(),
                server.local_addr().unwrap(),
            )
            .unwrap();
        }
        let big = vec![b'x'; 60_000];
        clients[0]
            .send_to(&big, server.local_addr().unwrap())
            .unwrap();
        // Datagrams on loopback are queued by the time send_to returns.
        let n = rx.recv(server.as_raw_fd()).unwrap();
        assert_eq!(n, 4);
        for (i, c) in clients.iter().enumerate() {
            let (data, from) = rx.get(i);
            assert_eq!(data, format!("hello {i}").as_bytes());
            assert_eq!(from, Some(c.local_addr().unwrap()));
        }
        assert_eq!(rx.get(3).0.len(), 60_000);

        let mut tx = TxBatch::default();
        for (i, c) in clients.iter().enumerate() {
            tx.push(format!("answer {i}").as_bytes(), c.local_addr().unwrap());
        }
        assert_eq!(tx.len(), 3);
        assert_eq!(tx.flush(server.as_raw_fd()), 0);
        assert!(tx.is_empty());
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 64];
            c.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], format!("answer {i}").as_bytes());
            assert_eq!(from, server.local_addr().unwrap());
        }
    }
}
