//! Scanner throughput on the real REGISTER captures: sipreg's scan plus every
//! view a registrar reads, against httparse::parse_headers on the same header
//! bytes (header splitting only) and rsip (a general Rust SIP parser that
//! builds owned values).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sipreg::sip::{scan, AuthHeader, HeaderId, NameAddr, Rport, Via};

const CAPTURES: &[(&str, &str)] = &[
    ("hikvision", "hikvision-gb28181/03-register-auth.sip"),
    ("linphone", "linphone-asterisk/03-register-auth.sip"),
    ("eyebeam", "eyebeam-asterisk/03-register-auth.sip"),
];

fn load(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What the registrar reads from a REGISTER; returns a checksum so nothing is
/// optimised away and the result is asserted inside the loop.
fn scan_register(bytes: &[u8]) -> usize {
    let msg = scan(bytes).expect("capture scans");
    let via = Via::parse(msg.top_via().expect("via")).expect("via parses");
    let to = NameAddr::parse(msg.value(HeaderId::To).expect("to")).expect("to parses");
    let to_uri = to.parse_uri().expect("to uri");
    let from = NameAddr::parse(msg.value(HeaderId::From).expect("from")).expect("from parses");
    let mut sum = via.branch().map_or(0, <[u8]>::len)
        + usize::from(via.rport() == Rport::Requested)
        + to_uri.user.map_or(0, <[u8]>::len)
        + to_uri.host.len()
        + from.tag().map_or(0, <[u8]>::len)
        + msg.call_id().len()
        + msg.cseq().seq as usize;
    for c in msg.list(HeaderId::Contact) {
        let c = NameAddr::parse(c).expect("contact");
        sum += c.uri.len() + c.expires().map_or(0, |e| e.unwrap_or(0) as usize);
    }
    if let Some(expires) = msg.value(HeaderId::Expires) {
        sum += sipreg::sip::parse_expires(expires).unwrap_or(0) as usize;
    }
    if let Some(a) = msg.value(HeaderId::Authorization) {
        let a = AuthHeader::parse(a).expect("auth");
        for name in [&b"username"[..], b"realm", b"nonce", b"uri", b"response"] {
            sum += a.param(name).map_or(0, <[u8]>::len);
        }
    }
    sum
}

fn benches(c: &mut Criterion) {
    for &(name, rel) in CAPTURES {
        let bytes = load(rel);
        let header_block = &bytes[bytes.iter().position(|&c| c == b'\n').unwrap() + 1..];
        let expected = scan_register(&bytes);
        let mut g = c.benchmark_group(format!("register/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("sipreg scan+views", |b| {
            b.iter(|| assert_eq!(scan_register(black_box(&bytes)), expected))
        });
        g.bench_function("sipreg scan only", |b| {
            b.iter(|| assert!(scan(black_box(&bytes)).is_ok()))
        });
        g.bench_function("httparse parse_headers", |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let status = httparse::parse_headers(black_box(header_block), &mut headers);
                assert!(matches!(status, Ok(httparse::Status::Complete(_))));
            })
        });
        g.bench_function("rsip SipMessage", |b| {
            b.iter(|| {
                let m = rsip::SipMessage::try_from(black_box(&bytes[..]));
                assert!(m.is_ok());
            })
        });
        g.finish();
    }
}

criterion_group!(scanner, benches);
criterion_main!(scanner);
