//! Stream framing for SIP over TCP (RFC 3261 §18.3): finds where one message
//! ends in a growing buffer, and reports RFC 5626 §4.4.1 keep-alives so the
//! transport can answer a double-CRLF ping with a single CRLF pong.

use memchr::memchr_iter;

use super::bytes;
use super::error::ScanError;
use super::header::HeaderId;
use super::message::parse_content_length;
use super::MAX_UDP_MESSAGE;

/// Largest message accepted on a stream; the same bound as a datagram keeps
/// per-connection buffers bounded.
pub const MAX_STREAM_MESSAGE: usize = MAX_UDP_MESSAGE;

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet to tell; read more.
    NeedMore,
    /// A CRLF CRLF keep-alive ping of this many bytes: consume it, answer CRLF.
    Ping(usize),
    /// Stray line ends (a pong or padding) of this many bytes: consume silently.
    Skip(usize),
    /// One complete message occupies the first this-many bytes.
    Message(usize),
}

/// Frames the front of `buf`. Errors mean the stream cannot be resynchronised:
/// the transport answers if it can and closes the connection.
pub fn frame(buf: &[u8]) -> Result<Frame, ScanError> {
    match buf {
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Frame::Ping(4)),
        [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(Frame::NeedMore),
        [b'\r', b'\n', ..] => return Ok(Frame::Skip(2)),
        [b'\n', ..] => return Ok(Frame::Skip(1)),
        [] => return Ok(Frame::NeedMore),
        _ => {}
    }
    let Some(head_len) = head_end(buf) else {
        return if buf.len() > MAX_STREAM_MESSAGE {
            Err(ScanError::MessageTooLarge)
        } else {
            Ok(Frame::NeedMore)
        };
    };
    let body_len = content_length(&buf[..head_len])?;
    let total = head_len + body_len;
    if total > MAX_STREAM_MESSAGE {
        return Err(ScanError::MessageTooLarge);
    }
    Ok(if buf.len() >= total {
        Frame::Message(total)
    } else {
        Frame::NeedMore
    })
}

/// Offset just past the empty line that ends the header section.
fn head_end(buf: &[u8]) -> Option<usize> {
    for nl in memchr_iter(b'\n', buf) {
        match buf.get(nl + 1..nl + 3) {
            Some([b'\r', b'\n']) => return Some(nl + 3),
            Some([b'\n', _]) => return Some(nl + 2),
            None if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            _ => {}
        }
    }
    None
}

/// Content-Length from a complete header section; mandatory on streams.
fn content_length(head: &[u8]) -> Result<usize, ScanError> {
    let mut found = None;
    // Skip the start line; a header line starts after each '\n'.
    for line in head.split(|&c| c == b'\n').skip(1) {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = bytes::trim(&line[..colon]);
        if bytes::is_token(name) && HeaderId::lookup(name) == HeaderId::ContentLength {
            let len = parse_content_length(&line[colon + 1..])?;
            if found.is_some_and(|f| f != len) {
                return Err(ScanError::DuplicateHeader(HeaderId::ContentLength));
            }
            found = Some(len);
        }
    }
    found.ok_or(ScanError::ContentLengthRequired)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &[u8] =
        b"REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nl: 3\r\n\r\nabc";

    #[test]
    fn frames_whole_split_and_pipelined() {
        assert_eq!(frame(REG), Ok(Frame::Message(REG.len())));
        for cut in 0..REG.len() {
            assert_eq!(frame(&REG[..cut]), Ok(Frame::NeedMore), "cut at {cut}");
        }
        let mut two = REG.to_vec();
        two.extend_from_slice(REG);
        assert_eq!(frame(&two), Ok(Frame::Message(REG.len())));
    }

    #[test]
    fn keepalives() {
        assert_eq!(frame(b"\r\n\r\n"), Ok(Frame::Ping(4)));
        assert_eq!(frame(b"\r\n\r\nREGISTER"), Ok(Frame::Ping(4)));
        assert_eq!(frame(b"\r\n"), Ok(Frame::NeedMore));
        assert_eq!(frame(b"\r\nREG"), Ok(Frame::Skip(2)));
        assert_eq!(frame(b"\nREG"), Ok(Frame::Skip(1)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            frame(b"OPTIONS sip:h SIP/2.0\r\nVia: x\r\n\r\n"),
            Err(ScanError::ContentLengthRequired)
        );
        assert_eq!(
            frame(b"OPTIONS sip:h SIP/2.0\r\nContent-Length: -1\r\n\r\n"),
            Err(ScanError::BadContentLength)
        );
        assert_eq!(
            frame(b"OPTIONS sip:h SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ScanError::DuplicateHeader(HeaderId::ContentLength))
        );
        assert_eq!(
            frame(b"OPTIONS sip:h SIP/2.0\r\nl: 65535\r\n\r\n"),
            Err(ScanError::MessageTooLarge)
        );
        let endless = vec![b'a'; MAX_STREAM_MESSAGE + 1];
        assert_eq!(frame(&endless), Err(ScanError::MessageTooLarge));
        assert_eq!(frame(&endless[..1000]), Ok(Frame::NeedMore));
    }
}
