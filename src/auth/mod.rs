//! Digest authentication (RFC 2617, with RFC 7616's MD5 semantics), sans-IO.
//!
//! What a REGISTER needs to be authenticated, without sockets, clocks or
//! per-challenge state:
//!
//! - [`NonceSecret`] issues stateless nonces (issue time + MAC) that any
//!   worker can check, and the run's `opaque`;
//! - [`CredentialStore`] maps a user name to HA1, from an htdigest file and/or
//!   one shared password;
//! - [`DigestResponse`] is the Authorization header's parameters, borrowed
//!   from the message as the scanner found them; [`verify`] checks the digest
//!   in constant time with no allocation;
//! - [`NonceCounts`] remembers the highest `nc` per nonce for `qop=auth`
//!   replay protection, in bounded memory;
//! - [`write_challenge`] writes the 401/407 header;
//! - [`Authenticator`] ties them together in the order that keeps an unknown
//!   user indistinguishable from a wrong password and sends `stale=true` only
//!   for a right digest with an expired nonce.
//!
//! ```
//! use sipreg::auth::{Authenticator, CredentialStore, DigestResponse, NonceCounts,
//!                    NonceSecret, Verdict, client_response, ha1};
//!
//! let store = CredentialStore::new(b"hik").with_password(b"12345");
//! let secret = NonceSecret::from_bytes([1; 16]); // NonceSecret::random() in main
//! let counts = NonceCounts::new(300);
//! let auth = Authenticator { store: &store, secret: &secret, counts: &counts, ttl_secs: 300 };
//!
//! let now = 1_700_000_000;
//! let mut challenge = Vec::new();
//! let nonce = auth.challenge(&mut challenge, "WWW-Authenticate", now, false);
//!
//! // The device answers (what a client or the load generator computes):
//! let uri = b"sip:130909115229300920@10.64.49.44:7100";
//! let response = client_response(&ha1(b"admin", b"hik", b"12345"), nonce.as_bytes(),
//!                                b"REGISTER", uri, None);
//! let params: [(&[u8], &[u8]); 5] = [(b"username", b"admin"), (b"realm", b"hik"),
//!     (b"nonce", nonce.as_bytes()), (b"uri", uri), (b"response", &response)];
//! let resp = DigestResponse::from_params(params).expect("all parameters present");
//! assert_eq!(auth.authenticate(&resp, b"REGISTER", now + 1), Verdict::Authorized);
//! ```

mod bytes;
mod challenge;
mod credentials;
mod digest;
mod nonce;
mod nonce_count;

#[cfg(test)]
mod tests;

pub use challenge::write_challenge;
pub use credentials::{ha1, CredentialStore, Ha1, LineError, LoadError, MAX_ESCAPED_USERNAME};
pub use digest::{
    client_response, dummy_ha1, expected_response, verify, verify_detailed, verify_user, AuthError,
    DigestResponse,
};
pub use nonce::{Nonce, NonceSecret, NonceStatus, MAX_FUTURE_SKEW_SECS, NONCE_LEN, SECRET_LEN};
pub use nonce_count::{
    format_nc, parse_nc, NonceCounts, MAX_TRACKED_NONCES, PRUNE_INTERVAL_SECS, SHARDS,
};

/// Outcome of [`Authenticator::authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Accept the request.
    Authorized,
    /// The digest was right but the nonce expired: challenge again with
    /// `stale=true` (RFC 2617 §3.2.1).
    Stale,
    /// Challenge again (without `stale`); the reason is for metrics only and
    /// must not change the answer.
    Rejected(AuthError),
}

/// The shared, read-only pieces a worker needs to authenticate requests.
/// Cheap to build per request from `Arc`s held by the worker.
#[derive(Debug, Clone, Copy)]
pub struct Authenticator<'s> {
    /// HA1 per user, and the realm.
    pub store: &'s CredentialStore,
    /// Key behind nonces and opaque.
    pub secret: &'s NonceSecret,
    /// qop=auth nonce-counts.
    pub counts: &'s NonceCounts,
    /// Nonce lifetime (`--nonce-ttl`); use the same value for `counts`.
    pub ttl_secs: u64,
}

impl Authenticator<'_> {
    /// Decides on a request's digest at `now_secs`.
    ///
    /// Order matters: checks that reveal nothing about the user (realm,
    /// nonce MAC) come first; then the digest is verified the same way for
    /// known and unknown users ([`verify_user`]); only a right digest can
    /// earn `Stale` (RFC 2617 §3.2.1: stale means the digest was valid) or
    /// touch the nonce-count table.
    pub fn authenticate(&self, resp: &DigestResponse<'_>, method: &[u8], now_secs: u64) -> Verdict {
        // RFC 2617 §3.2.2: the realm is the one from our challenge.
        let mut buf = [0u8; 256];
        if bytes::unquote_into(resp.realm, &mut buf) != Some(self.store.realm()) {
            return Verdict::Rejected(AuthError::RealmMismatch);
        }
        let status = self.secret.check(resp.nonce, now_secs, self.ttl_secs);
        if status == NonceStatus::Invalid {
            return Verdict::Rejected(AuthError::InvalidNonce);
        }
        let ha1 = self.store.lookup(resp.username);
        if let Err(e) = verify_user(resp, method, ha1.as_ref()) {
            return Verdict::Rejected(e);
        }
        if status == NonceStatus::Stale {
            return Verdict::Stale;
        }
        if resp.qop.is_some() {
            // verify_user accepted the qop, so nc is 8 hex digits.
            let Some(nc) = resp.nc_value() else {
                return Verdict::Rejected(AuthError::BadNc);
            };
            // RFC 7616 §3.4: a repeated nc is a replay.
            if !self.counts.check_and_update(resp.nonce, nc, now_secs) {
                return Verdict::Rejected(AuthError::Replay);
            }
        }
        Verdict::Authorized
    }

    /// Issues a nonce at `now_secs` and appends the challenge header for it
    /// (see [`write_challenge`]); returns the nonce.
    pub fn challenge(
        &self,
        out: &mut Vec<u8>,
        header_name: &str,
        now_secs: u64,
        stale: bool,
    ) -> Nonce {
        let nonce = self.secret.issue(now_secs);
        write_challenge(
            out,
            header_name,
            self.store.realm(),
            nonce.as_bytes(),
            &self.secret.opaque(),
            stale,
        );
        nonce
    }
}
