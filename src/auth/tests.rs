//! End-to-end digest tests on real captures and RFC worked examples.

use std::path::PathBuf;

use super::*;

/// Reads a capture from ../shared/fixtures (beside the repository).
fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "shared", "fixtures", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Test-only stand-in for the scanner: the `(name, value)` pairs of the
/// message's Authorization header, values without their quotes. Good enough
/// for the captures (no commas or escapes inside values).
fn auth_params(msg: &[u8]) -> Vec<(&[u8], &[u8])> {
    let line = msg
        .split(|&b| b == b'\n')
        .find(|l| l.len() > 14 && l[..14].eq_ignore_ascii_case(b"Authorization:"))
        .expect("message has an Authorization header");
    let value = line[14..].trim_ascii();
    let params = value.strip_prefix(b"Digest").expect("Digest scheme");
    params
        .split(|&b| b == b',')
        .map(|p| {
            let p = p.trim_ascii();
            let eq = p.iter().position(|&b| b == b'=').expect("name=value");
            let v = p[eq + 1..].trim_ascii();
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            (p[..eq].trim_ascii(), v)
        })
        .collect()
}

fn parse(msg: &[u8]) -> DigestResponse<'_> {
    DigestResponse::from_params(auth_params(msg)).expect("complete digest")
}

const HIK: [&str; 2] = [
    "hikvision-gb28181/03-register-auth.sip",
    "hikvision-gb28181/07-unregister-auth.sip",
];

#[test]
fn hikvision_captures_verify_with_the_right_password() {
    for name in HIK {
        let msg = fixture(name);
        let resp = parse(&msg);
        assert_eq!(resp.username, b"admin");
        assert_eq!(resp.realm, b"hik");
        assert_eq!(resp.qop, None);
        let good = ha1(b"admin", b"hik", b"12345");
        assert!(verify(&resp, b"REGISTER", &good), "{name}");
        assert_eq!(
            &expected_response(&resp, b"REGISTER", &good)[..],
            resp.response
        );
        // The client-side helper reproduces what the camera sent.
        let client = client_response(&good, resp.nonce, b"REGISTER", resp.uri, None);
        assert_eq!(&client[..], resp.response, "{name}");
    }
}

#[test]
fn hikvision_captures_fail_with_a_wrong_password_or_method() {
    for name in HIK {
        let msg = fixture(name);
        let resp = parse(&msg);
        let wrong = ha1(b"admin", b"hik", b"12346");
        assert_eq!(
            verify_detailed(&resp, b"REGISTER", &wrong),
            Err(AuthError::Mismatch),
            "{name}"
        );
        let good = ha1(b"admin", b"hik", b"12345");
        // HA2 covers the method (RFC 2617 §3.2.2.3).
        assert!(!verify(&resp, b"INVITE", &good), "{name}");
        assert!(!verify(&resp, b"register", &good), "{name}");
        // Same user, other realm: a different HA1.
        assert!(!verify(&resp, b"REGISTER", &ha1(b"admin", b"hi", b"12345")));
    }
}

#[test]
fn hikvision_response_in_uppercase_hex_still_verifies() {
    let msg = fixture(HIK[0]);
    let mut resp = parse(&msg);
    let upper = resp.response.to_ascii_uppercase();
    resp.response = &upper;
    assert!(verify(&resp, b"REGISTER", &ha1(b"admin", b"hik", b"12345")));
}

#[test]
fn hikvision_through_a_credential_store() {
    let msg = fixture(HIK[0]);
    let resp = parse(&msg);
    // GB28181 style: one shared password for every device.
    let shared = CredentialStore::new(b"hik").with_password(b"12345");
    let ha1_shared = shared.lookup(resp.username).expect("shared password");
    assert!(verify(&resp, b"REGISTER", &ha1_shared));
    // htdigest style: admin listed with its HA1, which is used as stored.
    let line = format!(
        "admin:hik:{}\n",
        String::from_utf8(bytes::hex16(&ha1(b"admin", b"hik", b"12345")).to_vec()).expect("ascii")
    );
    let file =
        CredentialStore::from_htdigest(line.as_bytes(), "users".as_ref(), b"hik").expect("loads");
    assert_eq!(
        verify_user(&resp, b"REGISTER", file.lookup(resp.username).as_ref()),
        Ok(())
    );
    // Wrong shared password.
    let wrong = CredentialStore::new(b"hik").with_password(b"12346");
    assert_eq!(
        verify_user(&resp, b"REGISTER", wrong.lookup(resp.username).as_ref()),
        Err(AuthError::Mismatch)
    );
}

