//! Byte helpers shared by the digest code: lowercase hex into stack buffers,
//! constant-time comparison, and undoing quoted-pair escapes.
//!
//! Nothing here allocates; every output is a caller-provided or fixed-size array.

use md5::Digest;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out`, which must be exactly twice as long.
pub(crate) fn hex_encode_into(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2, "hex output must be 2x input");
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0x0f)];
    }
}

/// Lowercase hex of an MD5 digest — RFC 2617 §3.1.3 `32LHEX`.
pub(crate) fn hex16(bytes: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_encode_into(bytes, &mut out);
    out
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `hex` (either case) into `out`; `false` unless `hex` is exactly
/// `2 * out.len()` hex digits. `out` is unspecified on failure.
///
/// Branches on the input, so use it only on values the peer already knows
/// (its own response, a nonce it was sent), never on a secret.
pub(crate) fn hex_decode_into(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *o = (hi << 4) | lo,
            _ => return false,
        }
    }
    true
}

/// Equality whose running time depends only on the lengths, not on where the
/// inputs first differ, so a MAC or digest cannot be guessed byte by byte.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        // Lengths are public (fixed by the format), so an early exit leaks nothing.
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the fold back into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// Feeds `s` to `h` (MD5 or SHA-256) as the value of a quoted-string with its quoted-pairs
/// undone (RFC 3261 §25.1: `quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`).
///
/// The scanner hands over what is between the quotes with escapes intact, but
/// the digest is computed over the unquoted value (RFC 2617 §3.2.2: "unq(...)").
pub(crate) fn update_unquoted<D: Digest>(h: &mut D, mut s: &[u8]) {
    while let Some(i) = memchr::memchr(b'\\', s) {
        h.update(&s[..i]);
        match s.get(i + 1) {
            Some(escaped) => {
                h.update([*escaped]);
                s = &s[i + 2..];
            }
            None => {
                // A lone trailing backslash cannot come from a well-formed
                // quoted-string; take it literally rather than drop a byte.
                h.update(b"\\");
                s = &[];
            }
        }
    }
    h.update(s);
}

/// Undoes quoted-pairs of `s` into `buf`; `None` if it does not fit.
/// Returns `s` itself when there is nothing to undo (the common case).
pub(crate) fn unquote_into<'b>(s: &'b [u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    if memchr::memchr(b'\\', s).is_none() {
        return Some(s);
    }
    let mut n = 0;
    let mut i = 0;
    while i < s.len() {
        let c = match (s[i], s.get(i + 1)) {
            (b'\\', Some(&escaped)) => {
                i += 2;
                escaped
            }
            (c, _) => {
                i += 1;
                c
            }
        };
        *buf.get_mut(n)? = c;
        n += 1;
    }
    Some(&buf[..n])
}

/// Writes `s` as the inside of a quoted-string, escaping `"` and `\`
/// (RFC 3261 §25.1) so a configured realm cannot break the header.
pub(crate) fn push_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Md5;

    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 16] = core::array::from_fn(|i| (i * 17) as u8);
        let hex = hex16(&bytes);
        assert_eq!(&hex, b"00112233445566778899aabbccddeeff");
        let mut back = [0u8; 16];
        assert!(hex_decode_into(&hex, &mut back));
        assert_eq!(back, bytes);
        assert!(hex_decode_into(
            b"00112233445566778899AABBCCDDEEFF",
            &mut back
        ));
        assert_eq!(back, bytes);
    }

    #[test]
    fn hex_decode_rejects_bad_input() {
        let mut out = [0u8; 2];
        assert!(!hex_decode_into(b"abc", &mut out));
        assert!(!hex_decode_into(b"abcde", &mut out));
        assert!(!hex_decode_into(b"abcg", &mut out));
        assert!(!hex_decode_into(b"ab c", &mut out));
    }

    #[test]
    fn ct_eq_matches_naive_eq() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"", b""),
            (b"abc", b"abc"),
            (b"abc", b"abd"),
            (b"abc", b"ab"),
            (b"xbc", b"abc"),
        ];
        for (a, b) in cases {
            assert_eq!(ct_eq(a, b), a == b, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn unquoting_agrees_between_hash_and_buffer() {
        for raw in [&b"plain"[..], b"a\\\"b", b"back\\\\slash", b"trail\\"] {
            let mut buf = [0u8; 32];
            let unq = unquote_into(raw, &mut buf).expect("fits");
            let mut a = Md5::new();
            update_unquoted(&mut a, raw);
            assert_eq!(a.finalize(), Md5::digest(unq), "{raw:?}");
        }
        let mut buf = [0u8; 8];
        assert_eq!(unquote_into(b"a\\\"b", &mut buf), Some(&b"a\"b"[..]));
        let mut tiny = [0u8; 2];
        assert_eq!(unquote_into(b"a\\\"b", &mut tiny), None);
    }

    #[test]
    fn push_quoted_escapes() {
        let mut out = Vec::new();
        push_quoted(&mut out, b"a\"b\\c");
        assert_eq!(out, b"\"a\\\"b\\\\c\"");
    }
}
