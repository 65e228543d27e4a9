//! The scanner: one pass over a datagram or a framed stream message, producing a
//! [`Message`] of borrowed slices. It allocates nothing: headers live in a fixed
//! array inside the `Message`, and typed views parse lazily from the slices.

use memchr::memchr;

use super::addr::NameAddr;
use super::bytes::{self, TOKEN, URI_CHAR};
use super::error::ScanError;
use super::header::HeaderId;
use super::list::ListIter;
use super::via::Via;
use super::ViewError;
use super::{MAX_HEADERS, MAX_LINE, MAX_UDP_MESSAGE};

/// Request methods the server knows by name; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Invite,
    Ack,
    Cancel,
    Bye,
    Options,
    Message,
    Subscribe,
    Notify,
    Refer,
    Info,
    Update,
    Prack,
    Publish,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 3261 §7.1), so `register` is `Other`.
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"REGISTER" => Method::Register,
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"CANCEL" => Method::Cancel,
            b"BYE" => Method::Bye,
            b"OPTIONS" => Method::Options,
            b"MESSAGE" => Method::Message,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }
}

/// `Method SP Request-URI SP SIP-Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: Method,
    pub method_raw: &'a [u8],
    pub uri: &'a [u8],
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine<'a> {
    pub code: u16,
    pub reason: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request(RequestLine<'a>),
    Response(StatusLine<'a>),
}

/// One header field: its id, its name as written, and its value with the
/// surrounding white space trimmed (a folded value keeps its inner CRLF SP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub id: HeaderId,
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Header<'_> {
    const EMPTY: Header<'static> = Header {
        id: HeaderId::Other,
        name: b"",
        value: b"",
    };

    /// True when the value spans continuation lines (RFC 3261 §7.3.1 folding).
    pub fn is_folded(&self) -> bool {
        memchr(b'\n', self.value).is_some()
    }

    /// Appends the value with each fold (CRLF + white space) replaced by one space,
    /// for the rare consumer that needs a contiguous single-line value.
    pub fn unfold_into(&self, out: &mut Vec<u8>) {
        let mut rest = self.value;
        while let Some(nl) = memchr(b'\n', rest) {
            out.extend_from_slice(bytes::trim_end(&rest[..nl]));
            out.push(b' ');
            rest = bytes::trim_start(&rest[nl + 1..]);
        }
        out.extend_from_slice(rest);
    }
}

/// `CSeq: 1*DIGIT LWS Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: &'a [u8],
}

impl<'a> CSeq<'a> {
    /// RFC 3261 §8.1.1.5: the number is below 2^31; LWS (folds included) may
    /// separate it from the method.
    pub fn parse(value: &'a [u8]) -> Option<CSeq<'a>> {
        let value = bytes::trim(value);
        let digits = value.iter().position(|c| !c.is_ascii_digit())?;
        let seq = bytes::parse_u32_lenient(&value[..digits])?;
        if seq >= 1 << 31 || !bytes::is_lws(value[digits]) {
            return None;
        }
        let method = bytes::trim_start(&value[digits..]);
        bytes::is_token(method).then_some(CSeq { seq, method })
    }
}

/// Sentinel for "no header with this id" in the first-index table.
const NONE: u8 = u8::MAX;
const _: () = assert!(MAX_HEADERS < NONE as usize);

impl Default for Header<'_> {
    fn default() -> Self {
        Header::EMPTY
    }
}

/// Where one header sits in the message: offsets instead of slices keep the
/// per-message table at 10 bytes a header (messages are at most 64 KiB, so u16
/// offsets suffice), which makes `scan`'s result cheap to build and to move.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: HeaderId,
    name_at: u16,
    name_len: u16,
    value_at: u16,
    value_len: u16,
}

const EMPTY_SLOT: Slot = Slot {
    id: HeaderId::Other,
    name_at: 0,
    name_len: 0,
    value_at: 0,
    value_len: 0,
};

const _: () = assert!(MAX_UDP_MESSAGE <= u16::MAX as usize);