#[test]
fn other_captures_do_not_verify_with_guessed_passwords() {
    let cases = [
        (
            "linphone-asterisk/03-register-auth.sip",
            b"REGISTER".as_slice(),
        ),
        ("eyebeam-asterisk/01-register-auth.sip", b"REGISTER"),
        ("eyebeam-asterisk/03-register-auth.sip", b"REGISTER"),
        ("eyebeam-asterisk/06-invite-auth.sip", b"INVITE"),
    ];
    let guesses: [&[u8]; 6] = [b"", b"12345", b"password", b"1234", b"admin", b"secret"];
    for (name, method) in cases {
        let msg = fixture(name);
        let resp = parse(&msg);
        assert_eq!(resp.algorithm, Some(&b"MD5"[..]));
        for pw in guesses {
            let h = ha1(resp.username, resp.realm, pw);
            assert_eq!(
                verify_detailed(&resp, method, &h),
                Err(AuthError::Mismatch),
                "{name} with {:?}",
                String::from_utf8_lossy(pw)
            );
        }
        // The store's answer for these users is the same as a wrong password.
        let store = CredentialStore::new(resp.realm);
        assert_eq!(
            verify_user(&resp, method, store.lookup(resp.username).as_ref()),
            Err(AuthError::Mismatch)
        );
    }
}

/// RFC 2617 §3.5 — the worked example (qop=auth).
fn rfc2617_example() -> DigestResponse<'static> {
    let params: [(&[u8], &[u8]); 9] = [
        (b"username", b"Mufasa"),
        (b"realm", b"testrealm@host.com"),
        (b"nonce", b"dcd98b7102dd2f0e8b11d0f600bfb0c093"),
        (b"uri", b"/dir/index.html"),
        (b"qop", b"auth"),
        (b"nc", b"00000001"),
        (b"cnonce", b"0a4f113b"),
        (b"response", b"6629fae49393a05397450978507c4ef1"),
        (b"opaque", b"5ccc069c403ebaf9f0171e9517f40e41"),
    ];
    DigestResponse::from_params(params).expect("complete")
}

#[test]
fn rfc_2617_worked_example_verifies() {
    let resp = rfc2617_example();
    let h = ha1(b"Mufasa", b"testrealm@host.com", b"Circle Of Life");
    assert!(verify(&resp, b"GET", &h));
    assert_eq!(
        &client_response(
            &h,
            resp.nonce,
            b"GET",
            resp.uri,
            Some((1, b"0a4f113b".as_slice()))
        ),
        b"6629fae49393a05397450978507c4ef1"
    );
    assert!(!verify(
        &resp,
        b"GET",
        &ha1(b"Mufasa", b"testrealm@host.com", b"Circle of Life")
    ));
    // Each qop field is covered by the digest.
    for (field, value) in [("nc", &b"00000002"[..]), ("cnonce", b"0a4f113c")] {
        let mut r = resp;
        match field {
            "nc" => r.nc = Some(value),
            _ => r.cnonce = Some(value),
        }
        assert!(!verify(&r, b"GET", &h), "{field}");
    }
}

