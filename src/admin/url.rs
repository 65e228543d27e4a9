//! Request-target pieces: percent-decoding (RFC 3986 §2.1) of path segments
//! and `name=value&…` query strings.

/// Why a path segment or query string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// `%` not followed by two hex digits.
    BadEscape,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; every other byte (including `+`, which means a space
/// only in form bodies) is kept as is.
pub fn percent_decode(s: &[u8]) -> Result<Vec<u8>, UrlError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = s.get(i + 1).copied().and_then(hex);
            let lo = s.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(UrlError::BadEscape),
            }
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The `name=value` pairs of a query string, names and values percent-decoded
/// (`+` as a space, as HTML forms send it). Empty pairs (`a=1&&b=2`) are
/// skipped; a name without `=` has an empty value.
pub fn query_pairs(query: &str) -> impl Iterator<Item = Result<(String, String), UrlError>> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let spaced = s.replace('+', " ");
            percent_decode(spaced.as_bytes()).map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Ok((decode(name)?, decode(value)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_the_rest() {
        assert_eq!(
            percent_decode(b"alice%40example.com").unwrap(),
            b"alice@example.com"
        );
        assert_eq!(percent_decode(b"a%2Fb%2fc+d").unwrap(), b"a/b/c+d");
        assert_eq!(percent_decode(b"").unwrap(), b"");
        assert_eq!(percent_decode(b"%e4%b8%ad").unwrap(), "中".as_bytes());
    }

    #[test]
    fn rejects_truncated_or_non_hex_escapes() {
        for bad in [&b"%"[..], b"%4", b"a%zz", b"%g0", b"x%4"] {
            assert_eq!(percent_decode(bad), Err(UrlError::BadEscape), "{bad:?}");
        }
    }

    #[test]
    fn splits_query_pairs() {
        let pairs: Vec<_> = query_pairs("offset=10&&limit=5&flag&q=a+b%21")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("offset".into(), "10".into()),
                ("limit".into(), "5".into()),
                ("flag".into(), String::new()),
                ("q".into(), "a b!".into()),
            ]
        );
        assert!(query_pairs("a=%x").any(|r| r.is_err()));
    }
}
