//! Building the requests a device sends (RFC 3261 §8.1.1, §10.2) and reading
//! back what a response's top Via says about which transaction it answers.
//!
//! Requests are rebuilt from device state instead of stored: a retransmission
//! (RFC 3261 §17.1.2.2) is the same bytes because everything that varies —
//! branch generation, CSeq, nonce-count — is part of that state. So a million
//! devices cost no per-device message buffer.

use std::net::SocketAddr;

use sipreg::auth::{client_response, format_nc, ha1, Ha1};
use sipreg::sip::bytes::push_u64;

use crate::cli::Transport;
use crate::flow::{AuthState, Device, Leg};

/// RFC 3261 §8.1.1.7: branch IDs start with the magic cookie.
pub const BRANCH_COOKIE: &[u8] = b"z9hG4bK";

/// Who the devices are.
#[derive(Debug, Clone)]
pub enum Users {
    /// `{prefix}{index:08}` sharing one password.
    Prefix { prefix: String, password: String },
    /// Listed users, each with a password or a precomputed HA1 (htdigest).
    List(Vec<ListedUser>),
}

#[derive(Debug, Clone)]
pub struct ListedUser {
    pub name: String,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub enum Secret {
    Password(String),
    /// HA1 valid only for this realm.
    Ha1 {
        realm: String,
        ha1: Ha1,
    },
}

impl Users {
    /// Parses a credentials file: `user:password` or `user:realm:HA1` per line;
    /// blank lines and `#` comments are skipped.
    pub fn parse_credentials(text: &str) -> Result<Users, String> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(':').collect();
            let secret = match fields.as_slice() {
                [_, pw] => Secret::Password((*pw).to_string()),
                [_, realm, hex] => {
                    let ha1 = decode_hex16(hex)
                        .ok_or_else(|| format!("line {}: HA1 is not 32 hex digits", i + 1))?;
                    Secret::Ha1 {
                        realm: (*realm).to_string(),
                        ha1,
                    }
                }
                _ => {
                    return Err(format!(
                        "line {}: expected user:password or user:realm:HA1",
                        i + 1
                    ))
                }
            };
            if fields[0].is_empty() {
                return Err(format!("line {}: empty user", i + 1));
            }
            out.push(ListedUser {
                name: fields[0].to_string(),
                secret,
            });
        }
        if out.is_empty() {
            return Err("no users".into());
        }
        Ok(Users::List(out))
    }

    /// How many devices a listed set provides (`None`: any number).
    pub fn limit(&self) -> Option<usize> {
        match self {
            Users::Prefix { .. } => None,
            Users::List(l) => Some(l.len()),
        }
    }

    /// Appends the user part of device `idx`.
    pub fn write_user(&self, out: &mut Vec<u8>, idx: u32) {
        match self {
            Users::Prefix { prefix, .. } => {
                out.extend_from_slice(prefix.as_bytes());
                push_padded(out, u64::from(idx), 8);
            }
            Users::List(l) => out.extend_from_slice(l[idx as usize].name.as_bytes()),
        }
    }

    /// HA1 of device `idx` for `realm`, if its secret allows that realm.
    pub fn ha1(&self, idx: u32, realm: &[u8]) -> Option<Ha1> {
        let mut user = Vec::with_capacity(32);
        self.write_user(&mut user, idx);
        match self {
            Users::Prefix { password, .. } => Some(ha1(&user, realm, password.as_bytes())),
            Users::List(l) => match &l[idx as usize].secret {
                Secret::Password(pw) => Some(ha1(&user, realm, pw.as_bytes())),
                Secret::Ha1 { realm: r, ha1 } => (r.as_bytes() == realm).then_some(*ha1),
            },
        }
    }
}