#[test]
fn rfc_7616_md5_example_verifies() {
    // RFC 7616 §3.9.1, the MD5 response.
    let params: [(&[u8], &[u8]); 10] = [
        (b"username", b"Mufasa"),
        (b"realm", b"http-auth@example.org"),
        (b"uri", b"/dir/index.html"),
        (b"algorithm", b"MD5"),
        (b"nonce", b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"),
        (b"nc", b"00000001"),
        (b"cnonce", b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"),
        (b"qop", b"auth"),
        (b"response", b"8ca523f5e9506fed4657c9700eebdbec"),
        (b"opaque", b"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"),
    ];
    let resp = DigestResponse::from_params(params).expect("complete");
    let h = ha1(b"Mufasa", b"http-auth@example.org", b"Circle of Life");
    assert_eq!(verify_detailed(&resp, b"GET", &h), Ok(()));
}

#[test]
fn parameter_names_are_case_insensitive_and_extensions_ignored() {
    let params: [(&[u8], &[u8]); 7] = [
        (b"UserName", b"u"),
        (b"REALM", b"r"),
        (b"Nonce", b"n"),
        (b"URI", b"sip:x"),
        (b"Response", b"00000000000000000000000000000000"),
        (b"x-extension-parameter", b"whatever"),
        (b"Algorithm", b"md5"),
    ];
    let resp = DigestResponse::from_params(params).expect("complete");
    assert_eq!(resp.username, b"u");
    assert_eq!(resp.uri, b"sip:x");
    assert_eq!(resp.algorithm, Some(&b"md5"[..]));
    assert_eq!(resp.qop, None);
}

#[test]
fn missing_and_duplicate_parameters_are_typed_errors() {
    let full: [(&[u8], &[u8]); 5] = [
        (b"username", b"u"),
        (b"realm", b"r"),
        (b"nonce", b"n"),
        (b"uri", b"sip:x"),
        (b"response", b"00"),
    ];
    let expected = [
        AuthError::MissingUsername,
        AuthError::MissingRealm,
        AuthError::MissingNonce,
        AuthError::MissingUri,
        AuthError::MissingResponse,
    ];
    for (skip, err) in expected.into_iter().enumerate() {
        let params = full
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != skip)
            .map(|(_, p)| *p);
        assert_eq!(DigestResponse::from_params(params), Err(err));
    }
    let mut dup = full.to_vec();
    dup.push((b"Realm", b"other"));
    assert_eq!(
        DigestResponse::from_params(dup),
        Err(AuthError::DuplicateParam)
    );
    let mut qop = full.to_vec();
    qop.push((b"qop", b"auth"));
    assert_eq!(
        DigestResponse::from_params(qop.clone()),
        Err(AuthError::MissingNc)
    );
    qop.push((b"nc", b"00000001"));
    assert_eq!(
        DigestResponse::from_params(qop.clone()),
        Err(AuthError::MissingCnonce)
    );
    qop.push((b"cnonce", b"c"));
    assert!(DigestResponse::from_params(qop).is_ok());
}

#[test]
fn unsupported_algorithm_qop_and_malformed_fields_are_rejected() {
    let h = ha1(b"Mufasa", b"testrealm@host.com", b"Circle Of Life");
    let base = rfc2617_example();
    for (alg, ok) in [
        (&b"MD5"[..], true),
        (b"md5", true),
        (b"MD5-sess", false),
        (b"SHA-256", false),
    ] {
        let r = DigestResponse {
            algorithm: Some(alg),
            ..base
        };
        let want = if ok {
            Ok(())
        } else {
            Err(AuthError::UnsupportedAlgorithm)
        };
        assert_eq!(verify_detailed(&r, b"GET", &h), want, "{alg:?}");
    }
    let r = DigestResponse {
        qop: Some(b"auth-int"),
        ..base
    };
    assert_eq!(
        verify_detailed(&r, b"GET", &h),
        Err(AuthError::UnsupportedQop)
    );
    let r = DigestResponse {
        nc: Some(b"1"),
        ..base
    };
    assert_eq!(verify_detailed(&r, b"GET", &h), Err(AuthError::BadNc));
    let r = DigestResponse {
        response: b"6629fae49393a05397450978507c4ef",
        ..base
    };
    assert_eq!(verify_detailed(&r, b"GET", &h), Err(AuthError::BadResponse));
    let r = DigestResponse {
        response: b"6629fae49393a05397450978507c4efz",
        ..base
    };
    assert_eq!(verify_detailed(&r, b"GET", &h), Err(AuthError::BadResponse));
}

#[test]
fn escaped_values_are_hashed_unquoted() {
    // A user name with a quote: the client hashes `a"b`, the header carries `a\"b`.
    let h = ha1(b"a\"b", b"r", b"pw");
    let response = client_response(&h, b"n", b"REGISTER", b"sip:x", None);
    let params: [(&[u8], &[u8]); 5] = [
        (b"username", b"a\\\"b"),
        (b"realm", b"r"),
        (b"nonce", b"n"),
        (b"uri", b"sip:x"),
        (b"response", &response),
    ];
    let resp = DigestResponse::from_params(params).expect("complete");
    let store = CredentialStore::new(b"r").with_password(b"pw");
    assert_eq!(
        verify_user(&resp, b"REGISTER", store.lookup(resp.username).as_ref()),
        Ok(())
    );
}

#[test]
fn unknown_user_cannot_match_the_dummy() {
    // Even a response computed with the dummy HA1 itself is refused.
    let dummy = dummy_ha1();
    assert_eq!(dummy, dummy_ha1(), "fixed for the process");
    let response = client_response(&dummy, b"n", b"REGISTER", b"sip:x", None);
    let params: [(&[u8], &[u8]); 5] = [
        (b"username", b"nobody"),
        (b"realm", b"r"),
        (b"nonce", b"n"),
        (b"uri", b"sip:x"),
        (b"response", &response),
    ];
    let resp = DigestResponse::from_params(params).expect("complete");
    assert!(verify(&resp, b"REGISTER", &dummy));
    assert_eq!(
        verify_user(&resp, b"REGISTER", None),
        Err(AuthError::Mismatch)
    );
}

// ---- Authenticator: the whole flow ----

const NOW: u64 = 1_700_000_000;
const TTL: u64 = 300;
const URI: &[u8] = b"sip:130909115229300920@10.64.49.44:7100";

struct Server {
    store: CredentialStore,
    secret: NonceSecret,
    counts: NonceCounts,
}

impl Server {
    fn new() -> Self {
        let line = format!(
            "alice:hik:{}\n",
            String::from_utf8(bytes::hex16(&ha1(b"alice", b"hik", b"wonderland")).to_vec())
                .expect("ascii")
        );
        Server {
            store: CredentialStore::from_htdigest(line.as_bytes(), "users".as_ref(), b"hik")
                .expect("loads")
                .with_password(b"12345"),
            secret: NonceSecret::from_bytes([9; 16]),
            counts: NonceCounts::new(TTL),
        }
    }

    fn auth(&self) -> Authenticator<'_> {
        Authenticator {
            store: &self.store,
            secret: &self.secret,
            counts: &self.counts,
            ttl_secs: TTL,
        }
    }
}

/// Owned Authorization parameters a test client sends.
struct Answer {
    user: Vec<u8>,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    response: [u8; 32],
    qop: Option<([u8; 8], Vec<u8>)>,
}

