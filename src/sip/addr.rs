//! name-addr / addr-spec (RFC 3261 §20.10, §25.1) as used by From, To, Contact,
//! Route and friends, and the SIP / SIPS / tel URI inside them (§19.1).

use super::bytes::{self, is_lws};
use super::params::Params;
use super::via::{has_empty_param, split_host_port};
use super::ViewError;

/// `[display-name] <URI> *(;param)` or `addr-spec *(;param)`, or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name: the content of a quoted string (escapes kept) or the
    /// token words as written. `None` when absent or empty.
    pub display: Option<&'a [u8]>,
    pub uri: &'a [u8],
    /// Header parameters (tag, expires, q, +sip.instance…), starting at `;`.
    pub params_raw: &'a [u8],
    /// True for the `*` of a wildcard Contact (RFC 3261 §10.2.2).
    pub wildcard: bool,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a [u8]) -> Result<NameAddr<'a>, ViewError> {
        let v = bytes::trim(v);
        if v == b"*" {
            return Ok(NameAddr {
                display: None,
                uri: v,
                params_raw: b"",
                wildcard: true,
            });
        }
        let (display, rest) = if v.first() == Some(&b'"') {
            let close = bytes::closing_quote(v).ok_or(ViewError::NameAddr)?;
            let rest = bytes::trim_start(&v[close + 1..]);
            if rest.first() != Some(&b'<') {
                return Err(ViewError::NameAddr);
            }
            (Some(&v[1..close]), rest)
        } else {
            match bytes::find(b'<', v) {
                Some(lt) => {
                    let words = bytes::trim(&v[..lt]);
                    // Unquoted display names are tokens separated by LWS
                    // (RFC 4475 §3.1.2.15 rejects a comma there).
                    if !words
                        .split(|&c| is_lws(c))
                        .all(|w| w.is_empty() || bytes::is_token(w))
                    {
                        return Err(ViewError::NameAddr);
                    }
                    (Some(words).filter(|w| !w.is_empty()), &v[lt..])
                }
                None => (None, v),
            }
        };
        let (uri, params_raw) = if let Some(inner) = rest.strip_prefix(b"<") {
            let gt = bytes::find(b'>', inner).ok_or(ViewError::NameAddr)?;
            (&inner[..gt], &inner[gt + 1..])
        } else {
            // addr-spec: parameters after the URI belong to the header, so the
            // URI ends at the first ';' (RFC 3261 §20.10).
            let semi = bytes::find(b';', rest).unwrap_or(rest.len());
            let uri = bytes::trim_end(&rest[..semi]);
            // An addr-spec cannot carry `?headers` (RFC 4475 §3.1.2.13), nor a
            // '>' (no URI character; written back between `<>` it would
            // end the URI early).
            if uri.iter().any(|&c| matches!(c, b'?' | b'>')) {
                return Err(ViewError::NameAddr);
            }
            (uri, &rest[semi..])
        };
        // No white space inside the URI (RFC 4475 §3.1.2.14) and a scheme.
        if uri.is_empty() || uri.iter().any(|&c| is_lws(c)) || bytes::find(b':', uri).is_none() {
            return Err(ViewError::NameAddr);
        }
        if has_empty_param(params_raw) {
            return Err(ViewError::NameAddr);
        }
        Ok(NameAddr {
            display,
            uri,
            params_raw,
            wildcard: false,
        })
    }

    pub fn params(&self) -> Params<'a> {
        Params::new(self.params_raw)
    }

    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.params().get(name)
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param(b"tag").flatten().filter(|t| !t.is_empty())
    }

    /// The `expires` header parameter. `Some(Err)` for a present but malformed or
    /// out-of-range value (RFC 4475 §3.1.2.4), which callers treat as the default.
    pub fn expires(&self) -> Option<Result<u32, ViewError>> {
        self.param(b"expires").map(|v| {
            v.and_then(bytes::parse_u32_lenient)
                .ok_or(ViewError::Expires)
        })
    }

    /// `q` as thousandths (0–1000), RFC 3261 §20.10 `qvalue`.
    pub fn q(&self) -> Option<Result<u16, ViewError>> {
        self.param(b"q")
            .map(|v| v.and_then(parse_qvalue).ok_or(ViewError::QValue))
    }

    pub fn parse_uri(&self) -> Result<Uri<'a>, ViewError> {
        Uri::parse(self.uri)
    }
}

