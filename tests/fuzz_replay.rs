//! The fuzz targets' bodies (`sipreg::fuzzing`) on stable: every device capture,
//! every RFC 4475 message and every saved fuzz finding (`fuzz/regressions/`),
//! plus a bounded property-based run of each target over mutated captures —
//! the "bounded fuzz run in the test suite".

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn mutated_captures_never_panic_any_target(input in mutated(), sel in any::<u8>()) {
        scan(&input);
        let mut framed = vec![sel];
        framed.extend_from_slice(&input);
        frame_stream(&framed);
        let mut harness = RequestHarness::new();
        harness.run(&framed);
    }
}