impl Answer {
    fn new(user: &[u8], password: &[u8], nonce: &[u8], qop: Option<(u32, &[u8])>) -> Self {
        let h = ha1(user, b"hik", password);
        Answer {
            user: user.to_vec(),
            realm: b"hik".to_vec(),
            nonce: nonce.to_vec(),
            response: client_response(&h, nonce, b"REGISTER", URI, qop),
            qop: qop.map(|(nc, cnonce)| (format_nc(nc), cnonce.to_vec())),
        }
    }

    fn parsed(&self) -> DigestResponse<'_> {
        let mut params: Vec<(&[u8], &[u8])> = vec![
            (b"username", &self.user),
            (b"realm", &self.realm),
            (b"nonce", &self.nonce),
            (b"uri", URI),
            (b"response", &self.response),
            (b"algorithm", b"MD5"),
        ];
        if let Some((nc, cnonce)) = &self.qop {
            params.extend([
                (&b"qop"[..], &b"auth"[..]),
                (b"nc", nc),
                (b"cnonce", cnonce),
            ]);
        }
        DigestResponse::from_params(params).expect("complete")
    }
}

#[test]
fn challenge_then_answer_is_authorized() {
    let server = Server::new();
    let auth = server.auth();
    let mut out = Vec::new();
    let first = auth.challenge(&mut out, "WWW-Authenticate", NOW, false);
    let text = String::from_utf8(out).expect("ascii");
    assert!(text.contains(&format!(
        "nonce=\"{}\"",
        String::from_utf8_lossy(first.as_bytes())
    )));
    assert!(text.contains(&format!(
        "opaque=\"{}\"",
        String::from_utf8_lossy(&server.secret.opaque())
    )));
    // Shared-password device, file user, both with and without qop.
    for (user, pw) in [
        (&b"130909113319427420"[..], &b"12345"[..]),
        (b"alice", b"wonderland"),
    ] {
        // Each client gets its own challenge: nonce-counts are per nonce.
        let nonce = auth.challenge(&mut Vec::new(), "WWW-Authenticate", NOW, false);
        let a = Answer::new(user, pw, nonce.as_bytes(), None);
        assert_eq!(
            auth.authenticate(&a.parsed(), b"REGISTER", NOW + 1),
            Verdict::Authorized
        );
        let a = Answer::new(user, pw, nonce.as_bytes(), Some((1, b"c0ffee")));
        assert_eq!(
            auth.authenticate(&a.parsed(), b"REGISTER", NOW + 1),
            Verdict::Authorized
        );
        // A file user's HA1 is the stored one, not the shared password's.
        if user == b"alice" {
            let a = Answer::new(user, b"12345", nonce.as_bytes(), None);
            assert_eq!(
                auth.authenticate(&a.parsed(), b"REGISTER", NOW + 1),
                Verdict::Rejected(AuthError::Mismatch)
            );
        }
    }
}

#[test]
fn unknown_user_and_wrong_password_get_the_same_verdict() {
    let server = Server::new();
    let file_only = CredentialStore::from_htdigest(
        format!(
            "alice:hik:{}\n",
            String::from_utf8(bytes::hex16(&ha1(b"alice", b"hik", b"wonderland")).to_vec())
                .expect("ascii")
        )
        .as_bytes(),
        "users".as_ref(),
        b"hik",
    )
    .expect("loads");
    let auth = Authenticator {
        store: &file_only,
        ..server.auth()
    };
    let nonce = server.secret.issue(NOW);
    let wrong_pw = Answer::new(b"alice", b"guess", nonce.as_bytes(), None);
    let unknown = Answer::new(b"mallory", b"guess", nonce.as_bytes(), None);
    let v1 = auth.authenticate(&wrong_pw.parsed(), b"REGISTER", NOW);
    let v2 = auth.authenticate(&unknown.parsed(), b"REGISTER", NOW);
    assert_eq!(v1, Verdict::Rejected(AuthError::Mismatch));
    assert_eq!(v1, v2);
}

#[test]
fn expired_nonce_with_right_digest_is_stale_and_wrong_digest_is_not() {
    let server = Server::new();
    let auth = server.auth();
    let nonce = server.secret.issue(NOW);
    let later = NOW + TTL + 1;
    let good = Answer::new(b"alice", b"wonderland", nonce.as_bytes(), None);
    assert_eq!(
        auth.authenticate(&good.parsed(), b"REGISTER", later),
        Verdict::Stale
    );
    let bad = Answer::new(b"alice", b"guess", nonce.as_bytes(), None);
    assert_eq!(
        auth.authenticate(&bad.parsed(), b"REGISTER", later),
        Verdict::Rejected(AuthError::Mismatch)
    );
}

