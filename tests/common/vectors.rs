//! Loading the shared test vectors: real device captures and RFC 4475 messages.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` next to the repository (the layout CI and developers share).
pub fn shared_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidate = here.join("../shared");
    assert!(
        candidate.is_dir(),
        "test vectors not found at {}: the repository expects ../shared beside it",
        candidate.display()
    );
    candidate
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = shared_dir().join("fixtures").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every capture under fixtures/, as (relative path, bytes), sorted.
pub fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let root = shared_dir().join("fixtures");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("fixtures dir") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("fixture dir") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|e| e == "sip") {
                let rel = f.strip_prefix(&root).expect("prefix").display().to_string();
                out.push((rel, std::fs::read(&f).expect("read")));
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 20,
        "expected the shared captures, found {}",
        out.len()
    );
    out
}

/// RFC 4475 messages as (name, class, bytes) from INDEX.tsv.
pub fn rfc4475() -> Vec<(String, String, Vec<u8>)> {
    let root = shared_dir().join("rfc4475");
    let index = std::fs::read_to_string(root.join("INDEX.tsv")).expect("INDEX.tsv");
    let mut out = Vec::new();
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 {
            continue;
        }
        let bytes = std::fs::read(root.join(format!("{}.dat", cols[0]))).expect("dat");
        out.push((cols[0].to_string(), cols[2].to_string(), bytes));
    }
    assert_eq!(out.len(), 49, "RFC 4475 has 49 messages");
    out
}
