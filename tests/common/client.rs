//! A tiny SIP user agent for black-box tests: UDP and TCP connections with
//! read deadlines, a REGISTER builder, responses read back with the crate's
//! own scanner, and a digest-answering [`Ua`].
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sipreg::auth::{client_response_key, format_nc, Algorithm, Ha1Key};
use sipreg::sip::{self, AuthHeader, Frame, HeaderId, NameAddr, StartLine, Via};

/// How long a test waits for an answer it expects.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A process-unique token for branches, tags and Call-IDs.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A fresh RFC 3261 branch (magic cookie included).
pub fn branch() -> String {
    unique("z9hG4bK")
}

// ---------------------------------------------------------------- transports

/// One flow to the server: a UDP socket or a TCP connection.
pub trait Conn {
    /// "UDP" or "TCP", as written in Via.
    fn transport(&self) -> &'static str;
    fn local_addr(&self) -> SocketAddr;
    fn send(&mut self, bytes: &[u8]);
    /// The next whole message from the server, or `None` after `timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Option<Vec<u8>>;

    /// The next message, which must arrive within [`ANSWER_TIMEOUT`].
    /// Server-originated requests (GB28181 queries) are skipped.
    fn recv(&mut self) -> Response {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = self
                .recv_timeout(left)
                .unwrap_or_else(|| panic!("no answer within {ANSWER_TIMEOUT:?}"));
            if !sip::scan(&raw).is_ok_and(|m| m.is_request()) {
                return Response::new(raw);
            }
        }
    }

    /// Sends a request and returns the response to it: the first response
    /// whose top Via branch is the request's (others, e.g. answers to an
    /// earlier retransmission, are skipped).
    fn request(&mut self, bytes: &[u8]) -> Response {
        let want = request_branch(bytes);
        self.send(bytes);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = self.recv_timeout(left).unwrap_or_else(|| {
                panic!(
                    "no answer within {ANSWER_TIMEOUT:?} to:\n{}",
                    String::from_utf8_lossy(bytes)
                )
            });
            // A GB28181 device id's first registration makes the server send
            // a Catalog query: requests from the server are not answers.
            if sip::scan(&raw).is_ok_and(|m| m.is_request()) {
                continue;
            }
            let resp = Response::new(raw);
            if want.is_none() || resp.branch() == want {
                return resp;
            }
        }
    }
}

pub struct Udp {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Udp {
    pub fn connect(server: SocketAddr) -> Udp {
        Udp::connect_from("127.0.0.1", server)
    }

    /// From another loopback address (`127.0.0.2`, …): another source IP
    /// as far as the server can tell.
    pub fn connect_from(local_ip: &str, server: SocketAddr) -> Udp {
        let sock =
            UdpSocket::bind((local_ip, 0)).unwrap_or_else(|e| panic!("bind {local_ip}: {e}"));
        Udp { sock, server }
    }
}

impl Conn for Udp {
    fn transport(&self) -> &'static str {
        "UDP"
    }

    fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local addr")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).expect("send_to");
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            match self.sock.recv_from(&mut buf) {
                // Only the server's datagrams count.
                Ok((n, from)) if from == self.server => {
                    buf.truncate(n);
                    return Some(buf);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }
}

pub struct Tcp {
    pub stream: TcpStream,
    /// Bytes read but not yet returned as a message.
    buf: Vec<u8>,
}

impl Tcp {
    pub fn connect(server: SocketAddr) -> Tcp {
        let stream = TcpStream::connect(server).expect("connect tcp");
        stream.set_nodelay(true).expect("nodelay");
        Tcp {
            stream,
            buf: Vec::new(),
        }
    }

    /// A connection from `ip` (e.g. 127.0.0.2, to be another source than the
    /// well-behaved devices).
    pub fn connect_from(ip: std::net::Ipv4Addr, server: SocketAddr) -> Tcp {
        Tcp::connect_with(ip, server, None)
    }