/// A scanned SIP message: every slice borrows the input buffer.
#[derive(Clone)]
pub struct Message<'a> {
    pub start: StartLine<'a>,
    /// The message from its start line on (leading CRLFs skipped).
    data: &'a [u8],
    slots: [Slot; MAX_HEADERS],
    count: u8,
    first: [u8; HeaderId::COUNT],
    cseq: CSeq<'a>,
    /// Start line and headers, up to and including the empty line.
    pub head: &'a [u8],
    /// The body, exactly Content-Length bytes when the header is present.
    pub body: &'a [u8],
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("start", &self.start)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl<'a> Message<'a> {
    /// Every header, in message order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + '_ {
        self.slots[..usize::from(self.count)]
            .iter()
            .map(|s| self.materialise(s))
    }

    pub fn header_count(&self) -> usize {
        usize::from(self.count)
    }

    #[inline]
    fn materialise(&self, s: &Slot) -> Header<'a> {
        let (n, v) = (usize::from(s.name_at), usize::from(s.value_at));
        Header {
            id: s.id,
            name: &self.data[n..n + usize::from(s.name_len)],
            value: &self.data[v..v + usize::from(s.value_len)],
        }
    }

    pub fn request(&self) -> Option<&RequestLine<'a>> {
        match &self.start {
            StartLine::Request(r) => Some(r),
            StartLine::Response(_) => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    pub fn method(&self) -> Option<Method> {
        self.request().map(|r| r.method)
    }

    /// The first header with this id, in O(1).
    #[inline]
    pub fn header(&self, id: HeaderId) -> Option<Header<'a>> {
        match self.first[id as usize] {
            NONE => None,
            i => self.slots.get(usize::from(i)).map(|s| self.materialise(s)),
        }
    }

    /// The value of the first header with this id.
    #[inline]
    pub fn value(&self, id: HeaderId) -> Option<&'a [u8]> {
        self.header(id).map(|h| h.value)
    }

    /// Every header with this id, in message order.
    pub fn all(&self, id: HeaderId) -> impl Iterator<Item = Header<'a>> + '_ {
        let count = usize::from(self.count);
        let start = match self.first[id as usize] {
            NONE => count,
            i => usize::from(i),
        };
        self.slots[start..count]
            .iter()
            .filter(move |s| s.id == id)
            .map(|s| self.materialise(s))
    }

    /// Every comma-separated element of every header with this id, in order:
    /// `Contact: a, b` followed by `Contact: c` yields a, b, c.
    pub fn list(&self, id: HeaderId) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.all(id).flat_map(|h| ListIter::new(h.value))
    }

    /// The topmost Via element (RFC 3261 §18.2.2 answers go where it says).
    pub fn top_via(&self) -> Option<&'a [u8]> {
        self.value(HeaderId::Via)
            .and_then(|v| ListIter::new(v).next())
    }

    /// The CSeq, validated during the scan (a default for responses without one).
    pub fn cseq(&self) -> CSeq<'a> {
        self.cseq
    }

    pub fn call_id(&self) -> &'a [u8] {
        self.value(HeaderId::CallId).unwrap_or(b"")
    }

    /// Parses the headers every request handler relies on — each Via element,
    /// From, To and each Contact — so a request whose syntax is wrong there is
    /// answered 400 up front (RFC 4475 §3.1.2.1, .6, .13, .14, .15) instead of
    /// failing half-way through a handler. A Contact's URI (host, port 1–65535)
    /// and `q` are checked too: a registrar stores both and hands them out.
    pub fn check_views(&self) -> Result<(), ViewError> {
        for via in self.list(HeaderId::Via) {
            Via::parse(via)?;
        }
        for id in [HeaderId::From, HeaderId::To] {
            if let Some(v) = self.value(id) {
                NameAddr::parse(v)?;
            }
        }
        for contact in self.list(HeaderId::Contact) {
            let c = NameAddr::parse(contact)?;
            if c.wildcard {
                continue;
            }
            c.parse_uri().map_err(|_| ViewError::ContactUri)?;
            // RFC 3261 §20.10 qvalue: 0–1 with at most three decimals; an
            // `expires` parameter out of range means the default instead
            // (RFC 4475 §3.1.2.4), so it is not checked here.
            if let Some(Err(e)) = c.q() {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Scans a complete message as received in one UDP datagram (or framed from a
/// stream): bytes past Content-Length are discarded (RFC 3261 §18.3), and without
/// Content-Length the body is the rest of the datagram.
pub fn scan(buf: &[u8]) -> Result<Message<'_>, ScanError> {
    scan_inner(buf, Mode::Strict)
}

/// After [`scan`] failed, recovers enough of a request to answer it with the
/// error's status (RFC 3261 §8.2: a malformed request still gets a 400 when its
/// Via, Call-ID, CSeq, From and To can be read). Returns `None` for responses and
/// for anything whose header section cannot be read at all: those are dropped.
pub fn scan_for_reply(buf: &[u8]) -> Option<Message<'_>> {
    let msg = scan_inner(buf, Mode::ForReply).ok()?;
    (msg.is_request() && msg.top_via().is_some_and(|v| !v.is_empty())).then_some(msg)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    ForReply,
}

#[inline(always)]
fn scan_inner(buf: &[u8], mode: Mode) -> Result<Message<'_>, ScanError> {
    if buf.len() > MAX_UDP_MESSAGE {
        return Err(ScanError::MessageTooLarge);
    }
    // RFC 3261 §7.5: empty lines before the start line are ignored.
    let lead = buf
        .iter()
        .position(|&c| c != b'\r' && c != b'\n')
        .ok_or(ScanError::Empty)?;
    let buf_from_start = &buf[lead..];
    let (start, mut pos) = scan_start_line(buf_from_start, mode)?;
    let data = buf_from_start;

    let mut msg = Message {
        start,
        data,
        slots: [EMPTY_SLOT; MAX_HEADERS],
        count: 0,
        first: [NONE; HeaderId::COUNT],
        cseq: CSeq {
            seq: 0,
            method: b"",
        },
        head: b"",
        body: b"",
    };

    let mut count = 0usize;
    let (consumed, _) = parse_headers(&data[pos..], mode, |h| {
        let Some(slot) = msg.slots.get_mut(count) else {
            // For a reply the first MAX_HEADERS are enough to answer from.
            return match mode {
                Mode::Strict => Err(ScanError::TooManyHeaders),
                Mode::ForReply => Ok(()),
            };
        };
        // Offsets fit in u16: the whole message is at most MAX_UDP_MESSAGE.
        *slot = Slot {
            id: h.id,
            name_at: bytes::offset_in(data, h.name) as u16,
            name_len: h.name.len() as u16,
            value_at: bytes::offset_in(data, h.value) as u16,
            value_len: h.value.len() as u16,
        };
        let first = &mut msg.first[h.id as usize];
        if *first == NONE {
            *first = count as u8;
        } else if h.id.is_singleton() && mode == Mode::Strict {
            return Err(ScanError::DuplicateHeader(h.id));
        }
        count += 1;
        Ok(())
    })?;
    pos += consumed;
    msg.count = count as u8;

    msg.head = &data[..pos];
    let after = &data[pos..];
    if mode == Mode::ForReply {
        // The reply needs the headers only; body and header semantics are what
        // was wrong, so they are not checked again.
        msg.cseq = msg
            .value(HeaderId::CSeq)
            .and_then(CSeq::parse)
            .unwrap_or(msg.cseq);
        return Ok(msg);
    }
    msg.body = match msg.value(HeaderId::ContentLength) {
        Some(v) => {
            let len = parse_content_length(v)?;
            after.get(..len).ok_or_else(|| short_body(pos + len))?
        }
        None => after,
    };

    validate(&mut msg)?;
    Ok(msg)
}

fn validate(msg: &mut Message<'_>) -> Result<(), ScanError> {
    // RFC 3261 §8.1.1: every request carries these; responses are only read for
    // counting, but they need a CSeq to be matched to a transaction.
    let mandatory: &[HeaderId] = if msg.is_request() {
        &[
            HeaderId::Via,
            HeaderId::From,
            HeaderId::To,
            HeaderId::CallId,
            HeaderId::CSeq,
        ]
    } else {
        &[HeaderId::Via, HeaderId::CSeq]
    };
    for &id in mandatory {
        match msg.value(id) {
            Some(v) if !v.is_empty() => {}
            _ => return Err(ScanError::MissingHeader(id)),
        }
    }
    let cseq_value = msg.value(HeaderId::CSeq).unwrap_or(b"");
    msg.cseq = CSeq::parse(cseq_value).ok_or(ScanError::BadCSeq)?;
    if let Some(req) = msg.request() {
        // RFC 3261 §8.1.1.5 (ACK and CANCEL carry the INVITE's method by design).
        if msg.cseq.method != req.method_raw {
            return Err(ScanError::CSeqMethodMismatch);
        }
    }
    Ok(())
}

/// A body shorter than its Content-Length: 400 for a datagram cut short (RFC
/// 3261 §18.3), but 513 when the announced message (`head_len` + Content-Length)
/// exceeds the size limit whatever arrived, as on a stream whose peer sent only
/// the head of an oversized message.
#[cold]
fn short_body(announced: usize) -> ScanError {
    if announced > MAX_UDP_MESSAGE {
        ScanError::MessageTooLarge
    } else {
        ScanError::BodyTooShort
    }
}

/// Content-Length: `1*DIGIT` (RFC 3261 §20.14), leading zeros allowed, no sign.
/// A well-formed value above the message size limit is [`ScanError::MessageTooLarge`]
/// (answered 513): such a body could never be honoured and would let a peer pin
/// a stream buffer. Anything else that is not digits is
/// [`ScanError::BadContentLength`].
pub(crate) fn parse_content_length(v: &[u8]) -> Result<usize, ScanError> {
    let v = bytes::trim(v);
    match bytes::parse_u32_lenient(v) {
        Some(n) if n as usize <= MAX_UDP_MESSAGE => Ok(n as usize),
        _ => Err(bad_content_length(v)),
    }
}

/// Why a Content-Length value was refused: digits only (however many, so an
/// overflowing value lands here too) mean too large, anything else malformed.
#[cold]
fn bad_content_length(v: &[u8]) -> ScanError {
    if !v.is_empty() && v.iter().all(u8::is_ascii_digit) {
        ScanError::MessageTooLarge
    } else {
        ScanError::BadContentLength
    }
}

/// Returns the start line and the offset just past its line end.
fn scan_start_line(buf: &[u8], mode: Mode) -> Result<(StartLine<'_>, usize), ScanError> {
    let nl = memchr(b'\n', buf).ok_or(ScanError::UnterminatedHeaders)?;
    // An overlong Request-URI is still answered (with the strict error).
    if nl > MAX_LINE && mode == Mode::Strict {
        return Err(ScanError::LineTooLong);
    }
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let start = if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        StartLine::Response(scan_status_line(line)?)
    } else {
        StartLine::Request(scan_request_line(line, mode)?)
    };
    Ok((start, nl + 1))
}

