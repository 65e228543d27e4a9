//! The Via view (RFC 3261 §20.42, RFC 3581 rport): protocol, transport, sent-by
//! and parameters of one Via element.

use super::bytes::{self, is_lws};
use super::params::Params;
use super::ViewError;

/// RFC 3581 rport as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    Absent,
    /// `;rport` with no value: the client asks to be told its source port.
    Requested,
    Value(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// "SIP"
    pub protocol: &'a [u8],
    /// "2.0"
    pub version: &'a [u8],
    /// "UDP", "TCP", "TLS", … as written.
    pub transport: &'a [u8],
    /// Host, IPv6 references with their brackets.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// The raw parameter section, starting at the first `;` (or empty).
    pub params_raw: &'a [u8],
}

impl<'a> Via<'a> {
    /// Parses one Via element (one item of the comma-separated list).
    pub fn parse(v: &'a [u8]) -> Result<Via<'a>, ViewError> {
        let v = bytes::trim(v);
        // sent-protocol = name SLASH version SLASH transport, LWS around SLASH.
        let (protocol, rest) = split_token(v).ok_or(ViewError::Via)?;
        let rest = expect_slash(rest).ok_or(ViewError::Via)?;
        let (version, rest) = split_token(rest).ok_or(ViewError::Via)?;
        let rest = expect_slash(rest).ok_or(ViewError::Via)?;
        let (transport, rest) = split_token(rest).ok_or(ViewError::Via)?;
        if rest.first().is_none_or(|&c| !is_lws(c)) {
            return Err(ViewError::Via);
        }
        let rest = bytes::trim_start(rest);
        let semi = bytes::find_unquoted(rest, b';').unwrap_or(rest.len());
        let sent_by = bytes::trim(&rest[..semi]);
        let (host, port) = split_host_port(sent_by).ok_or(ViewError::Via)?;
        let params_raw = &rest[semi..];
        // Every parameter needs a name: `;;` or `;=x` is malformed (RFC 4475 §3.1.2.1).
        if has_empty_param(params_raw) {
            return Err(ViewError::Via);
        }
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            port,
            params_raw,
        })
    }

    pub fn params(&self) -> Params<'a> {
        Params::new(self.params_raw)
    }

    /// RFC 3261 §8.1.1.7: the transaction id; `None` when absent or empty.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.params()
            .get(b"branch")
            .flatten()
            .filter(|b| !b.is_empty())
    }

    pub fn received(&self) -> Option<&'a [u8]> {
        self.params().get(b"received").flatten()
    }

    pub fn rport(&self) -> Rport {
        match self.params().get(b"rport") {
            None => Rport::Absent,
            Some(None) => Rport::Requested,
            Some(Some(b"")) => Rport::Requested,
            Some(Some(v)) => bytes::parse_u32(v)
                .and_then(|p| u16::try_from(p).ok())
                .map_or(Rport::Requested, Rport::Value),
        }
    }
}

/// True when a `;`-separated section has an element with no name.
pub(crate) fn has_empty_param(raw: &[u8]) -> bool {
    let raw = bytes::trim(raw);
    if raw.is_empty() {
        return false;
    }
    let mut rest = match raw.strip_prefix(b";") {
        Some(r) => r,
        None => return true,
    };
    loop {
        let end = bytes::find_unquoted(rest, b';').unwrap_or(rest.len());
        let item = bytes::trim(&rest[..end]);
        let name = bytes::find(b'=', item).map_or(item, |eq| bytes::trim(&item[..eq]));
        if !bytes::is_token(name) {
            return true;
        }
        if end == rest.len() {
            return false;
        }
        rest = &rest[end + 1..];
    }
}

fn split_token(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = bytes::trim_start(s);
    let n = s
        .iter()
        .position(|&c| !bytes::TOKEN[c as usize])
        .unwrap_or(s.len());
    (n > 0).then(|| (&s[..n], &s[n..]))
}

fn expect_slash(s: &[u8]) -> Option<&[u8]> {
    bytes::trim_start(s).strip_prefix(b"/")
}

/// `host [":" port]` with IPv6 references; the host must be a hostname, IPv4
/// address or bracketed IPv6 address (RFC 3261 §25.1).
pub(crate) fn split_host_port(s: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (host, rest) = if s.first() == Some(&b'[') {
        let close = bytes::find(b']', s)?;
        let inner = &s[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return None;
        }
        (&s[..=close], &s[close + 1..])
    } else {
        let colon = bytes::find(b':', s).unwrap_or(s.len());
        let host = &s[..colon];
        if host.is_empty()
            || !host
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
        {
            return None;
        }
        (host, &s[colon..])
    };
    if rest.is_empty() {
        return Some((host, None));
    }
    let port = rest.strip_prefix(b":")?;
    let port = bytes::parse_u32(bytes::trim(port)).and_then(|p| u16::try_from(p).ok())?;
    Some((host, Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hikvision_via() {
        let v =
            Via::parse(b"SIP/2.0/UDP 10.64.49.218:7100;rport;branch=z9hG4bK4162288924").unwrap();
        assert_eq!(v.protocol, b"SIP");
        assert_eq!(v.version, b"2.0");
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"10.64.49.218");
        assert_eq!(v.port, Some(7100));
        assert_eq!(v.branch(), Some(&b"z9hG4bK4162288924"[..]));
        assert_eq!(v.rport(), Rport::Requested);
        assert_eq!(v.received(), None);
    }

    #[test]
    fn folded_spaced_via_from_rfc4475_wsinv() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.protocol, v.version, v.transport),
            (&b"SIP"[..], &b"2.0"[..], &b"UDP"[..])
        );
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.port, None);
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        let v = Via::parse(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .unwrap();
        assert_eq!(v.host, b"spindle.example.com");
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
    }

    #[test]
    fn rport_values_ipv6_and_received() {
        let v = Via::parse(
            b"SIP/2.0/TCP [2001:db8::1]:5061;received=192.0.2.1;rport=4000;branch=z9hG4bKx",
        )
        .unwrap();
        assert_eq!(v.host, b"[2001:db8::1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport(), Rport::Value(4000));
        assert_eq!(v.received(), Some(&b"192.0.2.1"[..]));
        assert_eq!(v.params().count(), 3);
        let v =
            Via::parse(b"SIP/2.0/UDP h;branch=z9hG4bK-d87543-0615ba2d0975c620-1--d87543-;rport")
                .unwrap();
        assert_eq!(v.rport(), Rport::Requested);
        assert_eq!(Via::parse(b"SIP/2.0/UDP h").unwrap().rport(), Rport::Absent);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"SIP/2.0/UDP",
            b"SIP/2.0 UDP host",
            b"SIP/2.0/UDP 192.0.2.15;;",
            b"SIP/2.0/UDP host:99999",
            b"SIP/2.0/UDP host:x",
            b"SIP/2.0/UDP [zz]:5060",
            b"SIP/2.0/UDP ho st",
        ] {
            assert!(Via::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