    /// Binds to `ip` and, if given, sets a small receive buffer before the
    /// handshake (so the TCP window stays small), then connects.
    pub fn connect_with(ip: std::net::Ipv4Addr, server: SocketAddr, rcvbuf: Option<usize>) -> Tcp {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        if let Some(size) = rcvbuf {
            s.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        s.bind(&SocketAddr::from((ip, 0)).into())
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        s.connect(&server.into()).expect("connect");
        let stream: TcpStream = s.into();
        stream.set_nodelay(true).expect("nodelay");
        Tcp {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends OPTIONS and says whether a 200 came back (false: closed or silent).
    pub fn served(&mut self) -> bool {
        let req = simple_request("OPTIONS", &*self);
        if self.stream.write_all(&req).is_err() {
            return false;
        }
        self.recv_timeout(Duration::from_secs(5))
            .is_some_and(|m| m.starts_with(b"SIP/2.0 200 "))
    }

    /// Raw bytes as they arrive (for the CRLF pong): whatever is buffered, or
    /// the next read. `None` on timeout; `Some(empty)` when the server closed.
    pub fn read_raw(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        if !self.buf.is_empty() {
            return Some(std::mem::take(&mut self.buf));
        }
        let mut chunk = [0u8; 4096];
        self.read_some(&mut chunk, timeout)
            .map(|n| chunk[..n].to_vec())
    }

    /// True once the server has closed the connection (read returns 0 or a
    /// reset) within `timeout`; data arriving meanwhile is kept.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_some(&mut chunk, left) {
                Some(0) => return true,
                Some(n) => self.buf.extend_from_slice(&chunk[..n]),
                None => {}
            }
        }
        false
    }

    /// One read with a deadline: `Some(0)` on close or reset, `None` on timeout.
    fn read_some(&mut self, chunk: &mut [u8], timeout: Duration) -> Option<usize> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        loop {
            match self.stream.read(chunk) {
                Ok(n) => return Some(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                // Reset, broken pipe and the like: the server is gone.
                Err(_) => return Some(0),
            }
        }
    }
}

impl Conn for Tcp {
    fn transport(&self) -> &'static str {
        "TCP"
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("tcp write");
    }

    /// Frames messages with the crate's own stream framer; a lone CRLF pong
    /// is skipped.
    fn recv_timeout(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match sip::frame(&self.buf) {
                Ok(Frame::Message(n)) => return Some(self.buf.drain(..n).collect()),
                Ok(Frame::Skip(n) | Frame::Ping(n)) => {
                    self.buf.drain(..n);
                    continue;
                }
                Ok(Frame::NeedMore) => {}
                Err(e) => panic!(
                    "server sent an unframeable stream ({e:?}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.read_some(&mut chunk, left) {
                Some(0) => return None,
                Some(n) => self.buf.extend_from_slice(&chunk[..n]),
                None => return None,
            }
        }
    }
}

// ---------------------------------------------------------------- responses