fn scan_request_line(line: &[u8], mode: Mode) -> Result<RequestLine<'_>, ScanError> {
    if mode == Mode::ForReply {
        return scan_request_line_loosely(line);
    }
    // Exactly one SP between the three elements (RFC 3261 §25.1; RFC 4475
    // §3.1.2.9 and §3.1.2.10 reject extra or trailing SP).
    let sp1 = memchr(b' ', line).ok_or(ScanError::BadStartLine)?;
    let method_raw = &line[..sp1];
    if !bytes::is_token(method_raw) {
        return Err(ScanError::BadStartLine);
    }
    let rest = &line[sp1 + 1..];
    let sp2 = memchr(b' ', rest).ok_or(ScanError::BadStartLine)?;
    let uri = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    check_version(version)?;
    if !is_request_uri(uri) {
        return Err(ScanError::BadRequestUri);
    }
    Ok(RequestLine {
        method: Method::from_bytes(method_raw),
        method_raw,
        uri,
    })
}

/// For answering a malformed request: elements split on runs of white space
/// (RFC 4475 §3.1.2.8–10 still deserve a 400), any version accepted.
fn scan_request_line_loosely(line: &[u8]) -> Result<RequestLine<'_>, ScanError> {
    let line = bytes::trim(line);
    let sp1 = memchr(b' ', line).ok_or(ScanError::BadStartLine)?;
    let sp2 = memchr::memrchr(b' ', line).ok_or(ScanError::BadStartLine)?;
    let method_raw = &line[..sp1];
    let uri = bytes::trim(&line[sp1..sp2]);
    let version = &line[sp2 + 1..];
    if !bytes::is_token(method_raw) || uri.is_empty() || !version.starts_with(b"SIP/") {
        return Err(ScanError::BadStartLine);
    }
    Ok(RequestLine {
        method: Method::from_bytes(method_raw),
        method_raw,
        uri,
    })
}

