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
    frame_resume(buf, &mut 0)
}

/// [`frame`] for a buffer that only grew since the last call: `scanned` is how
/// much of `buf` is known to hold no complete header section. The caller keeps
/// it per connection, starting at 0 and resetting it to 0 whenever it consumes
/// bytes from the front. Without it a peer trickling a 64 KiB header section a
/// byte per segment makes every read rescan the whole buffer, quadratic in the
/// buffer cap (with a line end every other byte, seconds of CPU per
/// connection); with it the work is linear.
pub fn frame_resume(buf: &[u8], scanned: &mut usize) -> Result<Frame, ScanError> {
    match buf {
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Frame::Ping(4)),
        [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(Frame::NeedMore),
        [b'\r', b'\n', ..] => return Ok(Frame::Skip(2)),
        [b'\n', ..] => return Ok(Frame::Skip(1)),
        [] => return Ok(Frame::NeedMore),
        _ => {}
    }
    // A header end needs the two bytes after a '\n': one that straddled the
    // old end of the buffer starts at most that far back.
    let Some(head_len) = head_end(buf, (*scanned).min(buf.len()).saturating_sub(2)) else {
        *scanned = buf.len();
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

/// Offset just past the empty line that ends the header section, looking for
/// its first line end from `from` on.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    for nl in memchr_iter(b'\n', &buf[from..]).map(|i| i + from) {
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
    // Skip the start line; a header line starts after each '\n', unless it
    // starts with SP or HTAB: then it continues the previous header's value
    // (RFC 3261 §7.3.1), where the scanner would not see a Content-Length.
    for line in head.split(|&c| c == b'\n').skip(1) {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
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
    fn content_length_agrees_with_the_scanner() {
        // Leading zeros and surrounding white space are fine (1*DIGIT, LWS).
        let m = b"OPTIONS sip:h SIP/2.0\r\nContent-Length:  003 \r\n\r\nabc";
        assert_eq!(frame(m), Ok(Frame::Message(m.len())));
        // A folded line that merely looks like Content-Length is part of the
        // previous value: the scanner sees no Content-Length there, so the
        // framer must not either (it would conflict with the real one).
        let m = b"OPTIONS sip:h SIP/2.0\r\nSubject: a\r\n l: 9\r\nl: 1\r\n\r\nx";
        assert_eq!(frame(m), Ok(Frame::Message(m.len())));
        let m = b"OPTIONS sip:h SIP/2.0\r\nSubject: a\r\n\tContent-Length: 9\r\n\r\n";
        assert_eq!(frame(m), Err(ScanError::ContentLengthRequired));
    }

    #[test]
    fn resuming_agrees_with_framing_afresh() {
        let mut stream = REG.to_vec();
        stream.extend_from_slice(b"OPTIONS sip:h SIP/2.0\nX: \r\n y\nl: 2\n\nab");
        stream.extend_from_slice(b"\r\n\r\n\r\nOPTIONS sip:h SIP/2.0\r\nl: 0\r\n\r\n");
        // What framing the whole stream at once gives.
        let mut want = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            match frame(&stream[at..]) {
                Ok(Frame::Message(n) | Frame::Ping(n) | Frame::Skip(n)) => {
                    want.push(n);
                    at += n;
                }
                other => panic!("{other:?} at {at}"),
            }
        }
        // Byte by byte, the way a trickling peer delivers it.
        let (mut pos, mut scanned, mut seen) = (0, 0, Vec::new());
        for end in 1..=stream.len() {
            loop {
                let buf = &stream[pos..end];
                let got = frame_resume(buf, &mut scanned);
                assert_eq!(got, frame(buf), "at {pos}..{end}");
                match got {
                    Ok(Frame::Message(n) | Frame::Ping(n) | Frame::Skip(n)) => {
                        seen.push(n);
                        pos += n;
                        scanned = 0;
                    }
                    Ok(Frame::NeedMore) => break,
                    Err(e) => panic!("{e:?} at {pos}..{end}"),
                }
            }
        }
        assert_eq!(pos, stream.len());
        assert_eq!(seen, want);
        assert_eq!(want.len(), 5);
    }

    #[test]
    fn trickled_header_sections_cost_linear_time() {
        // "\nx" repeated: a line end every other byte, no header end.
        let hostile: Vec<u8> = b"OPTIONS sip:h SIP/2.0\r\nX: a"
            .iter()
            .copied()
            .chain(b"\nx".iter().copied().cycle().take(MAX_STREAM_MESSAGE))
            .collect();
        // Each call looks only at what arrived since the last one (from two
        // bytes back), so it records the whole buffer as scanned.
        let mut scanned = 0;
        for end in 1..=hostile.len() {
            let r = frame_resume(&hostile[..end], &mut scanned);
            assert_eq!(scanned, end);
            if end <= MAX_STREAM_MESSAGE {
                assert_eq!(r, Ok(Frame::NeedMore));
            } else {
                assert_eq!(r, Err(ScanError::MessageTooLarge));
                break;
            }
        }
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
        // Announced bodies beyond the limit are too large, not malformed,
        // however many digits they take (no overflow).
        for huge in ["65536", "70000", "4294967296", "99999999999999999999999999"] {
            let m = format!("OPTIONS sip:h SIP/2.0\r\nContent-Length: {huge}\r\n\r\n");
            assert_eq!(
                frame(m.as_bytes()),
                Err(ScanError::MessageTooLarge),
                "{huge}"
            );
        }
        for bad in ["+5", "5 5", "0x10", "", "5;x", "\u{0665}"] {
            let m = format!("OPTIONS sip:h SIP/2.0\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                frame(m.as_bytes()),
                Err(ScanError::BadContentLength),
                "{bad:?}"
            );
        }
        let endless = vec![b'a'; MAX_STREAM_MESSAGE + 1];
        assert_eq!(frame(&endless), Err(ScanError::MessageTooLarge));
        assert_eq!(frame(&endless[..1000]), Ok(Frame::NeedMore));
    }
}
