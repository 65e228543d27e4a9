//! Writing a response to a scanned request into a reused buffer (RFC 3261 §8.2.6):
//! status line, every Via in order (the top one stamped with `received` and,
//! when asked, `rport` per RFC 3581 §4), From, To (with a To-tag when absent),
//! Call-ID, CSeq, then the caller's headers, Content-Length and the body.

use std::io::Write as _;
use std::net::SocketAddr;

use memchr::memchr;

use super::bytes::{self, push_u64};
use super::header::HeaderId;
use super::list::ListIter;
use super::message::Message;
use super::via::{Rport, Via};

/// Builds one response in `out`; create with [`ResponseWriter::start`], add
/// headers, then [`ResponseWriter::finish`].
pub struct ResponseWriter<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> ResponseWriter<'o> {
    /// Clears `out` and writes everything a response copies from its request.
    /// `source` is where the request came from; `to_tag` is used when the To
    /// header has no tag (it must be the same for a retransmission, so callers
    /// derive it from the request rather than drawing it at random).
    pub fn start(
        out: &'o mut Vec<u8>,
        req: &Message<'_>,
        code: u16,
        reason: &[u8],
        source: SocketAddr,
        to_tag: &[u8],
    ) -> Self {
        out.clear();
        out.extend_from_slice(b"SIP/2.0 ");
        push_u64(out, u64::from(code));
        out.push(b' ');
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");

        // One Via line per Via line of the request, elements comma-joined
        // (RFC 3261 §7.3.1), so the answer never has more header lines than
        // the request; empty elements (stray commas) are not copied.
        let mut top = true;
        for header in req.all(HeaderId::Via) {
            let mut first_on_line = true;
            for via in ListIter::new(header.value).filter(|v| !v.is_empty()) {
                out.extend_from_slice(if first_on_line { b"Via: " } else { b", " });
                first_on_line = false;
                if top {
                    write_top_via(out, via, source);
                    top = false;
                } else {
                    push_unfolded(out, via);
                }
            }
            if !first_on_line {
                out.extend_from_slice(b"\r\n");
            }
        }
        if let Some(from) = req.value(HeaderId::From) {
            line(out, b"From", from);
        }
        if let Some(to) = req.value(HeaderId::To) {
            out.extend_from_slice(b"To: ");
            push_unfolded(out, to);
            let has_tag = super::addr::NameAddr::parse(to).is_ok_and(|a| a.tag().is_some());
            // RFC 3261 §8.2.6.2: a response other than 100 gets a To-tag.
            if !has_tag && code != 100 && !to_tag.is_empty() {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(to_tag);
            }
            out.extend_from_slice(b"\r\n");
        }
        if let Some(call_id) = req.value(HeaderId::CallId) {
            line(out, b"Call-ID", call_id);
        }
        let cseq = req.cseq();
        if !cseq.method.is_empty() {
            out.extend_from_slice(b"CSeq: ");
            push_u64(out, u64::from(cseq.seq));
            out.push(b' ');
            out.extend_from_slice(cseq.method);
            out.extend_from_slice(b"\r\n");
        } else if let Some(raw) = req.value(HeaderId::CSeq) {
            // RFC 3261 §8.2.6.2: the CSeq is copied even when it could not be
            // parsed (a 400 for an overlarge CSeq still echoes it).
            line(out, b"CSeq", raw);
        }
        ResponseWriter { out }
    }

    /// Appends `Name: value`.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        line(self.out, name.as_bytes(), value);
        self
    }

    /// Appends `Name: n`.
    pub fn header_u64(&mut self, name: &str, n: u64) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        push_u64(self.out, n);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Direct access for headers assembled piecewise; each must end in CRLF.
    pub fn raw(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Writes Content-Length, the empty line and the body.
    pub fn finish(self, body: &[u8]) {
        self.out.extend_from_slice(b"Content-Length: ");
        push_u64(self.out, body.len() as u64);
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
    }
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    push_unfolded(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Copies a header value with each fold (CRLF + white space) turned into one
/// space, so a folded request value is answered on one line.
fn push_unfolded(out: &mut Vec<u8>, mut value: &[u8]) {
    while let Some(nl) = memchr(b'\n', value) {
        out.extend_from_slice(bytes::trim_end(&value[..nl]));
        out.push(b' ');
        value = bytes::trim_start(&value[nl + 1..]);
    }
    out.extend_from_slice(value);
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: the top Via gains `received=<source ip>`
/// when the sent-by host differs from the source or rport was requested, and a
/// valueless `rport` is filled with the source port.
fn write_top_via(out: &mut Vec<u8>, via: &[u8], source: SocketAddr) {
    let Ok(parsed) = Via::parse(via) else {
        push_unfolded(out, via);
        return;
    };
    let rport = parsed.rport();
    let mut tail = via;
    if rport == Rport::Requested {
        if let Some(p) = parsed
            .params()
            .find(|p| p.name.eq_ignore_ascii_case(b"rport"))
        {
            // Write the port after `rport=`, in place of whatever value was
            // there: Requested also covers a value that is no port (`rport=0x`,
            // `rport=99999`), which must be replaced, not prefixed.
            let (at, resume) = match p.value {
                Some(v) => {
                    let at = bytes::offset_in(via, v);
                    (at, at + v.len())
                }
                None => {
                    let at = bytes::offset_in(via, p.name) + p.name.len();
                    (at, at)
                }
            };
            push_unfolded(out, &via[..at]);
            out.extend_from_slice(if p.value.is_some() { b"" } else { b"=" });
            push_u64(out, u64::from(source.port()));
            tail = &via[resume..];
        }
    }
    push_unfolded(out, tail);
    let mut ip_buf = [0u8; 48];
    let ip_len = {
        let mut cursor = std::io::Cursor::new(&mut ip_buf[..]);
        // An IPv6 text form is at most 45 bytes, so this cannot overflow.
        let _ = write!(cursor, "{}", source.ip());
        cursor.position() as usize
    };
    let ip = &ip_buf[..ip_len];
    let host = parsed
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"));
    let host = host.unwrap_or(parsed.host);
    if (rport != Rport::Absent || host != ip) && parsed.received().is_none() {
        out.extend_from_slice(b";received=");
        out.extend_from_slice(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::scan;

    fn src() -> SocketAddr {
        "198.51.100.7:40000".parse().unwrap()
    }

    #[test]
    fn stamps_rport_received_and_to_tag() {
        let req = b"REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:7100;rport;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP p\r\n ;branch=z9hG4bK0, SIP/2.0/TCP q\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: c1\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let msg = scan(req).unwrap();
        let mut out = Vec::new();
        let mut w = ResponseWriter::start(&mut out, &msg, 200, b"OK", src(), b"srv1");
        w.header("Expires", b"60").header_u64("Min-Expires", 30);
        w.finish(b"");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 10.0.0.2:7100;rport=40000;branch=z9hG4bK1;received=198.51.100.7\r\n\
             Via: SIP/2.0/UDP p ;branch=z9hG4bK0, SIP/2.0/TCP q\r\n\
             From: <sip:a@h>;tag=1\r\n\
             To: <sip:a@h>;tag=srv1\r\n\
             Call-ID: c1\r\n\
             CSeq: 7 REGISTER\r\n\
             Expires: 60\r\n\
             Min-Expires: 30\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn rport_values_that_are_no_port_are_replaced() {
        for (sent, want) in [
            ("rport=99999", "rport=40000"),
            ("rport=abc", "rport=40000"),
            ("rport=", "rport=40000"),
            ("rport=4294967296000", "rport=40000"),
            // A real port is the client's business (RFC 3581 §3 says it must
            // not send one); it is kept.
            ("rport=5060", "rport=5060"),
        ] {
            let req = format!("OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:7100;{sent};branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n");
            let msg = scan(req.as_bytes()).unwrap();
            let mut out = Vec::new();
            ResponseWriter::start(&mut out, &msg, 200, b"OK", src(), b"t").finish(b"");
            let text = String::from_utf8(out.clone()).unwrap();
            let via = format!(
                "Via: SIP/2.0/UDP 10.0.0.2:7100;{want};branch=z9hG4bK1;received=198.51.100.7\r\n"
            );
            assert!(text.contains(&via), "{sent}:\n{text}");
            let answer = scan(&out).unwrap();
            let top = Via::parse(answer.top_via().unwrap()).unwrap();
            assert!(matches!(top.rport(), Rport::Value(_)), "{sent}: {text}");
        }
    }

    #[test]
    fn stray_via_commas_are_not_copied() {
        let mut req = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1,,,\r\nVia: ,,\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\ni: c\r\nCSeq: 1 OPTIONS\r\n".to_vec();
        for _ in 0..50 {
            req.extend_from_slice(b"X-Pad: 1\r\n");
        }
        req.extend_from_slice(b"\r\n");
        let msg = scan(&req).unwrap();
        let mut out = Vec::new();
        ResponseWriter::start(&mut out, &msg, 400, b"Bad", src(), b"t").finish(b"");
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.matches("Via: ").count(), 1, "{text}");
        assert!(text.contains("Via: SIP/2.0/UDP a;branch=z9hG4bK1;received=198.51.100.7\r\n"));
        assert!(scan(&out).is_ok());
    }

    #[test]
    fn keeps_existing_tag_and_skips_received_when_host_matches() {
        let req = b"OPTIONS sip:h SIP/2.0\r\nv: SIP/2.0/UDP 198.51.100.7:40000;branch=z9hG4bK2\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>;tag=9\r\ni: c2\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let msg = scan(req).unwrap();
        let mut out = Vec::new();
        ResponseWriter::start(&mut out, &msg, 200, b"OK", src(), b"srv1").finish(b"x");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Via: SIP/2.0/UDP 198.51.100.7:40000;branch=z9hG4bK2\r\n"));
        assert!(text.contains("To: <sip:b@h>;tag=9\r\n"));
        assert!(text.ends_with("Content-Length: 1\r\n\r\nx"));
    }
}
