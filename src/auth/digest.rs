//! The digest itself: parsed Authorization parameters and the RFC 2617
//! response computation (algorithm MD5, qop absent or `auth`), for the server
//! (verify) and for clients (answer a challenge).
//!
//! Everything is computed into stack buffers; nothing allocates.

use std::fmt;
use std::sync::OnceLock;

use md5::{Digest, Md5};

use super::bytes::{ct_eq, hex16, hex_decode_into, md5_update_unquoted};
use super::credentials::Ha1;
use super::nonce_count::{format_nc, parse_nc};

/// The parameters of a `Digest` Authorization / Proxy-Authorization header
/// (RFC 2617 §3.2.2), borrowed from the message.
///
/// Values are what the scanner found between the quotes, quoted-pairs still
/// escaped; the digest computation undoes them where RFC 2617 says `unq(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestResponse<'a> {
    /// `username`: whose HA1 to use.
    pub username: &'a [u8],
    /// `realm`: must be the realm we challenged with.
    pub realm: &'a [u8],
    /// `nonce`: echoed from our challenge.
    pub nonce: &'a [u8],
    /// `uri`: the digest-uri, hashed into HA2. For SIP it is usually the
    /// Request-URI, but NAT and proxies rewrite Request-URIs (the eyeBeam
    /// capture differs from its Request-URI), so it is not compared to it.
    pub uri: &'a [u8],
    /// `response`: 32 hex digits.
    pub response: &'a [u8],
    /// `algorithm`: absent means MD5 (RFC 2617 §3.2.1).
    pub algorithm: Option<&'a [u8]>,
    /// `qop`: absent (RFC 2069 compatibility) or `auth`.
    pub qop: Option<&'a [u8]>,
    /// `nc`: nonce-count, 8 hex digits; present with qop.
    pub nc: Option<&'a [u8]>,
    /// `cnonce`: client nonce; present with qop.
    pub cnonce: Option<&'a [u8]>,
    /// `opaque`: echoed from our challenge.
    pub opaque: Option<&'a [u8]>,
}

/// Why a digest was not accepted. Small and `Copy`, so each reason can be a
/// counter in /metrics ([`as_str`](Self::as_str) is its label).
///
/// An unknown user and a wrong password are both [`Mismatch`](Self::Mismatch)
/// (RFC 7616 §5.3: do not reveal which user names exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthError {
    /// No `username` parameter.
    MissingUsername,
    /// No `realm` parameter.
    MissingRealm,
    /// No `nonce` parameter.
    MissingNonce,
    /// No `uri` parameter.
    MissingUri,
    /// No `response` parameter.
    MissingResponse,
    /// `qop` without `nc` (RFC 2617 §3.2.2: required with qop).
    MissingNc,
    /// `qop` without `cnonce` (RFC 2617 §3.2.2: required with qop).
    MissingCnonce,
    /// A parameter given twice; which one counts would be ambiguous.
    DuplicateParam,
    /// `algorithm` other than MD5 (MD5-sess, SHA-256, ...).
    UnsupportedAlgorithm,
    /// `qop` other than `auth` (auth-int is not offered).
    UnsupportedQop,
    /// `nc` is not 8 hex digits.
    BadNc,
    /// `response` is not 32 hex digits.
    BadResponse,
    /// `realm` is not ours.
    RealmMismatch,
    /// Wrong password or unknown user.
    Mismatch,
    /// The nonce was not issued by this process (or is dated in the future).
    InvalidNonce,
    /// `nc` not above the last one seen with this nonce, or the nonce-count
    /// table is full (see [`super::NonceCounts`]).
    Replay,
}

