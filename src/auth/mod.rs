//! Digest authentication (RFC 2617, RFC 7616 with MD5 and SHA-256, RFC 8760
//! for SIP), sans-IO.
//!
//! What a REGISTER needs to be authenticated, without sockets, clocks or
//! per-challenge state:
//!
//! - [`NonceSecret`] issues stateless nonces (issue time + MAC) that any
//!   worker can check, and the run's `opaque`;
//! - [`CredentialStore`] maps a user name to HA1 for each [`Algorithm`], from
//!   a credentials file and/or one shared password, and says which algorithms
//!   are offered;
//! - [`DigestResponse`] is the Authorization header's parameters, borrowed
//!   from the message as the scanner found them; [`verify_key`] checks the
//!   digest in constant time with no allocation;
//! - [`NonceCounts`] remembers the highest `nc` per nonce for `qop=auth`
//!   replay protection — or, with one-time nonces, each nonce's single use —
//!   in bounded memory;
//! - [`AuthGuard`] counts failed answers per source and per user and locks
//!   guessers out, in bounded memory;
//! - [`write_challenge`] writes one 401/407 header;
//! - [`Authenticator`] ties them together in the order that keeps an unknown
//!   user indistinguishable from a wrong password and sends `stale=true` only
//!   for a right digest whose nonce can no longer be used.
//!
//! ```
//! use sipreg::auth::{client_response_key, Algorithm, Authenticator, CredentialStore,
//!                    DigestResponse, Ha1Key, NonceCounts, NonceSecret, Verdict};
//!
//! let store = CredentialStore::new(b"hik").with_password(b"12345");
//! let secret = NonceSecret::from_bytes([1; 16]); // NonceSecret::random() in main
//! let counts = NonceCounts::new(300);
//! let auth = Authenticator { store: &store, secret: &secret, counts: &counts, ttl_secs: 300 };
//!
//! let now = 1_700_000_000;
//! let mut challenge = Vec::new();
//! // One WWW-Authenticate per algorithm offered, SHA-256 first, one nonce.
//! let nonce = auth.challenge(&mut challenge, "WWW-Authenticate", now, false);
//!
//! // The device answers the first challenge it supports (RFC 8760 §2.4):
//! let uri = b"sip:130909115229300920@10.64.49.44:7100";
//! let key = Ha1Key::derive(Algorithm::Sha256, b"admin", b"hik", b"12345");
//! let response = client_response_key(&key, nonce.as_bytes(), b"REGISTER", uri, None);
//! let params: [(&[u8], &[u8]); 6] = [(b"username", b"admin"), (b"realm", b"hik"),
//!     (b"nonce", nonce.as_bytes()), (b"uri", uri), (b"response", &response),
//!     (b"algorithm", b"SHA-256")];
//! let resp = DigestResponse::from_params(params).expect("all parameters present");
//! assert_eq!(auth.authenticate(&resp, b"REGISTER", now + 1), Verdict::Authorized);
//! ```

mod bytes;
mod challenge;
mod credentials;
mod digest;
mod guard;
mod nonce;
mod nonce_count;

#[cfg(test)]
mod tests;

pub use challenge::write_challenge;
pub use credentials::{
    ha1, ha1_sha256, CredentialStore, Ha1, Ha1Key, Ha1Sha256, LineError, LoadError,
    MAX_ESCAPED_USERNAME,
};
pub use digest::{
    client_response, client_response_key, dummy_ha1, dummy_key, expected_response, verify,
    verify_detailed, verify_key, verify_user, verify_user_key, Algorithm, AuthError,
    DigestResponse, ResponseHex,
};
pub use guard::{AuthGuard, GuardConfig, Locked, NewLockouts, SLOTS as GUARD_SLOTS};
pub use nonce::{Nonce, NonceSecret, NonceStatus, MAX_FUTURE_SKEW_SECS, NONCE_LEN, SECRET_LEN};
pub use nonce_count::{
    format_nc, parse_nc, NonceCounts, NonceUse, MAX_TRACKED_NONCES, PRUNE_INTERVAL_SECS, SHARDS,
};

/// Outcome of [`Authenticator::authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Accept the request.
    Authorized,
    /// The digest was right but its nonce can no longer be used — expired,
    /// issued before a restart, or (one-time nonces) already used: challenge
    /// again with `stale=true` (RFC 7616 §3.3).
    Stale,
    /// Challenge again (without `stale`); the reason is for metrics and the
    /// brute-force guard only and must not change the answer.
    Rejected(AuthError),
}

