//! The digest itself: parsed Authorization parameters and the response
//! computation of RFC 2617 / RFC 7616 (algorithm MD5 or SHA-256, qop absent or
//! `auth`), for the server (verify) and for clients (answer a challenge).
//!
//! The two algorithms differ only in the hash `H` (RFC 7616 §3.4.1–3.4.3:
//! same A1, A2 and KD, hex of 32 or 64 digits), so one generic computation
//! serves both. Everything is computed into stack buffers; nothing allocates.

use std::fmt;
use std::sync::OnceLock;

use md5::{Digest, Md5};
use sha2::Sha256;

use super::bytes::{ct_eq, hex16, hex_decode_into, hex_encode_into, update_unquoted};
use super::credentials::{Ha1, Ha1Key, Ha1Sha256};
use super::nonce_count::{format_nc, parse_nc};

/// A digest algorithm sipreg verifies (RFC 7616 §3.4.1 / §6.1 names; the
/// `-sess` variants are not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 2617; what every SIP device knows).
    Md5,
    /// `SHA-256` (RFC 7616, for SIP RFC 8760).
    Sha256,
}

impl Algorithm {
    /// Both, in the order offered by default: strongest first (RFC 8760 §2.4:
    /// the client takes the first one it supports).
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

    /// The token as written in `algorithm=` (RFC 7616 §6.1).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm=` value (case-insensitive, RFC 7616 §3.3: tokens).
    pub fn from_token(token: &[u8]) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| token.eq_ignore_ascii_case(a.as_str().as_bytes()))
    }

    /// Bytes of the hash output (and of H(A1)).
    pub const fn hash_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha256 => 32,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `response` value as lowercase hex on the stack: 32 digits for MD5, 64
/// for SHA-256.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResponseHex {
    buf: [u8; 64],
    len: usize,
}

impl ResponseHex {
    fn of(hash: &[u8]) -> Self {
        let mut r = ResponseHex {
            buf: [0; 64],
            len: hash.len() * 2,
        };
        hex_encode_into(hash, &mut r.buf[..r.len]);
        r
    }

    /// The hex digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsRef<[u8]> for ResponseHex {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::ops::Deref for ResponseHex {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for ResponseHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always ASCII hex by construction.
        write!(
            f,
            "ResponseHex({})",
            String::from_utf8_lossy(self.as_bytes())
        )
    }
}

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
    /// `response`: 32 (MD5) or 64 (SHA-256) hex digits.
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
    /// `algorithm` other than MD5 or SHA-256 (MD5-sess, SHA-512-256, ...),
    /// or one this server was not configured to accept.
    UnsupportedAlgorithm,
    /// `qop` other than `auth` (auth-int is not offered).
    UnsupportedQop,
    /// `nc` is not 8 hex digits.
    BadNc,
    /// `response` is not 32 (MD5) or 64 (SHA-256) hex digits.
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