#[test]
fn foreign_nonce_and_realm_are_rejected() {
    let server = Server::new();
    let auth = server.auth();
    // The Hikvision capture: right password, but its nonce came from another
    // server. RFC 2617 §3.2.1: a valid digest for an invalid nonce is stale
    // (the device only needs a new nonce, as after a restart of ours).
    let msg = fixture(HIK[0]);
    assert_eq!(
        auth.authenticate(&parse(&msg), b"REGISTER", NOW),
        Verdict::Stale
    );
    // The same nonce with a wrong password is a failure, named after the nonce.
    let guess = Answer::new(b"admin", b"12346", parse(&msg).nonce, None);
    assert_eq!(
        auth.authenticate(&guess.parsed(), b"REGISTER", NOW),
        Verdict::Rejected(AuthError::InvalidNonce)
    );
    let nonce = server.secret.issue(NOW);
    let mut a = Answer::new(b"alice", b"wonderland", nonce.as_bytes(), None);
    a.realm = b"xivo".to_vec();
    assert_eq!(
        auth.authenticate(&a.parsed(), b"REGISTER", NOW),
        Verdict::Rejected(AuthError::RealmMismatch)
    );
}

#[test]
fn qop_replays_are_rejected() {
    let server = Server::new();
    let auth = server.auth();
    let nonce = server.secret.issue(NOW);
    let first = Answer::new(b"alice", b"wonderland", nonce.as_bytes(), Some((1, b"abc")));
    assert_eq!(
        auth.authenticate(&first.parsed(), b"REGISTER", NOW),
        Verdict::Authorized
    );
    assert_eq!(
        auth.authenticate(&first.parsed(), b"REGISTER", NOW),
        Verdict::Rejected(AuthError::Replay)
    );
    let second = Answer::new(b"alice", b"wonderland", nonce.as_bytes(), Some((2, b"abd")));
    assert_eq!(
        auth.authenticate(&second.parsed(), b"REGISTER", NOW + 5),
        Verdict::Authorized
    );
    // A wrong digest never touches the counts.
    let forged = Answer::new(b"alice", b"guess", nonce.as_bytes(), Some((9, b"x")));
    assert_eq!(
        auth.authenticate(&forged.parsed(), b"REGISTER", NOW),
        Verdict::Rejected(AuthError::Mismatch)
    );
    let third = Answer::new(b"alice", b"wonderland", nonce.as_bytes(), Some((3, b"abe")));
    assert_eq!(
        auth.authenticate(&third.parsed(), b"REGISTER", NOW),
        Verdict::Authorized
    );
}

// ---- SHA-256 (RFC 7616, RFC 8760) and one-time nonces ----