fn scan_status_line(line: &[u8]) -> Result<StatusLine<'_>, ScanError> {
    let sp1 = memchr(b' ', line).ok_or(ScanError::BadStartLine)?;
    check_version(&line[..sp1])?;
    let rest = &line[sp1 + 1..];
    let (code, reason) = match memchr(b' ', rest) {
        Some(sp2) => (&rest[..sp2], &rest[sp2 + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    if code.len() != 3 {
        return Err(ScanError::BadStatusCode);
    }
    let code = bytes::parse_u32(code)
        .filter(|c| (100..700).contains(c))
        .ok_or(ScanError::BadStatusCode)?;
    Ok(StatusLine {
        code: code as u16,
        reason,
    })
}

/// `SIP/1*DIGIT.1*DIGIT`; only 2.0 is served, others are a well-formed 505.
fn check_version(v: &[u8]) -> Result<(), ScanError> {
    if v.len() < 7 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ScanError::BadStartLine);
    }
    let num = &v[4..];
    let dot = memchr(b'.', num).ok_or(ScanError::BadStartLine)?;
    let (major, minor) = (&num[..dot], &num[dot + 1..]);
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) {
        return Err(ScanError::BadStartLine);
    }
    if major != b"2" || minor != b"0" {
        return Err(ScanError::UnsupportedVersion);
    }
    Ok(())
}