/// RFC 3261 qvalue: `0[.0-3 digits]` or `1[.0-3 zeros]`, as thousandths.
pub fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let v = bytes::unquote(v);
    let (int, frac) = match bytes::find(b'.', v) {
        Some(d) => (&v[..d], &v[d + 1..]),
        None => (v, &v[v.len()..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |c| u16::from(c - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

/// A URI split into its parts. For `tel:` the number is in `user` and `host` is
/// empty; for other schemes everything after the colon is in `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    pub scheme_raw: &'a [u8],
    pub user: Option<&'a [u8]>,
    pub password: Option<&'a [u8]>,
    /// Host, IPv6 references with their brackets.
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// URI parameters (transport, lr, maddr, line, rinstance…), starting at `;`.
    pub params_raw: &'a [u8],
    /// The `?h=v&…` headers part, without the `?`.
    pub headers: Option<&'a [u8]>,
}

impl<'a> Uri<'a> {
    pub fn parse(uri: &'a [u8]) -> Result<Uri<'a>, ViewError> {
        let colon = bytes::find(b':', uri).ok_or(ViewError::Uri)?;
        let scheme_raw = &uri[..colon];
        let scheme = if scheme_raw.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        if scheme_raw.is_empty() || !bytes::is_token(scheme_raw) {
            return Err(ViewError::Uri);
        }
        let rest = &uri[colon + 1..];
        let empty = &rest[rest.len()..];
        match scheme {
            Scheme::Sip | Scheme::Sips => {}
            Scheme::Tel => {
                let semi = bytes::find(b';', rest).unwrap_or(rest.len());
                if semi == 0 {
                    return Err(ViewError::Uri);
                }
                return Ok(Uri {
                    scheme,
                    scheme_raw,
                    user: Some(&rest[..semi]),
                    password: None,
                    host: empty,
                    port: None,
                    params_raw: &rest[semi..],
                    headers: None,
                });
            }
            Scheme::Other => {
                return Ok(Uri {
                    scheme,
                    scheme_raw,
                    user: None,
                    password: None,
                    host: rest,
                    port: None,
                    params_raw: empty,
                    headers: None,
                })
            }
        }
        // The user part may itself contain ';', '?' and ':' (RFC 4475 §3.1.1.2,
        // §3.1.1.9), but never an unescaped '@', so the last '@' ends it.
        let (userinfo, hostpart) = match bytes::rfind(b'@', rest) {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match bytes::find(b'?', hostpart) {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        let semi = bytes::find(b';', hostpart).unwrap_or(hostpart.len());
        let (host, port) = split_host_port(&hostpart[..semi]).ok_or(ViewError::Uri)?;
        // Port 0 is no destination: a binding or redirect to it is useless.
        if port == Some(0) {
            return Err(ViewError::Uri);
        }
        let (user, password) = match userinfo {
            // Passwords follow the first ':' of the userinfo (§19.1.1).
            Some(ui) => match bytes::find(b':', ui) {
                Some(c) => (Some(&ui[..c]), Some(&ui[c + 1..])),
                None => (Some(ui), None),
            },
            None => (None, None),
        };
        if user.is_some_and(<[u8]>::is_empty) {
            return Err(ViewError::Uri);
        }
        Ok(Uri {
            scheme,
            scheme_raw,
            user,
            password,
            host,
            port,
            params_raw: &hostpart[semi..],
            headers,
        })
    }

    pub fn params(&self) -> Params<'a> {
        Params::new(self.params_raw)
    }

    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.params().get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eyebeam_display_name_without_space() {
        let a = NameAddr::parse(b"\"5000\"<sip:5000@172.21.0.12:6060>;tag=1b1b480b").unwrap();
        assert_eq!(a.display, Some(&b"5000"[..]));
        assert_eq!(a.uri, b"sip:5000@172.21.0.12:6060");
        assert_eq!(a.tag(), Some(&b"1b1b480b"[..]));
        let u = a.parse_uri().unwrap();
        assert_eq!(
            (u.user, u.host, u.port),
            (Some(&b"5000"[..]), &b"172.21.0.12"[..], Some(6060))
        );
    }

    #[test]
    fn contact_params_and_uri_params() {
        let a = NameAddr::parse(
            b"<sip:kk80ei@10.49.0.1:5064;line=00586725135b489>;expires=3600;q=0.7;+sip.instance=\"<urn:uuid:1>\";reg-id=1",
        )
        .unwrap();
        assert_eq!(a.display, None);
        assert_eq!(a.expires(), Some(Ok(3600)));
        assert_eq!(a.q(), Some(Ok(700)));
        assert_eq!(
            a.param(b"+sip.instance"),
            Some(Some(&b"\"<urn:uuid:1>\""[..]))
        );
        assert_eq!(a.param(b"reg-id"), Some(Some(&b"1"[..])));
        let u = a.parse_uri().unwrap();
        assert_eq!(u.param(b"line"), Some(Some(&b"00586725135b489"[..])));
        assert_eq!(u.port, Some(5064));
    }

    #[test]
    fn addr_spec_params_belong_to_header() {
        let a = NameAddr::parse(b"sip:user@example.com;tag=341518").unwrap();
        assert_eq!(a.uri, b"sip:user@example.com");
        assert_eq!(a.tag(), Some(&b"341518"[..]));
        assert!(NameAddr::parse(b"*").unwrap().wildcard);
        assert!(NameAddr::parse(b"sip:user@host?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse(b"sip:a>b@host").is_err());
        assert!(NameAddr::parse(b"sip:ab@host>").is_err());
    }

    #[test]
    fn token_and_quoted_display_names() {
        let a = NameAddr::parse(b"token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;tag=x")
            .unwrap();
        assert_eq!(a.display, Some(&b"token1~` token2'+_ token3*%!.-"[..]));
        let a = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(a.display, Some(&b"J Rosenberg \\\\\\\""[..]));
        assert_eq!(a.tag(), Some(&b"98asjd8"[..]));
        assert!(NameAddr::parse(b"\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a.g.bell@example.com>").is_err());
        assert!(NameAddr::parse(b"< sip:t.watson@example.org >").is_err());
    }

    #[test]
    fn q_and_expires_edge_values() {
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"0.33"), Some(330));
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"1.5"), None);
        assert_eq!(parse_qvalue(b"0.1234"), None);
        assert_eq!(parse_qvalue(b"2"), None);
        let a = NameAddr::parse(b"<sip:u@h>;expires=280297596632815").unwrap();
        assert_eq!(a.expires(), Some(Err(ViewError::Expires)));
    }

    #[test]
    fn uris() {
        let u = Uri::parse(b"sips:alice:secret@[2001:db8::10]:5061;transport=tcp;lr?subject=x")
            .unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"secret"[..]));
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.param(b"transport"), Some(Some(&b"tcp"[..])));
        assert_eq!(u.param(b"lr"), Some(None));
        assert_eq!(u.headers, Some(&b"subject=x"[..]));
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
        let u = Uri::parse(b"tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user, Some(&b"+1-201-555-0123"[..]));
        let u = Uri::parse(b"sip:10.49.0.2").unwrap();
        assert_eq!((u.user, u.host, u.port), (None, &b"10.49.0.2"[..], None));
        assert_eq!(
            Uri::parse(b"isbn:2983792873").unwrap().scheme,
            Scheme::Other
        );
        assert!(Uri::parse(b"sip:@host").is_err());
        // Ports: 1–65535, digits only, no overflow.
        assert_eq!(Uri::parse(b"sip:h:1").unwrap().port, Some(1));
        assert_eq!(Uri::parse(b"sip:h:65535").unwrap().port, Some(65535));
        assert_eq!(Uri::parse(b"sip:h:00005060").unwrap().port, Some(5060));
        for bad in [
            &b"sip:h:0"[..],
            b"sip:a@h:0;transport=tcp",
            b"sip:h:65536",
            b"sip:h:99999",
            b"sip:h:4294967296",
            b"sip:h:-1",
            b"sip:h:+5",
            b"sip:h:",
            b"sip:[::1]:0",
        ] {
            assert!(Uri::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(Uri::parse(b"sip:").is_err());
        assert!(Uri::parse(b"nocolon").is_err());
    }
}