/// A response from the server, read with `sipreg::sip::scan`.
#[derive(Clone)]
pub struct Response {
    pub raw: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.raw))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Response {
    /// Panics unless `raw` scans as a SIP response.
    pub fn new(raw: Vec<u8>) -> Response {
        let msg = sip::scan(&raw).unwrap_or_else(|e| {
            panic!(
                "server sent an unscannable message ({e:?}):\n{}",
                String::from_utf8_lossy(&raw)
            )
        });
        assert!(
            !msg.is_request(),
            "server sent a request:\n{}",
            String::from_utf8_lossy(&raw)
        );
        Response { raw }
    }

    fn msg(&self) -> sip::Message<'_> {
        sip::scan(&self.raw).expect("scanned in new")
    }

    pub fn code(&self) -> u16 {
        match self.msg().start {
            StartLine::Response(s) => s.code,
            StartLine::Request(_) => unreachable!("checked in new"),
        }
    }

    pub fn reason(&self) -> String {
        match self.msg().start {
            StartLine::Response(s) => text(s.reason),
            StartLine::Request(_) => unreachable!("checked in new"),
        }
    }

    /// The first value of a header.
    pub fn header(&self, id: HeaderId) -> Option<String> {
        self.msg().value(id).map(text)
    }

    /// Every header field with this id (one entry per header line).
    pub fn header_lines(&self, id: HeaderId) -> Vec<String> {
        self.msg().all(id).map(|h| text(h.value)).collect()
    }

    /// Every header name as written, lowercased, sorted (for comparing the
    /// shape of two answers).
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .msg()
            .headers()
            .map(|h| text(h.name).to_ascii_lowercase())
            .collect();
        names.sort();
        names
    }

    pub fn has(&self, id: HeaderId) -> bool {
        self.msg().header(id).is_some()
    }

    /// Every Contact element as (URI, `expires` parameter).
    pub fn contacts(&self) -> Vec<(String, Option<u32>)> {
        let msg = self.msg();
        msg.list(HeaderId::Contact)
            .map(|c| {
                let na = NameAddr::parse(c)
                    .unwrap_or_else(|e| panic!("bad Contact {:?}: {e:?}", text(c)));
                let exp = na.expires().map(|e| e.expect("numeric ;expires="));
                (text(na.uri), exp)
            })
            .collect()
    }

    /// The `;expires=` of the Contact whose URI is `uri`, if listed.
    pub fn expires_of(&self, uri: &str) -> Option<u32> {
        let mut found = self.contacts().into_iter().filter(|(u, _)| u == uri);
        let (_, exp) = found.next()?;
        assert!(found.next().is_none(), "{uri} listed twice:\n{self:?}");
        Some(exp.unwrap_or_else(|| panic!("{uri} listed without ;expires=:\n{self:?}")))
    }

    /// The listed Contact URIs, sorted.
    pub fn contact_uris(&self) -> Vec<String> {
        let mut uris: Vec<String> = self.contacts().into_iter().map(|(u, _)| u).collect();
        uris.sort();
        uris
    }

    /// Every WWW-Authenticate challenge, in order.
    pub fn challenges(&self) -> Vec<Offered> {
        self.msg()
            .all(HeaderId::WwwAuthenticate)
            .map(|h| {
                let auth = AuthHeader::parse(h.value)
                    .unwrap_or_else(|e| panic!("bad WWW-Authenticate {:?}: {e:?}", text(h.value)));
                assert!(
                    auth.is_digest(),
                    "not a Digest challenge: {}",
                    text(h.value)
                );
                Offered {
                    params: auth
                        .params()
                        .map(|(n, v)| (text(n).to_ascii_lowercase(), text(v)))
                        .collect(),
                }
            })
            .collect()
    }

    /// The `algorithm` of every WWW-Authenticate challenge, in order
    /// (`MD5` where it is absent).
    pub fn challenge_algorithms(&self) -> Vec<String> {
        self.challenges()
            .iter()
            .map(|c| c.param("algorithm").unwrap_or_else(|| "MD5".into()))
            .collect()
    }

    /// A parameter of the (first) WWW-Authenticate challenge (quotes removed).
    pub fn challenge_param(&self, name: &str) -> Option<String> {
        let value = self.msg().value(HeaderId::WwwAuthenticate)?;
        let auth = AuthHeader::parse(value)
            .unwrap_or_else(|e| panic!("bad WWW-Authenticate {:?}: {e:?}", text(value)));
        assert!(auth.is_digest(), "not a Digest challenge: {}", text(value));
        auth.param(name.as_bytes()).map(text)
    }

    /// The challenge's parameter names, lowercased and sorted.
    pub fn challenge_param_names(&self) -> Vec<String> {
        let value = self
            .msg()
            .value(HeaderId::WwwAuthenticate)
            .expect("WWW-Authenticate");
        let auth = AuthHeader::parse(value).expect("challenge parses");
        let mut names: Vec<String> = auth
            .params()
            .map(|(n, _)| text(n).to_ascii_lowercase())
            .collect();
        names.sort();
        names
    }

    /// The top Via element of the response.
    pub fn top_via(&self) -> String {
        text(self.msg().top_via().expect("response Via"))
    }

    /// A parameter of the top Via: `Some(None)` for a bare flag.
    pub fn via_param(&self, name: &str) -> Option<Option<String>> {
        let msg = self.msg();
        let via = Via::parse(msg.top_via().expect("response Via")).expect("response Via parses");
        via.params().get(name.as_bytes()).map(|v| v.map(text))
    }

    pub fn branch(&self) -> Option<String> {
        let msg = self.msg();
        let via = Via::parse(msg.top_via()?).ok()?;
        via.branch().map(text)
    }

    pub fn cseq(&self) -> (u32, String) {
        let c = self.msg().cseq();
        (c.seq, text(c.method))
    }

    pub fn call_id(&self) -> String {
        text(self.msg().call_id())
    }
}

/// One WWW-Authenticate challenge of a 401.
#[derive(Clone, Debug)]
pub struct Offered {
    /// Parameters in order, names lowercased, quotes removed.
    pub params: Vec<(String, String)>,
}

