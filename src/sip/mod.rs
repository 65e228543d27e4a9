//! SIP message handling: the zero-copy scanner ([`scan`]), lazily parsed typed
//! views of header values, TCP stream framing ([`frame`]) and the response
//! writer. Nothing here allocates per message or touches a socket.

pub mod addr;
pub mod bytes;
pub mod digest;
pub mod error;
pub mod frame;
pub mod header;
pub mod list;
pub mod message;
pub mod params;
pub mod via;
pub mod write;

pub use addr::{NameAddr, Scheme, Uri};
pub use digest::AuthHeader;
pub use error::ScanError;
pub use frame::{frame, frame_resume, Frame};
pub use header::HeaderId;
pub use list::ListIter;
pub use message::{
    scan, scan_for_reply, scan_headers, CSeq, Header, Message, Method, RequestLine, StartLine,
    StatusLine,
};
pub use params::{Param, Params};
pub use via::{Rport, Via};
pub use write::ResponseWriter;

/// Largest SIP message over UDP (RFC 3261 §18.1.1 allows up to the IP datagram
/// limit); also the bound for one message on a stream.
pub const MAX_UDP_MESSAGE: usize = 65_535;
/// Most header fields in one message; RFC 4475's longest valid message has 47.
pub const MAX_HEADERS: usize = 64;
/// Longest header line, continuations included.
pub const MAX_LINE: usize = 8 * 1024;

/// A typed view that could not parse its header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    Via,
    NameAddr,
    Uri,
    /// A Contact whose URI does not parse (bad host, port 0 or above 65535).
    ContactUri,
    Expires,
    QValue,
    Auth,
    Number,
}

impl ViewError {
    /// A reason phrase for the 400 that answers a request carrying this value.
    pub const fn reason(self) -> &'static str {
        match self {
            ViewError::Via => "Malformed Via Header",
            ViewError::NameAddr => "Malformed Address Header",
            ViewError::Uri => "Malformed URI",
            ViewError::ContactUri => "Malformed Contact URI",
            ViewError::Expires => "Malformed Expires Value",
            ViewError::QValue => "Malformed q Value In Contact",
            ViewError::Auth => "Malformed Authorization Header",
            ViewError::Number => "Malformed Numeric Header",
        }
    }
}

impl std::fmt::Display for ViewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ViewError {}

/// `Expires` header: delta-seconds (RFC 3261 §20.19).
pub fn parse_expires(v: &[u8]) -> Result<u32, ViewError> {
    bytes::parse_u32_lenient(bytes::trim(v)).ok_or(ViewError::Expires)
}

/// `Max-Forwards`: 0–255 (RFC 3261 §20.22); RFC 4475 §3.1.2.4 has 300.
pub fn parse_max_forwards(v: &[u8]) -> Result<u8, ViewError> {
    bytes::parse_u32_lenient(bytes::trim(v))
        .and_then(|n| u8::try_from(n).ok())
        .ok_or(ViewError::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_values() {
        for (v, want) in [
            ("0", Ok(0)),
            ("3600", Ok(3600)),
            (" 60 ", Ok(60)),
            ("0000000000000000003600", Ok(3600)),
            ("4294967295", Ok(u32::MAX)),
            // Out of range or not delta-seconds: malformed, which callers
            // treat as the default (RFC 3261 §20.19, RFC 4475 §3.1.2.4).
            ("4294967296", Err(ViewError::Expires)),
            ("99999999999", Err(ViewError::Expires)),
            ("280297596632815", Err(ViewError::Expires)),
            ("-1", Err(ViewError::Expires)),
            ("+60", Err(ViewError::Expires)),
            ("1.5", Err(ViewError::Expires)),
            ("", Err(ViewError::Expires)),
            ("Thu, 01 Dec 1994 16:00:00 GMT", Err(ViewError::Expires)),
        ] {
            assert_eq!(parse_expires(v.as_bytes()), want, "{v:?}");
        }
    }

    #[test]
    fn max_forwards_values() {
        assert_eq!(parse_max_forwards(b"0"), Ok(0));
        assert_eq!(parse_max_forwards(b"70"), Ok(70));
        assert_eq!(parse_max_forwards(b"255"), Ok(255));
        for bad in ["256", "300", "4294967296", "-1", "+1", "", "7 0"] {
            assert_eq!(
                parse_max_forwards(bad.as_bytes()),
                Err(ViewError::Number),
                "{bad}"
            );
        }
    }
}