/// `scheme ":" …` with no white space or angle brackets; SIP and SIPS
/// Request-URIs may not carry a `?headers` part (RFC 3261 §19.1.5). One pass.
fn is_request_uri(uri: &[u8]) -> bool {
    let Some(colon) = bytes::find(b':', uri) else {
        return false;
    };
    let scheme = &uri[..colon];
    if !scheme.first().is_some_and(u8::is_ascii_alphabetic)
        || !scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        || colon + 1 == uri.len()
    {
        return false;
    }
    // One pass with a byte-class table: reject bytes a URI cannot hold and
    // remember whether a '?' follows the last '@' (the user part may legally
    // hold '?', RFC 4475 §3.1.1.2).
    let mut bad = false;
    let mut question_after_at = false;
    for &c in &uri[colon + 1..] {
        match URI_CLASS[c as usize] {
            UriClass::Plain => {}
            UriClass::At => question_after_at = false,
            UriClass::Question => question_after_at = true,
            UriClass::Bad => bad = true,
        }
    }
    let sip = scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips");
    !(bad || (sip && question_after_at))
}

#[derive(Clone, Copy)]
enum UriClass {
    Plain,
    At,
    Question,
    Bad,
}

/// Request-URI byte classes: visible ASCII and UTF-8 bytes, except `<>"`, are
/// allowed (RFC 4475 §3.1.2.7); '@' and '?' are tracked for the headers check.
const URI_CLASS: [UriClass; 256] = {
    let mut t = [UriClass::Bad; 256];
    let mut i = 0;
    while i < 256 {
        if URI_CHAR[i] {
            t[i] = UriClass::Plain;
        }
        i += 1;
    }
    t[b'@' as usize] = UriClass::At;
    t[b'?' as usize] = UriClass::Question;
    t
};