impl Offered {
    /// A parameter's value (`name` in lower case).
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// The top Via branch of a request we are about to send.
pub fn request_branch(bytes: &[u8]) -> Option<String> {
    let msg = sip::scan(bytes).ok()?;
    let via = Via::parse(msg.top_via()?).ok()?;
    via.branch().map(text)
}

// ---------------------------------------------------------------- requests

/// A REGISTER for `user@domain`, built field by field.
#[derive(Clone, Debug)]
pub struct Register {
    /// Request-URI.
    pub uri: String,
    /// The AOR in To and From (`sip:alice@example.com`).
    pub aor: String,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    /// Contact header values, one header line each (`<sip:a@1.2.3.4>;expires=60`).
    pub contacts: Vec<String>,
    pub expires: Option<u32>,
    pub authorization: Option<String>,
    /// `None`: a fresh branch for every [`build`](Self::build).
    pub branch: Option<String>,
    /// Via sent-by; `None`: the connection's local address.
    pub sent_by: Option<String>,
    pub rport: bool,
    /// Extra header lines, without CRLF.
    pub extra: Vec<String>,
}

impl Register {
    pub fn new(user: &str, domain: &str) -> Register {
        Register {
            uri: format!("sip:{domain}"),
            aor: format!("sip:{user}@{domain}"),
            call_id: unique("cid-"),
            from_tag: unique("tag"),
            cseq: 1,
            contacts: Vec::new(),
            expires: None,
            authorization: None,
            branch: None,
            sent_by: None,
            rport: true,
            extra: Vec::new(),
        }
    }

    pub fn contact(mut self, value: &str) -> Register {
        self.contacts.push(value.to_string());
        self
    }

    pub fn expires(mut self, secs: u32) -> Register {
        self.expires = Some(secs);
        self
    }

    pub fn build(&self, conn: &dyn Conn) -> Vec<u8> {
        let branch = self.branch.clone().unwrap_or_else(branch);
        let sent_by = self
            .sent_by
            .clone()
            .unwrap_or_else(|| conn.local_addr().to_string());
        let mut m = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {sent_by};branch={branch}{rport}\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={tag}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n",
            uri = self.uri,
            transport = conn.transport(),
            rport = if self.rport { ";rport" } else { "" },
            aor = self.aor,
            tag = self.from_tag,
            call_id = self.call_id,
            cseq = self.cseq,
        );
        for c in &self.contacts {
            m += &format!("Contact: {c}\r\n");
        }
        if let Some(e) = self.expires {
            m += &format!("Expires: {e}\r\n");
        }
        if let Some(a) = &self.authorization {
            m += &format!("Authorization: {a}\r\n");
        }
        for h in &self.extra {
            m += h;
            m += "\r\n";
        }
        m += "User-Agent: sipreg-tests\r\nContent-Length: 0\r\n\r\n";
        m.into_bytes()
    }
}

/// A request of any method with the mandatory headers (OPTIONS, INVITE, …).
pub fn simple_request(method: &str, conn: &dyn Conn) -> Vec<u8> {
    format!(
        "{method} sip:registrar@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag={tag}\r\n\
         To: <sip:registrar@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n",
        transport = conn.transport(),
        local = conn.local_addr(),
        branch = branch(),
        tag = unique("tag"),
        call_id = unique("cid-"),
    )
    .into_bytes()
}

// ---------------------------------------------------------------- digest

/// What a client keeps from a challenge to answer it (and later requests).
#[derive(Clone, Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// The challenge's algorithm, which the answer uses too.
    pub algorithm: Algorithm,
}

impl Challenge {
    /// The first challenge of a 401 whose algorithm this client supports
    /// (MD5 or SHA-256), as RFC 8760 §2.4 asks of a UAC.
    pub fn from_401(resp: &Response) -> Challenge {
        Self::first_supported(resp, &Algorithm::ALL)
    }

    /// The first challenge of a 401 with one of `supported` (a client that
    /// knows only these; `&[Algorithm::Md5]` plays an MD5-only device).
    pub fn first_supported(resp: &Response, supported: &[Algorithm]) -> Challenge {
        assert_eq!(resp.code(), 401, "expected a challenge:\n{resp:?}");
        let found = resp.challenges().into_iter().find_map(|c| {
            let alg = match c.param("algorithm") {
                None => Algorithm::Md5,
                Some(a) => Algorithm::from_token(a.as_bytes())?,
            };
            supported.contains(&alg).then_some((alg, c))
        });
        let Some((algorithm, offered)) = found else {
            panic!("no challenge with {supported:?}:\n{resp:?}");
        };
        Challenge {
            realm: offered.param("realm").expect("realm"),
            nonce: offered.param("nonce").expect("nonce"),
            opaque: offered.param("opaque"),
            algorithm,
        }
    }

