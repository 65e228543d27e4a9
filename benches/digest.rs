//! Digest authentication hot path: verifying a real device's response, and
//! issuing + checking a stateless nonce.
//!
//! Uses the Hikvision capture from ../shared/fixtures; every iteration asserts
//! its result so the optimiser cannot drop the work and a regression that
//! breaks verification fails the bench instead of speeding it up.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipreg::auth::{
    client_response, ha1, verify, verify_user, Authenticator, CredentialStore, DigestResponse,
    NonceCounts, NonceSecret, NonceStatus, Verdict,
};

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "shared", "fixtures", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Minimal Authorization splitter (the captures have no commas or escapes in
/// values); the real scanner lives in `sip`.
fn auth_params(msg: &[u8]) -> Vec<(&[u8], &[u8])> {
    let line = msg
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"Authorization:"))
        .expect("Authorization header");
    line[14..]
        .trim_ascii()
        .strip_prefix(b"Digest")
        .expect("Digest scheme")
        .split(|&b| b == b',')
        .map(|p| {
            let p = p.trim_ascii();
            let eq = p.iter().position(|&b| b == b'=').expect("name=value");
            let v = p[eq + 1..].trim_ascii();
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            (&p[..eq], v)
        })
        .collect()
}

fn bench_verify(c: &mut Criterion) {
    let msg = fixture("hikvision-gb28181/03-register-auth.sip");
    let params = auth_params(&msg);
    let store = CredentialStore::new(b"hik").with_password(b"12345");
    let stored = ha1(b"admin", b"hik", b"12345");

    let mut g = c.benchmark_group("digest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_hikvision", |b| {
        b.iter(|| {
            let resp =
                DigestResponse::from_params(black_box(&params).iter().copied()).expect("complete");
            assert!(verify(&resp, black_box(b"REGISTER"), black_box(&stored)));
        })
    });
    // What a worker does for a shared-password device: HA1 from the store
    // (one MD5) plus the verification.
    g.bench_function("lookup_and_verify_hikvision", |b| {
        b.iter(|| {
            let resp =
                DigestResponse::from_params(black_box(&params).iter().copied()).expect("complete");
            let h = store.lookup(resp.username);
            assert_eq!(verify_user(&resp, b"REGISTER", h.as_ref()), Ok(()));
        })
    });
    g.finish();
}

fn bench_nonce(c: &mut Criterion) {
    let secret = NonceSecret::from_bytes([42; 16]);
    let now = 1_700_000_000u64;

    let mut g = c.benchmark_group("nonce");
    g.throughput(Throughput::Elements(1));
    g.bench_function("issue_and_check", |b| {
        b.iter(|| {
            let n = secret.issue(black_box(now));
            assert_eq!(
                secret.check(n.as_bytes(), black_box(now + 1), 300),
                NonceStatus::Fresh
            );
        })
    });
    g.finish();
}

fn bench_authenticate(c: &mut Criterion) {
    // The full server-side decision for a device answering our own challenge
    // (realm, nonce MAC, lookup, digest; no qop, as GB28181 devices send).
    let store = CredentialStore::new(b"hik").with_password(b"12345");
    let secret = NonceSecret::from_bytes([42; 16]);
    let counts = NonceCounts::new(300);
    let auth = Authenticator {
        store: &store,
        secret: &secret,
        counts: &counts,
        ttl_secs: 300,
    };
    let now = 1_700_000_000u64;
    let nonce = secret.issue(now);
    let uri = b"sip:130909115229300920@10.64.49.44:7100";
    let response = client_response(
        &ha1(b"130909113319427420", b"hik", b"12345"),
        nonce.as_bytes(),
        b"REGISTER",
        uri,
        None,
    );
    let params: [(&[u8], &[u8]); 6] = [
        (b"username", b"130909113319427420"),
        (b"realm", b"hik"),
        (b"nonce", nonce.as_bytes()),
        (b"uri", uri),
        (b"response", &response),
        (b"algorithm", b"MD5"),
    ];

    let mut g = c.benchmark_group("digest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("authenticate_gb28181", |b| {
        b.iter(|| {
            let resp = DigestResponse::from_params(black_box(params)).expect("complete");
            assert_eq!(
                auth.authenticate(&resp, b"REGISTER", black_box(now + 1)),
                Verdict::Authorized
            );
        })
    });
    g.finish();
}

criterion_group!(benches, bench_verify, bench_nonce, bench_authenticate);
criterion_main!(benches);