/// Scans a header section (after the start line) into `out`, returning the
/// bytes consumed (through the empty line) and the number of headers. Public so
/// tests can compare it with `httparse::parse_headers` on the same bytes.
pub fn scan_headers<'a>(
    buf: &'a [u8],
    out: &mut [Header<'a>],
) -> Result<(usize, usize), ScanError> {
    let mut n = 0;
    parse_headers(buf, Mode::Strict, |h| {
        *out.get_mut(n).ok_or(ScanError::TooManyHeaders)? = h;
        n += 1;
        Ok(())
    })
}

/// Walks the header lines, handing each to `push`; returns (bytes consumed
/// through the empty line, header count).
#[inline]
fn parse_headers<'a>(
    data: &'a [u8],
    mode: Mode,
    mut push: impl FnMut(Header<'a>) -> Result<(), ScanError>,
) -> Result<(usize, usize), ScanError> {
    let mut pos = 0;
    let mut count = 0;
    // One vectorised search over the whole header section instead of a fresh
    // `memchr` call per line.
    let mut line_ends = memchr::memchr_iter(b'\n', data);
    loop {
        let rest = &data[pos..];
        // Empty line: end of the header section.
        if rest.starts_with(b"\r\n") {
            return Ok((pos + 2, count));
        }
        if rest.first() == Some(&b'\n') {
            return Ok((pos + 1, count));
        }
        if rest.is_empty() {
            if mode == Mode::ForReply {
                return Ok((pos, count));
            }
            return Err(ScanError::UnterminatedHeaders);
        }
        // The line ends at the first '\n' not followed by SP or HTAB
        // (RFC 3261 §7.3.1: such a line continues the previous one).
        let nl = loop {
            let nl = line_ends.next().ok_or(ScanError::UnterminatedHeaders)?;
            debug_assert!(nl >= pos, "line ends are consumed in order");
            if nl - pos > MAX_LINE && mode == Mode::Strict {
                return Err(ScanError::LineTooLong);
            }
            if !matches!(data.get(nl + 1), Some(b' ' | b'\t')) {
                break nl;
            }
        };
        let end = if data[nl - 1] == b'\r' { nl - 1 } else { nl };
        match scan_header_line(&data[pos..end]) {
            Ok(h) => push(h)?,
            Err(e) if mode == Mode::Strict => return Err(e),
            // For a reply, a bad line is skipped: the error is being answered.
            Err(_) => {}
        }
        count += 1;
        pos = nl + 1;
    }
}

