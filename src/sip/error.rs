//! Why a message could not be scanned. Each reason doubles as the reason phrase of
//! the 400 (or 505 / 513) that answers it, so it says what is wrong in words a
//! device vendor's engineer can act on.

use super::header::HeaderId;

/// A scanning failure; small and `Copy` so the data path can count and answer it
/// without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Nothing but white space.
    Empty,
    /// The first line is neither `METHOD URI SIP/x.y` nor `SIP/x.y CODE reason`.
    BadStartLine,
    /// The Request-URI has no scheme, contains white space or `<>`, or carries
    /// escaped headers (RFC 3261 §19.1.5; RFC 4475 §3.1.2.7, §3.1.2.11).
    BadRequestUri,
    /// A status code that is not three digits 100–699.
    BadStatusCode,
    /// A well-formed SIP version other than 2.0: answered 505 (RFC 3261 §8.2.2).
    UnsupportedVersion,
    /// A header line whose name is not a token or has no colon.
    BadHeaderLine,
    /// The header section does not end with an empty line.
    UnterminatedHeaders,
    /// The start line, or one header line with its continuations, exceeds
    /// [`super::MAX_LINE`].
    LineTooLong,
    /// More header fields than [`super::MAX_HEADERS`].
    TooManyHeaders,
    /// The message is larger than the transport allows, or its Content-Length
    /// announces a body that would make it so.
    MessageTooLarge,
    /// A header every request must carry (RFC 3261 §8.1.1) is absent.
    MissingHeader(HeaderId),
    /// A header that may appear once appears again (RFC 4475 §3.3.8, §3.3.9).
    DuplicateHeader(HeaderId),
    /// CSeq is not `1*DIGIT LWS Method` with a number below 2^31 (RFC 3261 §8.1.1.5).
    BadCSeq,
    /// The CSeq method differs from the request method (RFC 4475 §3.1.2.17).
    CSeqMethodMismatch,
    /// Content-Length is not a plain non-negative number (`1*DIGIT`).
    BadContentLength,
    /// Fewer body bytes than Content-Length announced (RFC 3261 §18.3).
    BodyTooShort,
    /// A stream message without Content-Length cannot be framed (RFC 3261 §18.3).
    ContentLengthRequired,
}

impl ScanError {
    /// The status code that answers this error when a reply is possible.
    pub const fn status(self) -> u16 {
        match self {
            ScanError::UnsupportedVersion => 505,
            ScanError::MessageTooLarge => 513,
            _ => 400,
        }
    }

    /// A reason phrase naming what is wrong.
    pub const fn reason(self) -> &'static str {
        use HeaderId as H;
        match self {
            ScanError::Empty => "Empty Message",
            ScanError::BadStartLine => "Malformed Start Line",
            ScanError::BadRequestUri => "Malformed Request-URI",
            ScanError::BadStatusCode => "Malformed Status Code",
            ScanError::UnsupportedVersion => "Version Not Supported",
            ScanError::BadHeaderLine => "Malformed Header Line",
            ScanError::UnterminatedHeaders => "Headers Not Terminated By Empty Line",
            ScanError::LineTooLong => "Line Too Long",
            ScanError::TooManyHeaders => "Too Many Headers",
            ScanError::MessageTooLarge => "Message Too Large",
            ScanError::MissingHeader(H::Via) => "Missing Via Header",
            ScanError::MissingHeader(H::From) => "Missing From Header",
            ScanError::MissingHeader(H::To) => "Missing To Header",
            ScanError::MissingHeader(H::CallId) => "Missing Call-ID Header",
            ScanError::MissingHeader(H::CSeq) => "Missing CSeq Header",
            ScanError::MissingHeader(_) => "Missing Mandatory Header",
            ScanError::DuplicateHeader(H::CallId) => "Duplicate Call-ID Header",
            ScanError::DuplicateHeader(H::CSeq) => "Duplicate CSeq Header",
            ScanError::DuplicateHeader(H::From) => "Duplicate From Header",
            ScanError::DuplicateHeader(H::To) => "Duplicate To Header",
            ScanError::DuplicateHeader(H::MaxForwards) => "Duplicate Max-Forwards Header",
            ScanError::DuplicateHeader(H::ContentLength) => "Conflicting Content-Length Headers",
            ScanError::DuplicateHeader(H::Expires) => "Duplicate Expires Header",
            ScanError::DuplicateHeader(_) => "Duplicate Header",
            ScanError::BadCSeq => "Malformed CSeq",
            ScanError::CSeqMethodMismatch => "CSeq Method Does Not Match Request Method",
            ScanError::BadContentLength => "Malformed Content-Length",
            ScanError::BodyTooShort => "Body Shorter Than Content-Length",
            ScanError::ContentLengthRequired => "Content-Length Required On Stream Transport",
        }
    }
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ScanError {}
