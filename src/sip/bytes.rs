//! Byte classes and small slice helpers shared by the scanner and the typed views.
//!
//! The tables are `const` so they are built once, at compile time (STYLE habit 7).
//! Header values are kept raw and zero-copy, so a folded value still holds its
//! `CRLF SP` continuation bytes: every view treats CR and LF inside a value as
//! linear white space (RFC 3261 §7.3.1), which is what "joining" the lines means.

/// RFC 3261 §25.1 `token` characters: alphanum and `-.!%*_+`'~`.
pub const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// Bytes allowed in a Request-URI: visible ASCII and UTF-8 bytes, no white
/// space, no `<>` or `"` (RFC 4475 §3.1.2.7).
pub const URI_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = (c > 0x20 && c < 0x7f && c != b'<' && c != b'>' && c != b'"') || c >= 0x80;
        i += 1;
    }
    t
};

/// RFC 3261 `word` characters (Call-ID): token plus `()<>:\"/[]?{}`.
pub const WORD: [bool; 256] = {
    let mut t = TOKEN;
    let extra = b"()<>:\\\"/[]?{}";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

#[inline]
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| TOKEN[c as usize])
}

/// White space inside a header value, including the CRLF of a folded line.
#[inline]
pub fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

#[inline]
pub fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&c| !is_lws(c)).unwrap_or(s.len());
    &s[n..]
}

#[inline]
pub fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rposition(|&c| !is_lws(c)).map_or(0, |p| p + 1);
    &s[..n]
}

#[inline]
pub fn trim(s: &[u8]) -> &[u8] {
    trim_end(trim_start(s))
}

/// Parses 1–10 ASCII digits into a `u32`, rejecting overflow, signs and empties.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    u32::try_from(v).ok()
}

/// Like [`parse_u32`] but allows leading zeros beyond ten digits ("0000000070").
pub fn parse_u32_lenient(s: &[u8]) -> Option<u32> {
    let first = s.iter().position(|&c| c != b'0');
    match first {
        None if !s.is_empty() => Some(0),
        None => None,
        Some(i) if s[..i].iter().all(|&c| c == b'0') => parse_u32(&s[i..]),
        Some(_) => None,
    }
}

/// Position of `needle` in a short slice. Header values and parameters are tens
/// of bytes, where a plain loop beats `memchr`'s vector set-up and call; line
/// ends in a whole message still use `memchr`.
#[inline]
pub fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

/// Last position of `needle` in a short slice (see [`find`]).
#[inline]
pub fn rfind(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().rposition(|&c| c == needle)
}

/// Finds `needle` in `hay` outside double-quoted strings (with `\` escapes).
pub fn find_unquoted(hay: &[u8], needle: u8) -> Option<usize> {
    let mut in_quote = false;
    let mut i = 0;
    while i < hay.len() {
        let c = hay[i];
        if in_quote {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Offset of `part` inside `whole`; `part` must be a subslice of `whole`.
#[inline]
pub fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    let off = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    debug_assert!(off <= whole.len(), "offset_in: part is not inside whole");
    off
}

/// Appends the decimal form of `n` without allocating a `String`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Strips one pair of surrounding double quotes, if present, returning the raw
/// content (escapes are kept: the views are zero-copy).
pub fn unquote(s: &[u8]) -> &[u8] {
    if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Index of the quote closing the quoted string that starts at `v[0]`.
pub fn closing_quote(v: &[u8]) -> Option<usize> {
    let mut i = 1;
    while let Some(off) = memchr::memchr2(b'"', b'\\', v.get(i..)?) {
        let at = i + off;
        if v[at] == b'"' {
            return Some(at);
        }
        // A quoted-pair: skip the escaped byte, whatever it is.
        i = at + 2;
    }
    None
}

/// True when `s` is a complete quoted-string: opening quote, closing quote, and
/// no unescaped quote in between.
pub fn is_quoted_string(s: &[u8]) -> bool {
    s.first() == Some(&b'"') && closing_quote(s) == Some(s.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"36893488147419103232"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32_lenient(b"0068"), Some(68));
        assert_eq!(parse_u32_lenient(b"000000000000070"), Some(70));
        assert_eq!(parse_u32_lenient(b"000"), Some(0));
        assert_eq!(parse_u32_lenient(b"0x1"), None);
    }

    #[test]
    fn trimming_treats_fold_as_space() {
        assert_eq!(trim(b" \r\n  a b\r\n "), b"a b");
        assert_eq!(trim(b"   "), b"");
    }

    #[test]
    fn quotes() {
        assert_eq!(find_unquoted(b"\"a,b\",c", b','), Some(5));
        assert_eq!(find_unquoted(b"\"a\\\",b\",c", b','), Some(7));
        assert!(is_quoted_string(b"\"a\\\"b\""));
        assert!(!is_quoted_string(b"\"abc"));
        assert!(!is_quoted_string(b"\"a\"b\""));
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        push_u64(&mut v, 18446744073709551615);
        assert_eq!(v, b"018446744073709551615");
    }
}
