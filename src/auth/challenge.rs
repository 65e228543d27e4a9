//! The `WWW-Authenticate` / `Proxy-Authenticate` header of a 401/407.

use super::bytes::push_quoted;
use super::digest::Algorithm;

/// Appends a Digest challenge header line (RFC 7616 §3.3, RFC 3261 §22.4),
/// CRLF included:
///
/// ```text
/// WWW-Authenticate: Digest realm="…", nonce="…", opaque="…", algorithm=SHA-256, qop="auth"[, stale=true]
/// ```
///
/// `header_name` is `"WWW-Authenticate"` (401, registrar) or
/// `"Proxy-Authenticate"` (407). A server offering several algorithms writes
/// one header per algorithm, preferred first (RFC 7616 §3.7, RFC 8760 §2.4).
/// `stale=true` tells the client its digest was right but the nonce is no
/// longer usable, so it retries without asking the user (RFC 7616 §3.3).
/// Values are quoted with `"` and `\` escaped.
pub fn write_challenge(
    out: &mut Vec<u8>,
    header_name: &str,
    realm: &[u8],
    nonce: &[u8],
    opaque: &[u8],
    algorithm: Algorithm,
    stale: bool,
) {
    debug_assert!(
        header_name.eq_ignore_ascii_case("WWW-Authenticate")
            || header_name.eq_ignore_ascii_case("Proxy-Authenticate"),
        "unexpected challenge header {header_name}"
    );
    out.extend_from_slice(header_name.as_bytes());
    out.extend_from_slice(b": Digest realm=");
    push_quoted(out, realm);
    out.extend_from_slice(b", nonce=");
    push_quoted(out, nonce);
    out.extend_from_slice(b", opaque=");
    push_quoted(out, opaque);
    out.extend_from_slice(b", algorithm=");
    out.extend_from_slice(algorithm.as_str().as_bytes());
    // qop is a quoted list of options in a challenge (RFC 7616 §3.3),
    // unlike the bare token in the Authorization header.
    out.extend_from_slice(b", qop=\"auth\"");
    if stale {
        out.extend_from_slice(b", stale=true");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_header_line() {
        let mut out = b"SIP/2.0 401 Unauthorized\r\n".to_vec();
        write_challenge(
            &mut out,
            "WWW-Authenticate",
            b"hik",
            b"abc",
            b"def",
            Algorithm::Md5,
            false,
        );
        assert_eq!(
            out,
            &b"SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"hik\", \
nonce=\"abc\", opaque=\"def\", algorithm=MD5, qop=\"auth\"\r\n"[..]
        );
    }

    #[test]
    fn sha256_stale_and_proxy_variant() {
        let mut out = Vec::new();
        write_challenge(
            &mut out,
            "Proxy-Authenticate",
            b"r",
            b"n",
            b"o",
            Algorithm::Sha256,
            true,
        );
        assert_eq!(
            out,
            &b"Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\", opaque=\"o\", \
algorithm=SHA-256, qop=\"auth\", stale=true\r\n"[..]
        );
    }

    #[test]
    fn realm_is_escaped() {
        let mut out = Vec::new();
        write_challenge(
            &mut out,
            "WWW-Authenticate",
            b"a\"b",
            b"n",
            b"o",
            Algorithm::Md5,
            false,
        );
        assert!(out.starts_with(b"WWW-Authenticate: Digest realm=\"a\\\"b\", "));
    }
}