/// RFC 7616 §3.9.1: the Authorization for `algorithm` with its `response`.
fn rfc7616_example(algorithm: &'static [u8], response: &'static [u8]) -> DigestResponse<'static> {
    let params: [(&[u8], &[u8]); 10] = [
        (b"username", b"Mufasa"),
        (b"realm", b"http-auth@example.org"),
        (b"uri", b"/dir/index.html"),
        (b"algorithm", algorithm),
        (b"nonce", b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"),
        (b"nc", b"00000001"),
        (b"cnonce", b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"),
        (b"qop", b"auth"),
        (b"response", response),
        (b"opaque", b"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"),
    ];
    DigestResponse::from_params(params).expect("complete")
}

const RFC7616_MD5: &[u8] = b"8ca523f5e9506fed4657c9700eebdbec";
const RFC7616_SHA256: &[u8] = b"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";

fn mufasa(algorithm: Algorithm) -> Ha1Key {
    Ha1Key::derive(
        algorithm,
        b"Mufasa",
        b"http-auth@example.org",
        b"Circle of Life",
    )
}

#[test]
fn rfc_7616_sha256_and_md5_examples_verify() {
    let sha = rfc7616_example(b"SHA-256", RFC7616_SHA256);
    assert_eq!(sha.algorithm(), Ok(Algorithm::Sha256));
    assert_eq!(verify_key(&sha, b"GET", &mufasa(Algorithm::Sha256)), Ok(()));
    let md5 = rfc7616_example(b"MD5", RFC7616_MD5);
    assert_eq!(verify_key(&md5, b"GET", &mufasa(Algorithm::Md5)), Ok(()));
    // The client side reproduces both responses.
    for (alg, want) in [
        (Algorithm::Sha256, RFC7616_SHA256),
        (Algorithm::Md5, RFC7616_MD5),
    ] {
        let got = client_response_key(
            &mufasa(alg),
            b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            b"GET",
            b"/dir/index.html",
            Some((
                1,
                b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".as_slice(),
            )),
        );
        assert_eq!(got.as_bytes(), want, "{alg}");
    }
    // Wrong password, wrong method, uppercase hex.
    let wrong = Ha1Key::derive(
        Algorithm::Sha256,
        b"Mufasa",
        b"http-auth@example.org",
        b"Circle Of Life",
    );
    assert_eq!(verify_key(&sha, b"GET", &wrong), Err(AuthError::Mismatch));
    assert_eq!(
        verify_key(&sha, b"POST", &mufasa(Algorithm::Sha256)),
        Err(AuthError::Mismatch)
    );
    let upper = RFC7616_SHA256.to_ascii_uppercase();
    let sha_upper = DigestResponse {
        response: &upper,
        ..sha
    };
    assert_eq!(
        verify_key(&sha_upper, b"GET", &mufasa(Algorithm::Sha256)),
        Ok(())
    );
}

#[test]
fn algorithm_and_key_must_agree() {
    let sha = rfc7616_example(b"SHA-256", RFC7616_SHA256);
    let md5 = rfc7616_example(b"MD5", RFC7616_MD5);
    // A SHA-256 answer is not checked against an MD5 HA1, nor the reverse.
    assert_eq!(
        verify_key(&sha, b"GET", &mufasa(Algorithm::Md5)),
        Err(AuthError::UnsupportedAlgorithm)
    );
    assert_eq!(
        verify_key(&md5, b"GET", &mufasa(Algorithm::Sha256)),
        Err(AuthError::UnsupportedAlgorithm)
    );
    // A 32-digit response where SHA-256 wants 64 is malformed.
    let short = DigestResponse {
        response: RFC7616_MD5,
        ..sha
    };
    assert_eq!(
        verify_key(&short, b"GET", &mufasa(Algorithm::Sha256)),
        Err(AuthError::BadResponse)
    );
    // Absent algorithm means MD5; the -sess variants are not offered.
    let none = DigestResponse {
        algorithm: None,
        ..md5
    };
    assert_eq!(none.algorithm(), Ok(Algorithm::Md5));
    assert_eq!(verify_key(&none, b"GET", &mufasa(Algorithm::Md5)), Ok(()));
    for token in [&b"sha-256"[..], b"Sha-256", b"md5", b"MD5"] {
        assert!(Algorithm::from_token(token).is_some(), "{token:?}");
    }
    for token in [
        &b"SHA-256-sess"[..],
        b"MD5-sess",
        b"SHA-512-256",
        b"SHA256",
        b"",
    ] {
        assert_eq!(Algorithm::from_token(token), None, "{token:?}");
        let r = DigestResponse {
            algorithm: Some(token),
            ..md5
        };
        assert_eq!(
            verify_key(&r, b"GET", &mufasa(Algorithm::Md5)),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }
    // Unknown users cost a SHA-256 verification too, and fail the same way.
    assert_eq!(
        verify_user_key(&sha, b"GET", Algorithm::Sha256, None),
        Err(AuthError::Mismatch)
    );
    let dummy = dummy_key(Algorithm::Sha256);
    assert_eq!(dummy.algorithm(), Algorithm::Sha256);
    assert_eq!(dummy_key(Algorithm::Md5), Ha1Key::Md5(dummy_ha1()));
}

/// An answer with either algorithm, for the Authenticator tests.
struct KeyedAnswer {
    user: Vec<u8>,
    nonce: Vec<u8>,
    algorithm: Algorithm,
    response: ResponseHex,
    qop: Option<([u8; 8], Vec<u8>)>,
}

impl KeyedAnswer {
    fn new(
        algorithm: Algorithm,
        user: &[u8],
        password: &[u8],
        nonce: &[u8],
        qop: Option<(u32, &[u8])>,
    ) -> Self {
        let key = Ha1Key::derive(algorithm, user, b"hik", password);
        KeyedAnswer {
            user: user.to_vec(),
            nonce: nonce.to_vec(),
            algorithm,
            response: client_response_key(&key, nonce, b"REGISTER", URI, qop),
            qop: qop.map(|(nc, cnonce)| (format_nc(nc), cnonce.to_vec())),
        }
    }

    fn parsed(&self) -> DigestResponse<'_> {
        let mut params: Vec<(&[u8], &[u8])> = vec![
            (b"username", &self.user),
            (b"realm", b"hik"),
            (b"nonce", &self.nonce),
            (b"uri", URI),
            (b"response", self.response.as_bytes()),
            (b"algorithm", self.algorithm.as_str().as_bytes()),
        ];
        if let Some((nc, cnonce)) = &self.qop {
            params.extend([
                (&b"qop"[..], &b"auth"[..]),
                (b"nc", nc),
                (b"cnonce", cnonce),
            ]);
        }
        DigestResponse::from_params(params).expect("complete")
    }
}

/// The challenge headers an Authenticator writes, split into lines.
fn challenge_lines(auth: &Authenticator<'_>) -> (Nonce, Vec<String>) {
    let mut out = Vec::new();
    let nonce = auth.challenge(&mut out, "WWW-Authenticate", NOW, false);
    let text = String::from_utf8(out).expect("ascii");
    (nonce, text.lines().map(str::to_string).collect())
}

#[test]
fn challenges_offer_each_algorithm_in_order_with_one_nonce() {
    let server = Server::new();
    let auth = server.auth();
    let (nonce, lines) = challenge_lines(&auth);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("algorithm=SHA-256"), "{}", lines[0]);
    assert!(lines[1].contains("algorithm=MD5"), "{}", lines[1]);
    let n = format!("nonce=\"{}\"", String::from_utf8_lossy(nonce.as_bytes()));
    assert!(lines
        .iter()
        .all(|l| l.contains(&n) && l.contains("realm=\"hik\"")));

    let md5_only = server.store_with(&[Algorithm::Md5]);
    let auth = Authenticator {
        store: &md5_only,
        ..server.auth()
    };
    let (_, lines) = challenge_lines(&auth);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("algorithm=MD5"));

    let reversed = server.store_with(&[Algorithm::Md5, Algorithm::Sha256]);
    let auth = Authenticator {
        store: &reversed,
        ..server.auth()
    };
    let (_, lines) = challenge_lines(&auth);
    assert!(lines[0].contains("algorithm=MD5") && lines[1].contains("algorithm=SHA-256"));
}

