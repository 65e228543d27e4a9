//! A fixed number of scans of one capture, for instruction counting under
//! callgrind (`perf/scan_ir.sh`), which is stable on a shared, noisy machine
//! where wall-clock benches are not. Run with no arguments (as `cargo bench`
//! does) it does a short pass over every case.
//!
//! Usage: scan_ir CASE CAPTURE ITERATIONS
//!   CASE: sipreg-scan | sipreg-views | httparse | rsip

use std::hint::black_box;

use sipreg::sip::{scan, AuthHeader, HeaderId, NameAddr, Via};

fn load(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The views a registrar reads from a REGISTER (as in benches/scan.rs).
fn views(bytes: &[u8]) -> usize {
    let msg = scan(bytes).expect("scans");
    let via = Via::parse(msg.top_via().expect("via")).expect("via");
    let to = NameAddr::parse(msg.value(HeaderId::To).expect("to")).expect("to");
    let from = NameAddr::parse(msg.value(HeaderId::From).expect("from")).expect("from");
    let mut sum = via.branch().map_or(0, <[u8]>::len)
        + to.parse_uri().expect("uri").host.len()
        + from.tag().map_or(0, <[u8]>::len);
    for c in msg.list(HeaderId::Contact) {
        sum += NameAddr::parse(c).expect("contact").uri.len();
    }
    if let Some(a) = msg.value(HeaderId::Authorization) {
        let a = AuthHeader::parse(a).expect("auth");
        sum +=
            a.param(b"response").map_or(0, <[u8]>::len) + a.param(b"nonce").map_or(0, <[u8]>::len);
    }
    sum
}

fn run(case: &str, bytes: &[u8], n: u64) -> usize {
    let block = &bytes[bytes.iter().position(|&c| c == b'\n').map_or(0, |p| p + 1)..];
    let mut acc = 0usize;
    for _ in 0..n {
        let b = black_box(bytes);
        acc += match case {
            "sipreg-scan" => scan(b).expect("scans").header_count(),
            "sipreg-views" => views(b),
            "httparse" => {
                let mut h = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(black_box(block), &mut h) {
                    Ok(httparse::Status::Complete((_, hs))) => hs.len(),
                    other => panic!("httparse: {other:?}"),
                }
            }
            "rsip" => {
                let m = rsip::SipMessage::try_from(b).expect("rsip parses");
                usize::from(m.is_request())
            }
            other => panic!("unknown case {other}"),
        };
    }
    acc
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [case, capture, n] = &args[..] {
        let n: u64 = n.parse().expect("ITERATIONS is a number");
        black_box(run(case, &load(capture), n));
        return;
    }
    for case in ["sipreg-scan", "sipreg-views", "httparse", "rsip"] {
        let bytes = load("hikvision-gb28181/03-register-auth.sip");
        assert!(run(case, &bytes, 10) > 0, "{case}");
    }
}