    /// The Authorization value for `method request_uri`; `qop` is
    /// `Some((nc, cnonce))` for `qop=auth`, `None` for the RFC 2069 form.
    pub fn authorization(
        &self,
        username: &str,
        password: &str,
        method: &str,
        request_uri: &str,
        qop: Option<(u32, &str)>,
    ) -> String {
        let key = Ha1Key::derive(
            self.algorithm,
            username.as_bytes(),
            self.realm.as_bytes(),
            password.as_bytes(),
        );
        let response = client_response_key(
            &key,
            self.nonce.as_bytes(),
            method.as_bytes(),
            request_uri.as_bytes(),
            qop.map(|(nc, cnonce)| (nc, cnonce.as_bytes())),
        );
        let mut h = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{request_uri}\", \
             response=\"{}\", algorithm={}",
            self.realm,
            self.nonce,
            text(&response),
            self.algorithm,
        );
        if let Some((nc, cnonce)) = qop {
            h += &format!(
                ", qop=auth, nc={}, cnonce=\"{cnonce}\"",
                text(&format_nc(nc))
            );
        }
        if let Some(o) = &self.opaque {
            h += &format!(", opaque=\"{o}\"");
        }
        h
    }
}

/// A registering user agent: one flow, one Call-ID, a CSeq that goes up by
/// one per request, and digest credentials answered with `qop=auth`.
pub struct Ua<C: Conn> {
    pub conn: C,
    pub username: String,
    pub password: String,
    /// The template for every REGISTER (AOR, Call-ID, tag, Request-URI).
    pub reg: Register,
    /// The last challenge and the nonce-count used with it.
    pub challenge: Option<Challenge>,
    pub nc: u32,
    /// The digest algorithms this UA knows (both by default; set
    /// `&[Algorithm::Md5]` to play an MD5-only device).
    pub algorithms: &'static [Algorithm],
}

impl<C: Conn> Ua<C> {
    /// A UA registering `user@domain` with username `user`.
    pub fn new(conn: C, user: &str, domain: &str, password: &str) -> Ua<C> {
        Ua {
            conn,
            username: user.to_string(),
            password: password.to_string(),
            reg: Register::new(user, domain),
            challenge: None,
            nc: 0,
            algorithms: &Algorithm::ALL,
        }
    }

    /// The next REGISTER (next CSeq, fresh branch) with these Contact values
    /// and optional Expires header, authorised with the current challenge if
    /// there is one.
    pub fn next_register(&mut self, contacts: &[&str], expires: Option<u32>) -> Register {
        self.reg.cseq += 1;
        let mut r = self.reg.clone();
        r.contacts = contacts.iter().map(|c| c.to_string()).collect();
        r.expires = expires;
        r.authorization = self.next_authorization(&r.uri.clone());
        r
    }

    /// An Authorization for the current challenge with the next nonce-count.
    pub fn next_authorization(&mut self, request_uri: &str) -> Option<String> {
        let ch = self.challenge.as_ref()?;
        self.nc += 1;
        Some(ch.authorization(
            &self.username,
            &self.password,
            "REGISTER",
            request_uri,
            Some((self.nc, "0a4f113b")),
        ))
    }

    /// Sends REGISTER and answers a 401 once: returns the final response.
    pub fn register(&mut self, contacts: &[&str], expires: Option<u32>) -> Response {
        let r = self.next_register(contacts, expires);
        let resp = self.conn.request(&r.build(&self.conn));
        if resp.code() != 401 {
            return resp;
        }
        self.challenge = Some(Challenge::first_supported(&resp, self.algorithms));
        self.nc = 0;
        let r = self.next_register(contacts, expires);
        self.conn.request(&r.build(&self.conn))
    }

    /// A REGISTER without Contact: the current bindings.
    pub fn query(&mut self) -> Response {
        let resp = self.register(&[], None);
        assert_eq!(resp.code(), 200, "query failed:\n{resp:?}");
        resp
    }

    /// Sends this REGISTER (as built for this flow) and returns the answer.
    pub fn send(&mut self, r: &Register) -> Response {
        let bytes = r.build(&self.conn);
        self.conn.request(&bytes)
    }

    /// Sends exactly these bytes and returns the answer.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Response {
        self.conn.request(bytes)
    }
}

/// A GB28181 MANSCDP MESSAGE (keep-alive, catalog or device-info answer)
/// from `device` to platform 34020000002000000001 in domain 3402000000, sent
/// on this flow, with a fresh branch, tag and Call-ID.
pub fn manscdp_message(conn: &dyn Conn, device: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n\
         Via: SIP/2.0/{} {};rport;branch={}\r\n\
         From: <sip:{device}@3402000000>;tag={}\r\n\
         To: <sip:34020000002000000001@3402000000>\r\n\
         Call-ID: {}\r\n\
         CSeq: 20 MESSAGE\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: Application/MANSCDP+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        conn.transport(),
        conn.local_addr(),
        branch(),
        unique("tag"),
        unique("cid-"),
        body.len()
    )
    .into_bytes()
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
