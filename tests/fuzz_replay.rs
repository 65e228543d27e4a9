//! The fuzz targets' bodies (`sipreg::fuzzing`) on stable: every device capture,
//! every RFC 4475 message and every saved fuzz finding (`fuzz/regressions/`),
//! plus a bounded property-based run of each target — the "bounded fuzz run in
//! the test suite" — over captures with random byte edits and over captures
//! whose numbers are replaced by values at and past every limit (what a
//! coverage-guided fuzzer needs a dictionary and minutes to reach). The
//! targets check their own oracles: answers frame and scan, framing agrees
//! with the scanner, memory per device stays bounded. For the coverage-guided
//! run see `tools/fuzz-smoke.sh`.

mod common;

use common::vectors::{all_fixtures, rfc4475};
use proptest::prelude::*;
use sipreg::fuzzing::{frame_stream, scan, RequestHarness};

fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = all_fixtures().into_iter().map(|(_, b)| b).collect();
    c.extend(rfc4475().into_iter().map(|(_, _, b)| b));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_file() {
                c.push(std::fs::read(e.path()).expect("regression file"));
            }
        }
    }
    c
}

#[test]
fn corpus_replays_through_every_target() {
    let mut harness = RequestHarness::new();
    for input in corpus() {
        scan(&input);
        for chunk in [1u8, 7, 200] {
            let mut framed = vec![chunk];
            framed.extend_from_slice(&input);
            frame_stream(&framed);
        }
        // UDP and TCP, with digest and with --no-auth, two source ports.
        for sel in [0u8, 1, 0x22, 0x33] {
            let mut req = vec![sel];
            req.extend_from_slice(&input);
            harness.run(&req);
        }
    }
    assert!(harness.runs() > 250);
    harness.check_bounds();
}

/// A capture with random edits: truncation, byte flips, insertions.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus();
    (
        0..corpus.len(),
        any::<prop::sample::Index>(),
        proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
            0..6,
        ),
    )
        .prop_map(move |(which, cut, edits)| {
            let mut b = corpus[which].clone();
            for (at, byte, insert) in edits {
                let i = at.index(b.len() + 1);
                if insert || i == b.len() {
                    b.insert(i, byte);
                } else {
                    b[i] = byte;
                }
            }
            let keep = cut.index(b.len() + 1).max(b.len() / 2);
            b.truncate(keep);
            b
        })
}

/// Runs `input` through the scanner, and behind the selector byte `sel`
/// through the framer and once through a fresh request path; returns that
/// harness and the selected input for further runs.
fn every_target(input: &[u8], sel: u8) -> (RequestHarness, Vec<u8>) {
    scan(input);
    let mut framed = vec![sel];
    framed.extend_from_slice(input);
    frame_stream(&framed);
    let mut harness = RequestHarness::new();
    harness.run(&framed);
    (harness, framed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn mutated_captures_never_panic_any_target(input in mutated(), sel in any::<u8>()) {
        every_target(&input, sel);
    }
}

/// Values at and past the limits of the numbers a request carries
/// (Content-Length, Expires, CSeq, nc, q, ports, Max-Forwards, SN, SumNum…).
const BOUNDARY: &[&str] = &[
    "0",
    "00000000000000000000000",
    "1",
    "-1",
    "+1",
    "59",
    "255",
    "256",
    "65535",
    "65536",
    "99999",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1.5",
    "0.0001",
    "1.000",
    ".5",
    "0x10",
    "1e9",
    "ffffffff",
    "",
    " ",
];

/// Header lines that put boundary values (`{}`) where the registrar reads them.
const NUMERIC_HEADERS: &[&str] = &[
    "Expires: {}",
    "Content-Length: {}",
    "CSeq: {} REGISTER",
    "Max-Forwards: {}",
    "Contact: <sip:n@192.0.2.1:{}>;expires={};q={}",
    "Contact: <sip:n@192.0.2.1>;q={};+sip.instance=\"<urn:uuid:1>\";reg-id={}",
    "Via: SIP/2.0/UDP 192.0.2.1:{};rport={};branch=z9hG4bK{}",
];

/// Offsets of the runs of ASCII digits in `b`.
fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// Rewrites the Content-Length value to the real body length, so an edit to
/// the body (a MANSCDP SumNum, say) still reaches the XML parser.
fn fix_content_length(b: &mut Vec<u8>) {
    let Some(head_end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let body_len = b.len() - head_end - 4;
    let head = String::from_utf8_lossy(&b[..head_end]).into_owned();
    let mut at = 0;
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if let Some(colon) = line.find(':') {
            let name = lower[..colon].trim();
            if name == "content-length" || name == "l" {
                let value = (at + colon + 1)..(at + line.len());
                b.splice(value, format!(" {body_len}").into_bytes());
                return;
            }
        }
        at += line.len() + 2;
    }
}

/// A capture with some of its numbers replaced by boundary values, an extra
/// header line full of them, and (optionally) a Content-Length that matches.
fn boundary_numbers() -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus();
    let value = || (0..BOUNDARY.len()).prop_map(|i| BOUNDARY[i]);
    (
        0..corpus.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), value()), 0..5),
        proptest::option::of((0..NUMERIC_HEADERS.len(), value(), value(), value())),
        any::<bool>(),
    )
        .prop_map(move |(which, edits, extra, fix)| {
            let mut b = corpus[which].clone();
            let runs = digit_runs(&b);
            if !runs.is_empty() {
                // Latest offset first, so earlier offsets stay valid.
                let mut picked: Vec<_> = edits
                    .into_iter()
                    .map(|(at, v)| (runs[at.index(runs.len())], v))
                    .collect();
                picked.sort_by_key(|p| std::cmp::Reverse(p.0));
                picked.dedup_by_key(|p| p.0);
                for ((start, end), v) in picked {
                    b.splice(start..end, v.bytes());
                }
            }
            if let Some((h, x, y, z)) = extra {
                let mut line = NUMERIC_HEADERS[h].to_string();
                for v in [x, y, z] {
                    line = line.replacen("{}", v, 1);
                }
                line += "\r\n";
                if let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
                    b.splice(eol + 2..eol + 2, line.into_bytes());
                }
            }
            if fix {
                fix_content_length(&mut b);
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Every target on boundary numbers; the request path twice (a repeat
    /// meets the state the first run left: refresh, retransmission, replay),
    /// then the per-device memory bounds.
    #[test]
    fn boundary_numbers_through_every_target(input in boundary_numbers(), sel in any::<u8>()) {
        let (mut harness, framed) = every_target(&input, sel);
        harness.run(&framed);
        harness.check_bounds();
    }
}

#[test]
fn boundary_mutations_reach_the_numbers() {
    // The generator's helpers do what they say, or the property above would
    // test less than it claims.
    assert_eq!(digit_runs(b"CSeq: 12 R 3"), vec![(6, 8), (11, 12)]);
    let mut m = b"MESSAGE s SIP/2.0\r\nl: 99\r\nX: 1\r\n\r\n<a/>".to_vec();
    fix_content_length(&mut m);
    assert!(
        m.windows(7).any(|w| w == b"l: 4\r\nX"),
        "{}",
        String::from_utf8_lossy(&m)
    );
}