impl Server {
    /// The same users and password, offering these algorithms.
    fn store_with(&self, algorithms: &[Algorithm]) -> CredentialStore {
        let line = format!(
            "alice:hik:{}\n",
            String::from_utf8(bytes::hex16(&ha1(b"alice", b"hik", b"wonderland")).to_vec())
                .expect("ascii")
        );
        CredentialStore::from_htdigest(line.as_bytes(), "users".as_ref(), b"hik")
            .expect("loads")
            .with_password(b"12345")
            .with_algorithms(algorithms)
    }
}

#[test]
fn either_algorithm_answers_the_shared_nonce() {
    let server = Server::new();
    let auth = server.auth();
    for alg in Algorithm::ALL {
        for qop in [None, Some((1, &b"c0ffee"[..]))] {
            let nonce = server.secret.issue(NOW);
            let a = KeyedAnswer::new(
                alg,
                b"34020000001320000001",
                b"12345",
                nonce.as_bytes(),
                qop,
            );
            assert_eq!(
                auth.authenticate(&a.parsed(), b"REGISTER", NOW),
                Verdict::Authorized,
                "{alg} {qop:?}"
            );
            let wrong =
                KeyedAnswer::new(alg, b"34020000001320000001", b"1234", nonce.as_bytes(), qop);
            assert_eq!(
                auth.authenticate(&wrong.parsed(), b"REGISTER", NOW),
                Verdict::Rejected(AuthError::Mismatch),
                "{alg} {qop:?}"
            );
        }
    }
}

#[test]
fn an_algorithm_not_offered_is_refused_like_a_wrong_password() {
    let server = Server::new();
    for (offered, answered) in [
        (Algorithm::Sha256, Algorithm::Md5),
        (Algorithm::Md5, Algorithm::Sha256),
    ] {
        let store = server.store_with(&[offered]);
        let auth = Authenticator {
            store: &store,
            ..server.auth()
        };
        let nonce = server.secret.issue(NOW);
        let right = KeyedAnswer::new(answered, b"dev", b"12345", nonce.as_bytes(), None);
        let v = auth.authenticate(&right.parsed(), b"REGISTER", NOW);
        assert_eq!(v, Verdict::Rejected(AuthError::UnsupportedAlgorithm));
        assert!(AuthError::UnsupportedAlgorithm.is_failed_guess());
        let ok = KeyedAnswer::new(offered, b"dev", b"12345", nonce.as_bytes(), None);
        assert_eq!(
            auth.authenticate(&ok.parsed(), b"REGISTER", NOW),
            Verdict::Authorized
        );
    }
}

#[test]
fn a_file_user_without_a_sha256_ha1_answers_md5() {
    // alice's line holds only an MD5 HA1 (Apache htdigest), sha-user's only
    // a SHA-256 one.
    let server = Server::new();
    let mut sha_hex = [0u8; 64];
    bytes::hex_encode_into(&ha1_sha256(b"sha-user", b"hik", b"pw"), &mut sha_hex);
    let text = format!(
        "alice:hik:{}\nsha-user:hik::{}\n",
        String::from_utf8_lossy(&bytes::hex16(&ha1(b"alice", b"hik", b"wonderland"))),
        String::from_utf8_lossy(&sha_hex),
    );
    let store = CredentialStore::from_htdigest(text.as_bytes(), "users".as_ref(), b"hik")
        .expect("loads")
        .with_password(b"12345");
    let auth = Authenticator {
        store: &store,
        ..server.auth()
    };
    let nonce = server.secret.issue(NOW);
    let case = |alg, user: &[u8], pw: &[u8]| {
        let a = KeyedAnswer::new(alg, user, pw, nonce.as_bytes(), None);
        auth.authenticate(&a.parsed(), b"REGISTER", NOW)
    };
    assert_eq!(
        case(Algorithm::Md5, b"alice", b"wonderland"),
        Verdict::Authorized
    );
    // The server cannot check a SHA-256 answer for alice: the same refusal
    // as a wrong password, and no fallback to the shared password.
    assert_eq!(
        case(Algorithm::Sha256, b"alice", b"wonderland"),
        Verdict::Rejected(AuthError::Mismatch)
    );
    assert_eq!(
        case(Algorithm::Sha256, b"alice", b"12345"),
        Verdict::Rejected(AuthError::Mismatch)
    );
    assert_eq!(
        case(Algorithm::Sha256, b"sha-user", b"pw"),
        Verdict::Authorized
    );
    assert_eq!(
        case(Algorithm::Md5, b"sha-user", b"pw"),
        Verdict::Rejected(AuthError::Mismatch)
    );
}

