//! Authorization / Proxy-Authorization credentials and WWW-Authenticate /
//! Proxy-Authenticate challenges (RFC 3261 §25.1, RFC 2617 §3.2): a scheme and a
//! comma-separated list of `name=value` pairs whose values are quoted strings
//! (`username="admin"`) or tokens (`algorithm=MD5`, `nc=00000001`).

use super::bytes::{self, is_lws};
use super::ViewError;

/// Parameters the registrar reads, captured in the single validating pass so
/// each lookup is an array index instead of a re-scan.
const KNOWN: [&[u8]; 12] = [
    b"username",
    b"realm",
    b"nonce",
    b"uri",
    b"response",
    b"algorithm",
    b"qop",
    b"nc",
    b"cnonce",
    b"opaque",
    b"stale",
    b"domain",
];

/// A credential or challenge: `Digest realm="…", nonce="…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthHeader<'a> {
    pub scheme: &'a [u8],
    pub params_raw: &'a [u8],
    known: [Option<&'a [u8]>; KNOWN.len()],
}

impl<'a> AuthHeader<'a> {
    pub fn parse(v: &'a [u8]) -> Result<AuthHeader<'a>, ViewError> {
        let v = bytes::trim(v);
        let end = v.iter().position(|&c| is_lws(c)).unwrap_or(v.len());
        let scheme = &v[..end];
        if !bytes::is_token(scheme) {
            return Err(ViewError::Auth);
        }
        let params_raw = bytes::trim_start(&v[end..]);
        let mut known = [None; KNOWN.len()];
        // One pass validates every pair and remembers the well-known ones (the
        // first occurrence wins; duplicates are the verifier's business).
        for p in AuthParams::new(params_raw) {
            let (name, value) = p?;
            if let Some(i) = KNOWN.iter().position(|k| k.eq_ignore_ascii_case(name)) {
                known[i].get_or_insert(value);
            }
        }
        Ok(AuthHeader {
            scheme,
            params_raw,
            known,
        })
    }

    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"Digest")
    }

    /// The `(name, value)` pairs with quotes removed (escapes kept, zero-copy).
    pub fn params(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        AuthParams::new(self.params_raw).filter_map(Result::ok)
    }

    /// The value of the named parameter (case-insensitive name).
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        match KNOWN.iter().position(|k| k.eq_ignore_ascii_case(name)) {
            Some(i) => self.known[i],
            None => self
                .params()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v),
        }
    }
}

struct AuthParams<'a> {
    rest: &'a [u8],
}

impl<'a> AuthParams<'a> {
    fn new(raw: &'a [u8]) -> Self {
        AuthParams { rest: raw }
    }
}

impl<'a> Iterator for AuthParams<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = bytes::trim_start(self.rest);
            if rest.is_empty() {
                return None;
            }
            if let Some(r) = rest.strip_prefix(b",") {
                self.rest = r;
                continue;
            }
            let Some(eq) = bytes::find(b'=', rest) else {
                self.rest = b"";
                return Some(Err(ViewError::Auth));
            };
            let name = bytes::trim(&rest[..eq]);
            let after = bytes::trim_start(&rest[eq + 1..]);
            let (value, next) = if after.first() == Some(&b'"') {
                match bytes::closing_quote(after) {
                    Some(close) => (&after[1..close], &after[close + 1..]),
                    None => {
                        self.rest = b"";
                        return Some(Err(ViewError::Auth));
                    }
                }
            } else {
                let end = bytes::find(b',', after).unwrap_or(after.len());
                (bytes::trim(&after[..end]), &after[end..])
            };
            let next = bytes::trim_start(next);
            if !bytes::is_token(name) || !(next.is_empty() || next[0] == b',') {
                self.rest = b"";
                return Some(Err(ViewError::Auth));
            }
            self.rest = next;
            return Some(Ok((name, value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hikvision_authorization() {
        let h = AuthHeader::parse(b"Digest username=\"admin\", realm=\"hik\", nonce=\"a8afe6fcbee6331d89d3eb0d3d19ce39\", uri=\"sip:130909115229300920@10.64.49.44:7100\", response=\"907ddb1bcc25174d7de4a96c947fb066\", algorithm=MD5, opaque=\"a853e4f25298413f9bf3a9aa6767857d\"").unwrap();
        assert!(h.is_digest());
        assert_eq!(h.param(b"username"), Some(&b"admin"[..]));
        assert_eq!(h.param(b"REALM"), Some(&b"hik"[..]));
        assert_eq!(h.param(b"algorithm"), Some(&b"MD5"[..]));
        assert_eq!(
            h.param(b"opaque"),
            Some(&b"a853e4f25298413f9bf3a9aa6767857d"[..])
        );
        assert_eq!(h.params().count(), 7);
    }

    #[test]
    fn qop_nc_and_escapes() {
        let h =
            AuthHeader::parse(b"Digest username=\"a\\\"b\",qop=auth,nc=00000001 , cnonce=\"x,y\"")
                .unwrap();
        assert_eq!(h.param(b"username"), Some(&b"a\\\"b"[..]));
        assert_eq!(h.param(b"nc"), Some(&b"00000001"[..]));
        assert_eq!(h.param(b"cnonce"), Some(&b"x,y"[..]));
        assert_eq!(h.param(b"qop"), Some(&b"auth"[..]));
        let c = AuthHeader::parse(b"Digest realm=\"sipreg\", qop=\"auth\", stale=true").unwrap();
        assert_eq!(c.param(b"qop"), Some(&b"auth"[..]));
        assert_eq!(c.param(b"stale"), Some(&b"true"[..]));
    }

    #[test]
    fn rejects_malformed() {
        assert!(AuthHeader::parse(b"Digest username=\"unterminated").is_err());
        assert!(AuthHeader::parse(b"Digest username").is_err());
        assert!(AuthHeader::parse(b"Digest a=\"1\" b=2").is_err());
        assert!(AuthHeader::parse(b"").is_err());
        let n = AuthHeader::parse(b"NoOneKnowsThisScheme opaque-data=here").unwrap();
        assert!(!n.is_digest());
    }
}