impl AuthError {
    /// Stable snake_case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthError::MissingUsername => "missing_username",
            AuthError::MissingRealm => "missing_realm",
            AuthError::MissingNonce => "missing_nonce",
            AuthError::MissingUri => "missing_uri",
            AuthError::MissingResponse => "missing_response",
            AuthError::MissingNc => "missing_nc",
            AuthError::MissingCnonce => "missing_cnonce",
            AuthError::DuplicateParam => "duplicate_param",
            AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthError::UnsupportedQop => "unsupported_qop",
            AuthError::BadNc => "bad_nc",
            AuthError::BadResponse => "bad_response",
            AuthError::RealmMismatch => "realm_mismatch",
            AuthError::Mismatch => "mismatch",
            AuthError::InvalidNonce => "invalid_nonce",
            AuthError::Replay => "replay",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for AuthError {}

impl<'a> DigestResponse<'a> {
    /// Builds the response from `(name, value)` pairs in header order.
    ///
    /// Names are case-insensitive (RFC 2617 §3.2.2 / RFC 7616 §3.4: tokens);
    /// unknown parameters are ignored (`auth-param` extensions). A repeated
    /// known parameter is refused rather than guessing which one to use.
    pub fn from_params<I>(params: I) -> Result<Self, AuthError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut uri = None;
        let mut response = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut nc = None;
        let mut cnonce = None;
        let mut opaque = None;
        for (name, value) in params {
            // Longest known name is "algorithm" (9 bytes); anything longer
            // is an extension parameter.
            let mut lower = [0u8; 9];
            let Some(lower) = lower.get_mut(..name.len()) else {
                continue;
            };
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            let slot = match &*lower {
                b"username" => &mut username,
                b"realm" => &mut realm,
                b"nonce" => &mut nonce,
                b"uri" => &mut uri,
                b"response" => &mut response,
                b"algorithm" => &mut algorithm,
                b"qop" => &mut qop,
                b"nc" => &mut nc,
                b"cnonce" => &mut cnonce,
                b"opaque" => &mut opaque,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(AuthError::DuplicateParam);
            }
        }
        let resp = DigestResponse {
            username: username.ok_or(AuthError::MissingUsername)?,
            realm: realm.ok_or(AuthError::MissingRealm)?,
            nonce: nonce.ok_or(AuthError::MissingNonce)?,
            uri: uri.ok_or(AuthError::MissingUri)?,
            response: response.ok_or(AuthError::MissingResponse)?,
            algorithm,
            qop,
            nc,
            cnonce,
            opaque,
        };
        if resp.qop.is_some() {
            // RFC 2617 §3.2.2: cnonce and nc "MUST be specified if a qop
            // directive is sent".
            if resp.nc.is_none() {
                return Err(AuthError::MissingNc);
            }
            if resp.cnonce.is_none() {
                return Err(AuthError::MissingCnonce);
            }
        }
        Ok(resp)
    }

    /// The nonce-count as a number, if present and well formed.
    pub fn nc_value(&self) -> Option<u32> {
        self.nc.and_then(parse_nc)
    }
}

/// The qop part of a response computation (RFC 2617 §3.2.2.1).
struct QopParts<'a> {
    nc: &'a [u8],
    cnonce: &'a [u8],
    qop: &'a [u8],
}

/// request-digest per RFC 2617 §3.2.2.1, in binary:
/// `KD(H(A1), unq(nonce) ":" nc ":" unq(cnonce) ":" qop ":" H(A2))` with qop,
/// `KD(H(A1), unq(nonce) ":" H(A2))` without, where `KD(s, d) = H(s ":" d)`
/// and `A2 = Method ":" digest-uri` (§3.2.2.3, qop absent or auth).
///
/// `feed` absorbs the quoted values: [`md5_update_unquoted`] for values
/// straight from a message, a plain update for values a client holds.
fn request_digest(
    ha1: &Ha1,
    nonce: &[u8],
    method: &[u8],
    uri: &[u8],
    qop: Option<QopParts<'_>>,
    feed: fn(&mut Md5, &[u8]),
) -> [u8; 16] {
    let mut a2 = Md5::new();
    a2.update(method);
    a2.update(b":");
    feed(&mut a2, uri);
    let ha2 = hex16(&a2.finalize().into());

    let mut kd = Md5::new();
    kd.update(hex16(ha1));
    kd.update(b":");
    feed(&mut kd, nonce);
    kd.update(b":");
    if let Some(q) = qop {
        kd.update(q.nc);
        kd.update(b":");
        feed(&mut kd, q.cnonce);
        kd.update(b":");
        kd.update(q.qop);
        kd.update(b":");
    }
    kd.update(ha2);
    kd.finalize().into()
}

fn md5_update_plain(h: &mut Md5, s: &[u8]) {
    h.update(s);
}

/// Checks the parameters this server supports and returns the qop parts to
/// hash, if any.
fn supported<'r>(resp: &DigestResponse<'r>) -> Result<Option<QopParts<'r>>, AuthError> {
    // RFC 2617 §3.2.1: "If this is not present it is assumed to be MD5".
    if let Some(alg) = resp.algorithm {
        if !alg.eq_ignore_ascii_case(b"MD5") {
            return Err(AuthError::UnsupportedAlgorithm);
        }
    }
    let Some(qop) = resp.qop else {
        return Ok(None);
    };
    // We only ever offer qop="auth" (RFC 2617 §3.2.2: the client picks one
    // of the offered values).
    if !qop.eq_ignore_ascii_case(b"auth") {
        return Err(AuthError::UnsupportedQop);
    }
    let nc = resp.nc.ok_or(AuthError::MissingNc)?;
    let cnonce = resp.cnonce.ok_or(AuthError::MissingCnonce)?;
    if parse_nc(nc).is_none() {
        return Err(AuthError::BadNc);
    }
    Ok(Some(QopParts { nc, cnonce, qop }))
}

