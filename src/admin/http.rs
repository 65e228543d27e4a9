//! HTTP/1.1 framing for the admin API, sans-IO: [`frame`] finds one request
//! at the start of a buffer with `httparse` (borrowing it: method, target and
//! body are slices of the input) and enforces the size limits;
//! [`write_response`] serialises a [`Response`]. Keep-alive follows RFC 9112
//! §9.3: HTTP/1.1 persists unless `Connection: close`, HTTP/1.0 only with
//! `Connection: keep-alive`.

use super::api::{reason, Response, JSON};

/// Longest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Header fields parsed per request; more is treated as an oversized head.
const MAX_HEADERS: usize = 64;

/// Why the bytes on a connection are not a request we serve; the connection
/// is answered once and closed, since its framing can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Head over [`MAX_HEAD`] or more than `MAX_HEADERS` fields.
    HeadTooLarge,
    /// Content-Length over [`MAX_BODY`].
    BodyTooLarge,
    Malformed(httparse::Error),
    /// Content-Length not a number, or given twice with different values
    /// (RFC 9112 §6.3 item 5).
    BadContentLength,
    /// Any Transfer-Encoding (chunked bodies are not supported).
    TransferEncoding,
}

impl FrameError {
    pub fn status(self) -> u16 {
        match self {
            FrameError::HeadTooLarge | FrameError::BodyTooLarge => 413,
            FrameError::Malformed(_) | FrameError::BadContentLength => 400,
            FrameError::TransferEncoding => 501,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            FrameError::HeadTooLarge => "request head too large (8 KiB at most)",
            FrameError::BodyTooLarge => "request body too large (64 KiB at most)",
            FrameError::Malformed(_) => "malformed HTTP request",
            FrameError::BadContentLength => "bad Content-Length",
            FrameError::TransferEncoding => {
                "Transfer-Encoding is not supported; send Content-Length"
            }
        }
    }

    /// The JSON error answer.
    pub fn response(self) -> Response {
        let body = serde_json::json!({ "error": self.message() });
        Response::new(self.status(), JSON, body.to_string().into_bytes())
    }
}

/// One complete request, borrowing the buffer it was framed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The target up to `?`, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub keep_alive: bool,
    /// HTTP/1.0: a kept-alive answer must say `Connection: keep-alive`.
    pub http10: bool,
    /// Bytes of the buffer this request used (head + body).
    pub len: usize,
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed<'a> {
    /// Not a whole request yet. `expect_continue`: the head is complete and
    /// asked for `100 Continue` before sending its body.
    Partial {
        expect_continue: bool,
    },
    Complete(Request<'a>),
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Frames the request at the start of `buf`.
pub fn frame(buf: &[u8]) -> Result<Framed<'_>, FrameError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(FrameError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => {
            return Ok(Framed::Partial {
                expect_continue: false,
            })
        }
        Err(httparse::Error::TooManyHeaders) => return Err(FrameError::HeadTooLarge),
        Err(e) => return Err(FrameError::Malformed(e)),
    };
    if head_len > MAX_HEAD {
        return Err(FrameError::HeadTooLarge);
    }
    let http10 = req.version == Some(0);
    let mut content_length: Option<usize> = None;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(FrameError::BadContentLength);
            }
            // Digits only, so this fails only on overflow: too large anyway.
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            if content_length.is_some_and(|c| c != n) {
                return Err(FrameError::BadContentLength);
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(FrameError::TransferEncoding);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive |= has_token(h.value, "keep-alive");
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue |= has_token(h.value, "100-continue");
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY {
        return Err(FrameError::BodyTooLarge);
    }
    let len = head_len + body_len;
    if buf.len() < len {
        return Ok(Framed::Partial { expect_continue });
    }
    // A complete parse always has a method and a target.
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(FrameError::Malformed(httparse::Error::Token));
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Ok(Framed::Complete(Request {
        method,
        path,
        query,
        body: &buf[head_len..len],
        keep_alive: if http10 { keep_alive && !close } else { !close },
        http10,
        len,
    }))
}

/// How an answer is framed for the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// A HEAD request: headers only, with the length the body would have.
    pub head_only: bool,
    pub keep_alive: bool,
    pub http10: bool,
}

/// Appends the status line, headers and body of `r` to `out`.
pub fn write_response(out: &mut Vec<u8>, r: &Response, how: Framing) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    // RFC 9110 §15.3.5: a 204 has no content and no Content-Length.
    if r.status != 204 {
        let _ = write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            r.content_type,
            r.body.len()
        );
    }
    if let Some(allow) = r.allow {
        let _ = write!(out, "Allow: {allow}\r\n");
    }
    if let Some(secs) = r.retry_after {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    out.extend_from_slice(b"Cache-Control: no-store\r\n");
    if !how.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if how.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !how.head_only && r.status != 204 {
        out.extend_from_slice(&r.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Request<'_> {
        match frame(buf) {
            Ok(Framed::Complete(r)) => r,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn frames_a_get_with_query_and_keeps_alive_by_default() {
        let buf = b"GET /api/devices?offset=1&limit=2 HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
        let r = complete(buf);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/devices");
        assert_eq!(r.query, Some("offset=1&limit=2"));
        assert!(r.keep_alive && !r.http10);
        assert_eq!(&buf[r.len..], b"GET /next", "pipelined bytes stay");
    }

    #[test]
    fn connection_close_and_http10_rules() {
        let r = complete(b"GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n");
        assert!(!r.keep_alive);
        let r = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive && r.http10);
        let r = complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive);
    }

    #[test]
    fn body_by_content_length_and_partial_until_complete() {
        let full = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello";
        for cut in 0..full.len() {
            let head_done = cut >= full.len() - 5;
            assert_eq!(
                frame(&full[..cut]),
                Ok(Framed::Partial {
                    expect_continue: head_done
                }),
                "cut at {cut}"
            );
        }
        assert_eq!(complete(full).body, b"hello");
    }

    #[test]
    fn limits_and_errors() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert_eq!(frame(&big), Err(FrameError::HeadTooLarge));
        let too_long = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(frame(too_long.as_bytes()), Err(FrameError::BodyTooLarge));
        let max = format!("POST / HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        assert!(matches!(frame(max.as_bytes()), Ok(Framed::Partial { .. })));
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(frame(huge), Err(FrameError::BodyTooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(frame(&many), Err(FrameError::HeadTooLarge));
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        ] {
            assert_eq!(frame(bad), Err(FrameError::BadContentLength));
        }
        assert_eq!(
            frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(FrameError::TransferEncoding)
        );
        assert!(matches!(
            frame(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            frame(b"\x01\x02 / HTTP/1.1\r\n\r\n"),
            Err(FrameError::Malformed(_))
        ));
        // Repeating the same length is allowed.
        let same = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(complete(same).body, b"ab");
    }

    #[test]
    fn writes_responses() {
        let r = Response::new(200, "text/plain", b"ok".to_vec());
        let mut out = Vec::new();
        let how = Framing {
            head_only: false,
            keep_alive: true,
            http10: false,
        };
        write_response(&mut out, &r, how);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
              Cache-Control: no-store\r\n\r\nok"
        );
        out.clear();
        let head = Framing {
            head_only: true,
            keep_alive: false,
            ..how
        };
        write_response(&mut out, &r, head);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.ends_with(
            "Content-Length: 2\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ));
        out.clear();
        let mut r = Response::new(204, JSON, Vec::new());
        r.allow = Some("GET");
        write_response(&mut out, &r, how);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\nAllow: GET\r\n"));
        assert!(!text.contains("Content-Length"));
    }
}