/// The shared, read-only pieces a worker needs to authenticate requests.
/// Cheap to build per request from `Arc`s held by the worker. The algorithms
/// offered are the store's ([`CredentialStore::with_algorithms`]), one-time
/// nonces the counts' ([`NonceCounts::with_one_time`]).
#[derive(Debug, Clone, Copy)]
pub struct Authenticator<'s> {
    /// HA1 per user and algorithm, the realm, the algorithms offered.
    pub store: &'s CredentialStore,
    /// Key behind nonces and opaque.
    pub secret: &'s NonceSecret,
    /// qop=auth nonce-counts, or one-time nonce uses.
    pub counts: &'s NonceCounts,
    /// Nonce lifetime (`--nonce-ttl`); use the same value for `counts`.
    pub ttl_secs: u64,
}

impl Authenticator<'_> {
    /// Decides on a request's digest at `now_secs`.
    ///
    /// Order matters: checks that reveal nothing about the user (realm,
    /// algorithm) come first; then the digest is verified the same way for
    /// known and unknown users ([`verify_user_key`]); only a right digest can
    /// earn `Stale` (RFC 2617 §3.2.1: stale means the digest was valid) or
    /// touch the nonce-count table.
    pub fn authenticate(&self, resp: &DigestResponse<'_>, method: &[u8], now_secs: u64) -> Verdict {
        // RFC 2617 §3.2.2: the realm is the one from our challenge.
        let mut buf = [0u8; 256];
        if bytes::unquote_into(resp.realm, &mut buf) != Some(self.store.realm()) {
            return Verdict::Rejected(AuthError::RealmMismatch);
        }
        // RFC 7616 §3.4: the algorithm is one we offered; absent means MD5.
        let algorithm = match resp.algorithm() {
            Ok(a) if self.store.offers(a) => a,
            _ => return Verdict::Rejected(AuthError::UnsupportedAlgorithm),
        };
        let status = self.secret.check(resp.nonce, now_secs, self.ttl_secs);
        let key = self.store.lookup_key(resp.username, algorithm);
        if let Err(e) = verify_user_key(resp, method, algorithm, key.as_ref()) {
            // A nonce we never issued is reported as such, right digest or not.
            return Verdict::Rejected(match status {
                NonceStatus::Invalid => AuthError::InvalidNonce,
                _ => e,
            });
        }
        match status {
            NonceStatus::Fresh => {}
            // RFC 2617 §3.2.1: stale=TRUE "if it receives a request for which
            // the nonce is invalid but with a valid digest for that nonce" —
            // expired, or issued by this server before a restart (a new
            // secret): the device knows the password and only needs a new
            // nonce, so it must not count as a failure.
            NonceStatus::Stale | NonceStatus::Invalid => return Verdict::Stale,
        }
        let nc = match resp.qop {
            // verify_user_key accepted the qop, so nc is 8 hex digits.
            Some(_) => match resp.nc_value() {
                Some(nc) => Some(nc),
                None => return Verdict::Rejected(AuthError::BadNc),
            },
            None => None,
        };
        match self.counts.record_use(resp.nonce, nc, now_secs) {
            NonceUse::Accepted => Verdict::Authorized,
            // One-time nonces: the digest is right, the nonce used up.
            NonceUse::Repeated if self.counts.one_time() => Verdict::Stale,
            // The table is full (a mass re-registration): the digest was
            // right, so the device retries with a fresh nonce, uncounted.
            NonceUse::Full => Verdict::Stale,
            // RFC 7616 §3.4: a repeated nc is a replay.
            NonceUse::Repeated | NonceUse::Refused => Verdict::Rejected(AuthError::Replay),
        }
    }

    /// Issues a nonce at `now_secs` and appends one challenge header for it
    /// per algorithm offered, in the store's order (see [`write_challenge`]);
    /// returns the nonce. All the headers share the nonce: a client answers
    /// one of them (RFC 7616 §3.7), and a client that reads the nonce from
    /// the first header but knows only MD5 still gets a valid answer.
    pub fn challenge(
        &self,
        out: &mut Vec<u8>,
        header_name: &str,
        now_secs: u64,
        stale: bool,
    ) -> Nonce {
        let nonce = self.secret.issue(now_secs);
        let opaque = self.secret.opaque();
        for &algorithm in self.store.algorithms() {
            write_challenge(
                out,
                header_name,
                self.store.realm(),
                nonce.as_bytes(),
                &opaque,
                algorithm,
                stale,
            );
        }
        nonce
    }
}