fn decode_hex16(s: &str) -> Option<Ha1> {
    let s = s.as_bytes();
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// What every request of this run shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub users: std::sync::Arc<Users>,
    /// AOR and Request-URI host.
    pub domain: String,
    pub transport: Transport,
    /// Distinguishes runs in Call-IDs and tags, so a later run's CSeq 1 is a
    /// new dialog for the registrar rather than an out-of-order request.
    pub run_id: u32,
    pub expires: u32,
}

/// Appends `n` in lowercase hex without leading zeros.
pub fn push_hex(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n` in decimal, zero-padded to `width`.
pub fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut m = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    let digits = tmp.len() - i;
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits)));
    out.extend_from_slice(&tmp[i..]);
}

/// Decodes a branch written by [`write_request`]: `z9hG4bK{device:x}.{gen:x}`.
pub fn parse_branch(branch: &[u8]) -> Option<(u32, u32)> {
    let rest = branch.strip_prefix(BRANCH_COOKIE)?;
    let dot = rest.iter().position(|&c| c == b'.')?;
    Some((parse_hex(&rest[..dot])?, parse_hex(&rest[dot + 1..])?))
}

fn parse_hex(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    s.iter()
        .try_fold(0u32, |acc, &c| Some(acc << 4 | (c as char).to_digit(16)?))
}

/// Scratch space reused for every request (the keep-alive body is built first
/// so its Content-Length is known).
#[derive(Default)]
pub struct Writer {
    body: Vec<u8>,
}

impl Writer {
    /// Appends the request for `dev`'s current leg to `out`. `local` is the
    /// socket it leaves from (Via sent-by, RFC 3261 §18.1.1).
    pub fn write_request(&mut self, out: &mut Vec<u8>, ctx: &Ctx, dev: &Device, local: SocketAddr) {
        let Some(p) = dev.pending.as_ref() else {
            debug_assert!(
                false,
                "write_request: device {} has no pending leg",
                dev.idx
            );
            return;
        };
        let leg = p.leg;
        let method: &[u8] = match leg {
            Leg::Challenge | Leg::Auth | Leg::Refresh | Leg::NoAuth => b"REGISTER",
            Leg::Options => b"OPTIONS",
            Leg::Keepalive => b"MESSAGE",
        };
        let domain = ctx.domain.as_bytes();

        // Request line: REGISTER/OPTIONS/MESSAGE go to the domain (RFC 3261 §10.2:
        // the Request-URI of a REGISTER names the registrar's domain, no user part).
        out.extend_from_slice(method);
        out.extend_from_slice(b" sip:");
        out.extend_from_slice(domain);
        out.extend_from_slice(b" SIP/2.0\r\nVia: SIP/2.0/");
        out.extend_from_slice(match ctx.transport {
            Transport::Udp => b"UDP ",
            Transport::Tcp => b"TCP ",
        });
        push_sockaddr(out, local);
        // RFC 3581 §3: ask for the source port in the response.
        out.extend_from_slice(b";branch=");
        out.extend_from_slice(BRANCH_COOKIE);
        push_hex(out, u64::from(dev.idx));
        out.push(b'.');
        push_hex(out, u64::from(dev.gen));
        out.extend_from_slice(b";rport\r\nMax-Forwards: 70\r\nFrom: <sip:");
        ctx.users.write_user(out, dev.idx);
        out.push(b'@');
        out.extend_from_slice(domain);
        out.extend_from_slice(b">;tag=");
        push_hex(out, u64::from(ctx.run_id));
        out.push(b'x');
        push_hex(out, u64::from(dev.idx));
        out.extend_from_slice(b"\r\nTo: <sip:");
        if leg != Leg::Options && leg != Leg::Keepalive {
            // RFC 3261 §10.2: for REGISTER, To carries the AOR being registered.
            ctx.users.write_user(out, dev.idx);
            out.push(b'@');
        }
        out.extend_from_slice(domain);
        out.extend_from_slice(b">\r\nCall-ID: ");
        push_call_id(out, ctx, dev.idx);
        out.extend_from_slice(b"\r\nCSeq: ");
        push_u64(out, u64::from(dev.cseq));
        out.push(b' ');
        out.extend_from_slice(method);
        out.extend_from_slice(b"\r\n");

        match leg {
            Leg::Challenge | Leg::Auth | Leg::Refresh | Leg::NoAuth => {
                // The Contact has no port on purpose: it stays the same binding
                // across runs (whose source ports differ), so repeated runs update
                // one binding per AOR instead of piling up to --max-contacts; the
                // registrar keeps the real source address (RFC 3581) for NAT.
                out.extend_from_slice(b"Contact: <sip:");
                ctx.users.write_user(out, dev.idx);
                out.push(b'@');
                push_ip(out, local);
                out.extend_from_slice(match ctx.transport {
                    Transport::Udp => b";transport=udp>\r\nExpires: ",
                    Transport::Tcp => b";transport=tcp>\r\nExpires: ",
                });
                push_u64(out, u64::from(ctx.expires));
                out.extend_from_slice(b"\r\n");
                if matches!(leg, Leg::Auth | Leg::Refresh) {
                    if let Some(auth) = dev.auth.as_deref() {
                        write_authorization(out, ctx, dev, auth, method, domain);
                    }
                }
                out.extend_from_slice(b"User-Agent: sipload\r\nContent-Length: 0\r\n\r\n");
            }
            Leg::Options => {
                out.extend_from_slice(
                    b"Accept: application/sdp\r\nUser-Agent: sipload\r\nContent-Length: 0\r\n\r\n",
                );
            }
            Leg::Keepalive => {
                // GB28181-2016 §9.6.1: the device's keep-alive notification.
                let body = &mut self.body;
                body.clear();
                body.extend_from_slice(
                    b"<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n\
                      <CmdType>Keepalive</CmdType>\r\n<SN>",
                );
                push_u64(body, u64::from(dev.sn));
                body.extend_from_slice(b"</SN>\r\n<DeviceID>");
                ctx.users.write_user(body, dev.idx);
                body.extend_from_slice(b"</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n");
                out.extend_from_slice(
                    b"Content-Type: Application/MANSCDP+xml\r\nUser-Agent: sipload\r\nContent-Length: ",
                );
                push_u64(out, body.len() as u64);
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(body);
            }
        }
    }
}

/// `Authorization: Digest …` for the stored challenge (RFC 2617 §3.2.2); with
/// qop the response uses the device's current nonce-count.
fn write_authorization(
    out: &mut Vec<u8>,
    ctx: &Ctx,
    dev: &Device,
    auth: &AuthState,
    method: &[u8],
    domain: &[u8],
) {
    let mut uri = [0u8; 300];
    let uri_len = 4 + domain.len();
    let uri = match uri.get_mut(..uri_len) {
        Some(u) => {
            u[..4].copy_from_slice(b"sip:");
            u[4..].copy_from_slice(domain);
            &*u
        }
        None => return,
    };
    // cnonce: 8 hex digits of the device, 8 of the run (stable across
    // retransmissions of the leg, so they stay byte-identical).
    let mut cnonce = [0u8; 16];
    hex8(&mut cnonce[..8], dev.idx);
    hex8(&mut cnonce[8..], ctx.run_id);
    let cnonce = &cnonce[..];
    let qop = auth.qop.then_some((dev.nc, cnonce));
    let response = client_response(&auth.ha1, &auth.nonce, method, uri, qop);

    out.extend_from_slice(if auth.proxy {
        b"Proxy-Authorization: Digest username=\""
    } else {
        b"Authorization: Digest username=\""
    });
    ctx.users.write_user(out, dev.idx);
    out.extend_from_slice(b"\", realm=\"");
    out.extend_from_slice(&auth.realm);
    out.extend_from_slice(b"\", nonce=\"");
    out.extend_from_slice(&auth.nonce);
    out.extend_from_slice(b"\", uri=\"");
    out.extend_from_slice(uri);
    out.extend_from_slice(b"\", response=\"");
    out.extend_from_slice(&response);
    out.extend_from_slice(b"\", algorithm=MD5");
    if auth.qop {
        out.extend_from_slice(b", qop=auth, nc=");
        out.extend_from_slice(&format_nc(dev.nc));
        out.extend_from_slice(b", cnonce=\"");
        out.extend_from_slice(cnonce);
        out.push(b'"');
    }
    if let Some(opaque) = &auth.opaque {
        // RFC 2617 §3.2.2: opaque is returned unchanged.
        out.extend_from_slice(b", opaque=\"");
        out.extend_from_slice(opaque);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

fn hex8(out: &mut [u8], n: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out.iter_mut().enumerate().take(8) {
        *o = DIGITS[((n >> (28 - 4 * i)) & 0xf) as usize];
    }
}

/// `{run:x}-{device:x}@sipload`: one Call-ID per device per run (RFC 3261
/// §10.2: a UA uses the same Call-ID for all REGISTERs to one registrar).
pub fn push_call_id(out: &mut Vec<u8>, ctx: &Ctx, idx: u32) {
    push_hex(out, u64::from(ctx.run_id));
    out.push(b'-');
    push_hex(out, u64::from(idx));
    out.extend_from_slice(b"@sipload");
}

fn push_ip(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            let o = v4.ip().octets();
            for (i, b) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(*b));
            }
        }
        SocketAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "[{}]", v6.ip());
        }
    }
}

fn push_sockaddr(out: &mut Vec<u8>, a: SocketAddr) {
    push_ip(out, a);
    out.push(b':');
    push_u64(out, u64::from(a.port()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_round_trips() {
        let mut out = Vec::new();
        out.extend_from_slice(BRANCH_COOKIE);
        push_hex(&mut out, 0xdead_beef);
        out.push(b'.');
        push_hex(&mut out, 7);
        assert_eq!(parse_branch(&out), Some((0xdead_beef, 7)));
        assert_eq!(parse_branch(b"z9hG4bK1.0"), Some((1, 0)));
        assert_eq!(parse_branch(b"z9hG4bKx.1"), None);
        assert_eq!(parse_branch(b"abc1.1"), None);
        assert_eq!(parse_branch(b"z9hG4bK1"), None);
        assert_eq!(parse_branch(b"z9hG4bK123456789.1"), None);
    }

    #[test]
    fn padded_and_hex_numbers() {
        let mut out = Vec::new();
        push_padded(&mut out, 42, 8);
        out.push(b' ');
        push_padded(&mut out, 123_456_789, 8);
        out.push(b' ');
        push_hex(&mut out, 0);
        out.push(b' ');
        push_hex(&mut out, 255);
        assert_eq!(out, b"00000042 123456789 0 ff");
        let mut h = [0u8; 8];
        hex8(&mut h, 0x0102_abcd);
        assert_eq!(&h, b"0102abcd");
    }

    #[test]
    fn credentials_file_parses_both_forms() {
        let u = Users::parse_credentials(
            "# comment\nalice:pw1\n\nbob:sipreg:0123456789abcdef0123456789ABCDEF\n",
        )
        .unwrap();
        assert_eq!(u.limit(), Some(2));
        let mut name = Vec::new();
        u.write_user(&mut name, 1);
        assert_eq!(name, b"bob");
        assert_eq!(u.ha1(0, b"sipreg"), Some(ha1(b"alice", b"sipreg", b"pw1")));
        assert_eq!(u.ha1(1, b"sipreg").unwrap()[0], 0x01);
        assert_eq!(u.ha1(1, b"other"), None);
        assert!(Users::parse_credentials("bob:r:nothex").is_err());
        assert!(Users::parse_credentials("justauser").is_err());
        assert!(Users::parse_credentials("").is_err());
    }
}