/// The response (32 lowercase hex digits) a client knowing `ha1` would have
/// sent with these parameters and `method`. For tests and diagnostics;
/// [`verify`] is the server's check. Unsupported algorithm/qop are hashed as
/// if they were MD5/auth.
pub fn expected_response(resp: &DigestResponse<'_>, method: &[u8], ha1: &Ha1) -> [u8; 32] {
    let qop = match (resp.qop, resp.nc, resp.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => Some(QopParts { nc, cnonce, qop }),
        _ => None,
    };
    hex16(&request_digest(
        ha1,
        resp.nonce,
        method,
        resp.uri,
        qop,
        md5_update_unquoted,
    ))
}

/// Client side: the `response` to send for a challenge, as 32 lowercase hex
/// digits. All values are plain (not escaped). With `qop = Some((nc,
/// cnonce))` the response is for `qop=auth` and the client must send
/// `qop=auth, nc=<format_nc(nc)>, cnonce="<cnonce>"`; with `None` it is the
/// RFC 2069 form.
pub fn client_response(
    ha1: &Ha1,
    nonce: &[u8],
    method: &[u8],
    uri: &[u8],
    qop: Option<(u32, &[u8])>,
) -> [u8; 32] {
    let nc_hex;
    let qop = match qop {
        Some((nc, cnonce)) => {
            nc_hex = format_nc(nc);
            Some(QopParts {
                nc: &nc_hex,
                cnonce,
                qop: b"auth",
            })
        }
        None => None,
    };
    hex16(&request_digest(
        ha1,
        nonce,
        method,
        uri,
        qop,
        md5_update_plain,
    ))
}

/// Whether `resp` is the right answer for `method` given `ha1`.
///
/// Only checks the digest: the caller also checks the nonce
/// ([`super::NonceSecret::check`]), the realm and, with qop, the nonce-count
/// ([`super::NonceCounts`]) — or uses [`super::Authenticator`], which does it all.
#[must_use]
pub fn verify(resp: &DigestResponse<'_>, method: &[u8], ha1: &Ha1) -> bool {
    verify_detailed(resp, method, ha1).is_ok()
}

/// As [`verify`], saying why a digest was refused.
pub fn verify_detailed(
    resp: &DigestResponse<'_>,
    method: &[u8],
    ha1: &Ha1,
) -> Result<(), AuthError> {
    let qop = supported(resp)?;
    // The client's own response; decoding it (not constant time) reveals
    // nothing it does not already know. Accepting either case is lenient:
    // RFC 2617 says 32LHEX.
    let mut got = [0u8; 16];
    if !hex_decode_into(resp.response, &mut got) {
        return Err(AuthError::BadResponse);
    }
    let want = request_digest(ha1, resp.nonce, method, resp.uri, qop, md5_update_unquoted);
    // Constant time, so the expected digest cannot be learned byte by byte.
    if ct_eq(&want, &got) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// An HA1 no client can know: random per process, from the std hasher's
/// OS-seeded keys. Verifying against it costs what a real verification costs.
///
/// Use it when the user is unknown, and discard the result — or call
/// [`verify_user`], which does exactly that.
pub fn dummy_ha1() -> Ha1 {
    static DUMMY: OnceLock<Ha1> = OnceLock::new();
    *DUMMY.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let keys = std::collections::hash_map::RandomState::new();
        let mut out = [0u8; 16];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let mut h = keys.build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        out
    })
}

/// Verifies a response for a user that may not exist (`ha1` as returned by
/// [`super::CredentialStore::lookup`]).
///
/// An unknown user is verified against [`dummy_ha1`] and then refused, so it
/// takes the same work and gets the same [`AuthError::Mismatch`] as a wrong
/// password (RFC 7616 §5.3; DESIGN.md: "the same answer for an unknown user
/// and a wrong password").
pub fn verify_user(
    resp: &DigestResponse<'_>,
    method: &[u8],
    ha1: Option<&Ha1>,
) -> Result<(), AuthError> {
    let dummy;
    let (ha1, known) = match ha1 {
        Some(h) => (h, true),
        None => {
            dummy = dummy_ha1();
            (&dummy, false)
        }
    };
    let result = verify_detailed(resp, method, ha1);
    match result {
        Ok(()) if !known => Err(AuthError::Mismatch),
        other => other,
    }
}