#[test]
fn a_nonce_from_before_a_restart_is_stale_only_with_the_right_digest() {
    let server = Server::new();
    let auth = server.auth();
    let before_restart = NonceSecret::from_bytes([1; 16]).issue(NOW);
    for alg in Algorithm::ALL {
        let right = KeyedAnswer::new(
            alg,
            b"dev",
            b"12345",
            before_restart.as_bytes(),
            Some((7, b"x")),
        );
        assert_eq!(
            auth.authenticate(&right.parsed(), b"REGISTER", NOW),
            Verdict::Stale,
            "{alg}"
        );
        let wrong = KeyedAnswer::new(
            alg,
            b"dev",
            b"guess",
            before_restart.as_bytes(),
            Some((7, b"x")),
        );
        let v = auth.authenticate(&wrong.parsed(), b"REGISTER", NOW);
        assert_eq!(v, Verdict::Rejected(AuthError::InvalidNonce), "{alg}");
        assert!(AuthError::InvalidNonce.is_failed_guess());
    }
    assert!(server.counts.is_empty(), "stale answers are not tracked");
}

#[test]
fn one_time_nonces_answer_one_request_then_go_stale() {
    let server = Server::new();
    let one_time = NonceCounts::new(TTL).with_one_time(true);
    let auth = Authenticator {
        counts: &one_time,
        ..server.auth()
    };
    for alg in Algorithm::ALL {
        // Without qop (RFC 2069 devices, the reason for the option).
        let nonce = server.secret.issue(NOW);
        let a = KeyedAnswer::new(alg, b"dev", b"12345", nonce.as_bytes(), None);
        assert_eq!(
            auth.authenticate(&a.parsed(), b"REGISTER", NOW),
            Verdict::Authorized
        );
        assert_eq!(
            auth.authenticate(&a.parsed(), b"REGISTER", NOW + 1),
            Verdict::Stale
        );
        // A wrong digest with the used nonce is a failure, not stale.
        let wrong = KeyedAnswer::new(alg, b"dev", b"guess", nonce.as_bytes(), None);
        assert_eq!(
            auth.authenticate(&wrong.parsed(), b"REGISTER", NOW + 1),
            Verdict::Rejected(AuthError::Mismatch)
        );
        // With qop: a higher nc does not make a used nonce usable.
        let nonce = server.secret.issue(NOW);
        for (nc, want) in [
            (1, Verdict::Authorized),
            (2, Verdict::Stale),
            (1, Verdict::Stale),
        ] {
            let a = KeyedAnswer::new(alg, b"dev", b"12345", nonce.as_bytes(), Some((nc, b"c")));
            assert_eq!(
                auth.authenticate(&a.parsed(), b"REGISTER", NOW),
                want,
                "{alg} nc={nc}"
            );
        }
    }
    // Without the option, RFC 2069 answers may reuse a nonce until its ttl.
    let auth = server.auth();
    let nonce = server.secret.issue(NOW);
    let a = KeyedAnswer::new(Algorithm::Sha256, b"dev", b"12345", nonce.as_bytes(), None);
    for t in 0..3 {
        assert_eq!(
            auth.authenticate(&a.parsed(), b"REGISTER", NOW + t),
            Verdict::Authorized
        );
    }
}

#[test]
fn failed_guesses_are_the_wrong_answers_only() {
    for e in [
        AuthError::Mismatch,
        AuthError::InvalidNonce,
        AuthError::BadResponse,
        AuthError::UnsupportedAlgorithm,
        AuthError::UnsupportedQop,
        AuthError::BadNc,
        AuthError::RealmMismatch,
    ] {
        assert!(e.is_failed_guess(), "{e}");
    }
    for e in [
        AuthError::Replay,
        AuthError::MissingUsername,
        AuthError::MissingResponse,
        AuthError::DuplicateParam,
    ] {
        assert!(!e.is_failed_guess(), "{e}");
    }
}

/// A mass re-registration can fill the nonce-count table: a right digest on a
/// new nonce is then answered stale (retry, nothing counted against the
/// device), never rejected like a replay or a wrong password.
#[test]
fn a_full_nonce_table_answers_stale() {
    let server = Server::new();
    let tiny = NonceCounts::with_limit(TTL, SHARDS);
    let auth = Authenticator {
        counts: &tiny,
        ..server.auth()
    };
    let mut stale = 0;
    for _ in 0..10 * SHARDS {
        let nonce = server.secret.issue(NOW);
        let a = KeyedAnswer::new(
            Algorithm::Md5,
            b"dev",
            b"12345",
            nonce.as_bytes(),
            Some((1, b"c")),
        );
        match auth.authenticate(&a.parsed(), b"REGISTER", NOW) {
            Verdict::Authorized => {}
            Verdict::Stale => stale += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(stale > 0, "the table never filled up");
    assert_eq!(tiny.len(), tiny.capacity());
}