/// `field-name *(SP/HTAB) ":" LWS value` (RFC 3261 §7.3.1, HCOLON).
#[inline]
fn scan_header_line(line: &[u8]) -> Result<Header<'_>, ScanError> {
    // One pass over the name: check token bytes and fold the first 24 into
    // words for the header-id lookup.
    let mut folded = [0u64; 3];
    let mut name_len = 0;
    for &c in line {
        if !TOKEN[c as usize] {
            break;
        }
        if name_len < 24 {
            folded[name_len / 8] |= u64::from(c | 0x20) << ((name_len % 8) * 8);
        }
        name_len += 1;
    }
    if name_len == 0 {
        return Err(ScanError::BadHeaderLine);
    }
    let name = &line[..name_len];
    let mut i = name_len;
    while i < line.len() && matches!(line[i], b' ' | b'\t') {
        i += 1;
    }
    if line.get(i) != Some(&b':') {
        return Err(ScanError::BadHeaderLine);
    }
    Ok(Header {
        id: HeaderId::lookup_folded(name, &folded),
        name,
        value: bytes::trim(&line[i + 1..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OPTIONS with every mandatory header plus `extra` header lines, an
    /// empty line and `body`.
    fn request(extra: &str, body: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
             {extra}\r\n{body}"
        )
        .into_bytes()
    }

    #[test]
    fn content_length_bounds() {
        for (v, want) in [
            ("0", Ok(0)),
            ("5", Ok(5)),
            (" \t5 ", Ok(5)),
            ("00000000000000000000000000000005", Ok(5)),
            ("65535", Ok(65_535)),
            ("65536", Err(ScanError::MessageTooLarge)),
            ("4294967296", Err(ScanError::MessageTooLarge)),
            ("18446744073709551617", Err(ScanError::MessageTooLarge)),
            (
                "99999999999999999999999999999999",
                Err(ScanError::MessageTooLarge),
            ),
            ("-1", Err(ScanError::BadContentLength)),
            ("+5", Err(ScanError::BadContentLength)),
            ("", Err(ScanError::BadContentLength)),
            ("5 5", Err(ScanError::BadContentLength)),
            ("1e3", Err(ScanError::BadContentLength)),
            ("0x10", Err(ScanError::BadContentLength)),
            ("99999999999999999999x", Err(ScanError::BadContentLength)),
        ] {
            assert_eq!(parse_content_length(v.as_bytes()), want, "{v:?}");
        }
    }

    #[test]
    fn body_against_content_length() {
        let m = request("Content-Length: 3\r\n", "abcdef");
        assert_eq!(scan(&m).unwrap().body, b"abc", "surplus bytes are dropped");
        let m = request("Content-Length: 007\r\n", "abcdefg");
        assert_eq!(scan(&m).unwrap().body, b"abcdefg");
        // RFC 3261 §18.3: a datagram shorter than announced is a 400 ...
        let m = request("Content-Length: 60000\r\n", "abc");
        assert_eq!(scan(&m).unwrap_err(), ScanError::BodyTooShort);
        assert_eq!(ScanError::BodyTooShort.status(), 400);
        // ... unless the announced message exceeds the limit: 513.
        let m = request("Content-Length: 65400\r\n", "abc");
        assert_eq!(scan(&m).unwrap_err(), ScanError::MessageTooLarge);
        let m = request("Content-Length: 4294967296\r\n", "");
        assert_eq!(scan(&m).unwrap_err(), ScanError::MessageTooLarge);
        assert_eq!(ScanError::MessageTooLarge.status(), 513);
        let m = request("Content-Length: -1\r\n", "");
        assert_eq!(scan(&m).unwrap_err(), ScanError::BadContentLength);
        // A request that failed on its body can still be answered.
        assert!(scan_for_reply(&m).is_some());
    }

    #[test]
    fn cseq_bounds() {
        let seq = |v: &str| CSeq::parse(v.as_bytes()).map(|c| c.seq);
        assert_eq!(seq("0 OPTIONS"), Some(0));
        assert_eq!(seq("2147483647 OPTIONS"), Some((1 << 31) - 1));
        assert_eq!(seq("000000000000000042 OPTIONS"), Some(42));
        for bad in [
            "2147483648 OPTIONS",
            "4294967296 OPTIONS",
            "36893488147419103232 OPTIONS",
            "-1 OPTIONS",
            "+1 OPTIONS",
            "1.5 OPTIONS",
            "OPTIONS",
            "1",
            "1OPTIONS",
        ] {
            assert_eq!(seq(bad), None, "{bad}");
        }
        let m = request("", "").to_vec();
        let m = String::from_utf8(m)
            .unwrap()
            .replace("CSeq: 1 OPTIONS", "CSeq: 4294967296 OPTIONS");
        assert_eq!(scan(m.as_bytes()).unwrap_err(), ScanError::BadCSeq);
    }

    #[test]
    fn header_count_and_line_caps_are_exact() {
        // Five headers in `request`; fill up to the cap exactly.
        let mut extra = String::new();
        for i in 0..MAX_HEADERS - 5 {
            extra += &format!("X-{i}: v\r\n");
        }
        assert_eq!(
            scan(&request(&extra, "")).unwrap().header_count(),
            MAX_HEADERS
        );
        extra += "X-last: v\r\n";
        assert_eq!(
            scan(&request(&extra, "")).unwrap_err(),
            ScanError::TooManyHeaders
        );
        // "X: " + value + CR is the line; MAX_LINE bytes before the LF pass.
        let value = "a".repeat(MAX_LINE - 4);
        assert!(scan(&request(&format!("X: {value}\r\n"), "")).is_ok());
        let value = "a".repeat(MAX_LINE);
        assert_eq!(
            scan(&request(&format!("X: {value}\r\n"), "")).unwrap_err(),
            ScanError::LineTooLong
        );
        let uri = "a".repeat(MAX_LINE);
        let m = format!("OPTIONS sip:{uri} SIP/2.0\r\n\r\n");
        assert_eq!(scan(m.as_bytes()).unwrap_err(), ScanError::LineTooLong);
    }

    #[test]
    fn over_the_caps_is_still_answerable() {
        let mut extra = String::new();
        for i in 0..2 * MAX_HEADERS {
            extra += &format!("X-{i}: v\r\n");
        }
        let long_value = format!("X: {}\r\n", "a".repeat(2 * MAX_LINE));
        let long_uri = String::from_utf8(request("", ""))
            .unwrap()
            .replace("sip:h", &format!("sip:{}", "h".repeat(2 * MAX_LINE)));
        for (m, err) in [
            (request(&extra, ""), ScanError::TooManyHeaders),
            (request(&long_value, ""), ScanError::LineTooLong),
            (long_uri.into_bytes(), ScanError::LineTooLong),
            (request("no colon here\r\n", ""), ScanError::BadHeaderLine),
        ] {
            assert_eq!(scan(&m).unwrap_err(), err);
            let reply = scan_for_reply(&m).expect("answerable");
            assert_eq!(reply.call_id(), b"c");
            assert_eq!(reply.cseq().seq, 1);
            assert!(reply.header_count() <= MAX_HEADERS);
        }
    }

    #[test]
    fn contact_uri_and_q_are_checked() {
        let check = |contact: &str| {
            let m = request(&format!("Contact: {contact}\r\n"), "");
            scan(&m).unwrap().check_views()
        };
        for ok in [
            "<sip:a@192.0.2.1:5060>;q=1",
            "<sip:a@192.0.2.1:65535>;q=0.001",
            "<sip:a@192.0.2.1>;q=1.000;expires=99999999999",
            "<sip:a@[2001:db8::1]:1>",
            "<tel:+123>",
            "<urn:uuid:00000000-0000-0000-0000-000000000000>",
            "*",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("<sip:a@192.0.2.1:0>", ViewError::ContactUri),
            ("<sip:a@192.0.2.1:65536>", ViewError::ContactUri),
            ("<sip:a@192.0.2.1:99999>", ViewError::ContactUri),
            ("<sip:a@192.0.2.1:-1>", ViewError::ContactUri),
            ("<sip:a@192.0.2.1:4294967297>", ViewError::ContactUri),
            ("<sip:@192.0.2.1>", ViewError::ContactUri),
            ("<sip:a@192.0.2.1>;q=1.5", ViewError::QValue),
            ("<sip:a@192.0.2.1>;q=-1", ViewError::QValue),
            ("<sip:a@192.0.2.1>;q=0.0001", ViewError::QValue),
            ("<sip:a@192.0.2.1>;q=2", ViewError::QValue),
            ("<sip:a@192.0.2.1>;q", ViewError::QValue),
            ("<sip:a@192.0.2.1>;q=", ViewError::QValue),
            (
                "<sip:a@192.0.2.1>, <sip:b@192.0.2.1>;q=7",
                ViewError::QValue,
            ),
        ] {
            assert_eq!(check(bad), Err(why), "{bad}");
            assert!(why.reason().contains("Contact"), "{why:?}");
        }
    }
}