impl AuthError {
    /// Whether this failure is a wrong answer to a challenge — the kind a
    /// password guesser produces — and so counts towards the brute-force
    /// guard ([`super::AuthGuard`]): a wrong digest (wrong password, unknown
    /// user), a nonce we never issued, a malformed or unconfigured answer.
    ///
    /// Not counted: missing parameters (a broken client, answered 400), and
    /// a replayed nonce-count, which only a client that computed a right
    /// digest can send.
    pub fn is_failed_guess(self) -> bool {
        matches!(
            self,
            AuthError::Mismatch
                | AuthError::InvalidNonce
                | AuthError::BadResponse
                | AuthError::UnsupportedAlgorithm
                | AuthError::UnsupportedQop
                | AuthError::BadNc
                | AuthError::RealmMismatch
        )
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

    /// The algorithm the client used: absent means MD5 (RFC 2617 §3.2.1,
    /// RFC 7616 §3.3); anything but MD5 or SHA-256 is
    /// [`AuthError::UnsupportedAlgorithm`].
    pub fn algorithm(&self) -> Result<Algorithm, AuthError> {
        match self.algorithm {
            None => Ok(Algorithm::Md5),
            Some(token) => Algorithm::from_token(token).ok_or(AuthError::UnsupportedAlgorithm),
        }
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

/// Longest hash output handled (SHA-256).
const MAX_HASH: usize = 32;

/// request-digest per RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1), in binary:
/// `KD(H(A1), unq(nonce) ":" nc ":" unq(cnonce) ":" qop ":" H(A2))` with qop,
/// `KD(H(A1), unq(nonce) ":" H(A2))` without, where `KD(s, d) = H(s ":" d)`,
/// `A2 = Method ":" digest-uri` (§3.4.3, qop absent or auth) and `H` is the
/// hex of `D` — MD5 or SHA-256. `ha1` is H(A1) in binary, as long as `D`'s
/// output.
///
/// `feed` absorbs the quoted values: [`update_unquoted`] for values straight
/// from a message, a plain update for values a client holds.
fn request_digest<D: Digest>(
    ha1: &[u8],
    nonce: &[u8],
    method: &[u8],
    uri: &[u8],
    qop: Option<QopParts<'_>>,
    feed: fn(&mut D, &[u8]),
) -> md5::digest::Output<D> {
    let n = <D as Digest>::output_size();
    debug_assert!(
        n <= MAX_HASH && ha1.len() == n,
        "H(A1) length {}",
        ha1.len()
    );
    let mut a2 = D::new();
    a2.update(method);
    a2.update(b":");
    feed(&mut a2, uri);
    let mut ha2 = [0u8; 2 * MAX_HASH];
    hex_encode_into(&a2.finalize(), &mut ha2[..2 * n]);

    let mut ha1_hex = [0u8; 2 * MAX_HASH];
    hex_encode_into(ha1, &mut ha1_hex[..2 * n]);
    let mut kd = D::new();
    kd.update(&ha1_hex[..2 * n]);
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
    kd.update(&ha2[..2 * n]);
    kd.finalize()
}

fn update_plain<D: Digest>(h: &mut D, s: &[u8]) {
    h.update(s);
}

/// Checks the qop parameters this server supports and returns the parts to
/// hash, if any. (The algorithm is checked by the caller against the key.)
fn supported_qop<'r>(resp: &DigestResponse<'r>) -> Result<Option<QopParts<'r>>, AuthError> {
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
/// sent with these parameters and `method`, hashed with MD5. For tests and
/// diagnostics; [`verify`] is the server's check. Unsupported algorithm/qop
/// are hashed as if they were MD5/auth.
pub fn expected_response(resp: &DigestResponse<'_>, method: &[u8], ha1: &Ha1) -> [u8; 32] {
    let qop = match (resp.qop, resp.nc, resp.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => Some(QopParts { nc, cnonce, qop }),
        _ => None,
    };
    hex16(&request_digest::<Md5>(ha1, resp.nonce, method, resp.uri, qop, update_unquoted).into())
}

/// Client side, MD5: the `response` to send for a challenge, as 32 lowercase
/// hex digits. All values are plain (not escaped). With `qop = Some((nc,
/// cnonce))` the response is for `qop=auth` and the client must send
/// `qop=auth, nc=<format_nc(nc)>, cnonce="<cnonce>"`; with `None` it is the
/// RFC 2069 form. [`client_response_key`] does the same for either algorithm.
pub fn client_response(
    ha1: &Ha1,
    nonce: &[u8],
    method: &[u8],
    uri: &[u8],
    qop: Option<(u32, &[u8])>,
) -> [u8; 32] {
    let r = client_response_key(&Ha1Key::Md5(*ha1), nonce, method, uri, qop);
    let mut out = [0u8; 32];
    out.copy_from_slice(r.as_bytes());
    out
}

/// Client side, either algorithm: the `response` for a challenge with
/// `algorithm=key.algorithm()`; the client sends that algorithm token too.
/// Arguments as for [`client_response`].
pub fn client_response_key(
    key: &Ha1Key,
    nonce: &[u8],
    method: &[u8],
    uri: &[u8],
    qop: Option<(u32, &[u8])>,
) -> ResponseHex {
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
    match key {
        Ha1Key::Md5(h) => ResponseHex::of(&request_digest::<Md5>(
            h,
            nonce,
            method,
            uri,
            qop,
            update_plain,
        )),
        Ha1Key::Sha256(h) => ResponseHex::of(&request_digest::<Sha256>(
            h,
            nonce,
            method,
            uri,
            qop,
            update_plain,
        )),
    }
}

/// Whether `resp` is the right MD5 answer for `method` given `ha1`.
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
    verify_key(resp, method, &Ha1Key::Md5(*ha1))
}

/// As [`verify_detailed`] for either algorithm: the response's `algorithm`
/// must be the key's (a SHA-256 answer checked against an MD5 HA1 is
/// [`AuthError::UnsupportedAlgorithm`]).
pub fn verify_key(resp: &DigestResponse<'_>, method: &[u8], key: &Ha1Key) -> Result<(), AuthError> {
    if resp.algorithm()? != key.algorithm() {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    let qop = supported_qop(resp)?;
    // The client's own response; decoding it (not constant time) reveals
    // nothing it does not already know. Accepting either case is lenient:
    // RFC 7616 says lowercase hex.
    let mut got = [0u8; MAX_HASH];
    let got = &mut got[..key.algorithm().hash_len()];
    if !hex_decode_into(resp.response, got) {
        return Err(AuthError::BadResponse);
    }
    // Constant time, so the expected digest cannot be learned byte by byte.
    let same = match key {
        Ha1Key::Md5(h) => ct_eq(
            &request_digest::<Md5>(h, resp.nonce, method, resp.uri, qop, update_unquoted),
            got,
        ),
        Ha1Key::Sha256(h) => ct_eq(
            &request_digest::<Sha256>(h, resp.nonce, method, resp.uri, qop, update_unquoted),
            got,
        ),
    };
    if same {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// An MD5 HA1 no client can know: random per process, from the std hasher's
/// OS-seeded keys. Verifying against it costs what a real verification costs.
///
/// Use it when the user is unknown, and discard the result — or call
/// [`verify_user`], which does exactly that.
pub fn dummy_ha1() -> Ha1 {
    let mut out = [0u8; 16];
    out.copy_from_slice(&dummy_bytes()[..16]);
    out
}

/// [`dummy_ha1`] for either algorithm.
pub fn dummy_key(algorithm: Algorithm) -> Ha1Key {
    match algorithm {
        Algorithm::Md5 => Ha1Key::Md5(dummy_ha1()),
        Algorithm::Sha256 => Ha1Key::Sha256(*dummy_bytes()),
    }
}

fn dummy_bytes() -> &'static Ha1Sha256 {
    static DUMMY: OnceLock<Ha1Sha256> = OnceLock::new();
    DUMMY.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let keys = std::collections::hash_map::RandomState::new();
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let mut h = keys.build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        out
    })
}

/// Verifies an MD5 response for a user that may not exist (`ha1` as
/// returned by [`super::CredentialStore::lookup`]).
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
    let key = ha1.map(|h| Ha1Key::Md5(*h));
    verify_user_key(resp, method, Algorithm::Md5, key.as_ref())
}

/// As [`verify_user`] for either algorithm: `key` is the user's H(A1) for
/// `algorithm` ([`super::CredentialStore::lookup_key`]); `None` — unknown
/// user, or a user whose credentials lack this algorithm — is verified
/// against [`dummy_key`] and refused.
pub fn verify_user_key(
    resp: &DigestResponse<'_>,
    method: &[u8],
    algorithm: Algorithm,
    key: Option<&Ha1Key>,
) -> Result<(), AuthError> {
    debug_assert!(
        key.is_none_or(|k| k.algorithm() == algorithm),
        "key for another algorithm"
    );
    let dummy;
    let (key, known) = match key {
        Some(k) => (k, true),
        None => {
            dummy = dummy_key(algorithm);
            (&dummy, false)
        }
    };
    let result = verify_key(resp, method, key);
    match result {
        Ok(()) if !known => Err(AuthError::Mismatch),
        other => other,
    }
}
